#!/usr/bin/python3
"""The "seed" peer of the replication benchmark: pyinotify + rsync.

The classic recipe from the blog posts ("automatic sync with pyinotify"):
watch the source tree recursively and, on every IN_CLOSE_WRITE, run one rsync
of the WHOLE tree to the target:

    rsync -az --delete SRC/ DEST/

Events are handled one after the other in pyinotify's loop, so while one rsync
runs the following events queue up and each of them starts another full rsync
later. Only IN_CLOSE_WRITE is watched (as in the recipe): a rename, a delete
or a mkdir alone does not trigger a sync.

    peer_pyinotify_rsync.py [--ssh "ssh -p PORT -i KEY ..."] [--rsync-timeout S]
                            [--verbose] SRC DEST

DEST is anything rsync accepts (user@host:/path or a local path). "ready" is
printed on stdout once the watches are in place. SIGTERM/SIGINT stop the
watcher and kill a running rsync (no orphan is left behind). Every rsync has
a hard deadline (--rsync-timeout, default 600 s): rsync can hang for good.

Needs Debian's python3-pyinotify (run with /usr/bin/python3).
"""
import argparse
import signal
import subprocess
import sys
import time

import pyinotify


class OnCloseWrite(pyinotify.ProcessEvent):
    def my_init(self, cmd=None, timeout=600.0, verbose=False):
        self.cmd = cmd
        self.timeout = timeout
        self.verbose = verbose
        self.runs = 0

    def process_default(self, event):
        pass

    def _sync(self, reason):
        t0 = time.monotonic()
        try:
            rc = subprocess.run(self.cmd, timeout=self.timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        self.runs += 1
        if self.verbose:
            print(f"peer_pyinotify_rsync: run {self.runs} ({reason}) rc={rc} "
                  f"{time.monotonic() - t0:.3f}s", file=sys.stderr, flush=True)

    def process_IN_CLOSE_WRITE(self, event):
        self._sync(event.pathname)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ssh", default="", help="ssh command for rsync -e")
    ap.add_argument("--rsync-timeout", type=float, default=600.0)
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("src")
    ap.add_argument("dest")
    a = ap.parse_args()

    cmd = ["rsync", "-az", "--delete"]
    if a.ssh:
        cmd += ["-e", a.ssh]
    cmd += [a.src.rstrip("/") + "/", a.dest.rstrip("/") + "/"]

    def stop(signum, _frame):
        # SystemExit unwinds through subprocess.run, which kills its child.
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    wm = pyinotify.WatchManager()
    handler = OnCloseWrite(cmd=cmd, timeout=a.rsync_timeout, verbose=a.verbose)
    notifier = pyinotify.Notifier(wm, default_proc_fun=handler)
    # IN_CREATE only so that auto_add can watch new directories; it has no
    # handler (process_default ignores it) and starts no rsync.
    wm.add_watch(a.src, pyinotify.IN_CLOSE_WRITE | pyinotify.IN_CREATE,
                 rec=True, auto_add=True)
    print("ready", flush=True)
    notifier.loop()


if __name__ == "__main__":
    main()
