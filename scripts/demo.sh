#!/usr/bin/env bash
# The README's first command: installs what mirrorfs needs, builds it, mounts
# a demo directory mirrored to a local replica, shows changes arriving, and
# unmounts. Run as root on Debian 12:  bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

bash scripts/setup.sh
bin="$repo/build/mirrorfs"

demo=$(mktemp -d /tmp/mirrorfs-demo.XXXXXX)
data="$demo/data"
replica="$demo/replica"
mkdir -p "$data" "$replica"
cleanup() {
  if grep -q " $data fuse.mirrorfs " /proc/mounts; then fusermount3 -u "$data" || fusermount3 -u -z "$data"; fi
  rm -rf "$demo"
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# Waits (bounded) until the replica equals the data directory.
level() {
  for _ in $(seq 1 100); do
    if diff -r "$data" "$replica" >/dev/null 2>&1; then echo "   replica is level with the source"; return 0; fi
    sleep 0.05
  done
  echo "   replica differs after 5 s:" >&2; diff -r "$data" "$replica" >&2 || true; return 1
}

say "a data directory with some files"
mkdir -p "$data/projects/alpha"
echo "hello" > "$data/projects/alpha/readme.txt"
head -c 2000000 /dev/urandom > "$data/projects/alpha/blob.bin"
find "$data" | sed "s|$demo/||"

say "mount mirrorfs over it, in place, mirrored to $replica"
echo "\$ mirrorfs $data $data -o target=$replica"
"$bin" "$data" "$data" -o "target=$replica"
grep " $data fuse.mirrorfs " /proc/mounts
level

say "write a new file through the mount"
echo "written at $(date +%T.%N)" > "$data/projects/alpha/new.txt"
level
cat "$replica/projects/alpha/new.txt"

say "overwrite 4 KiB in the middle of the 2 MB file (only that range ships)"
head -c 4096 /dev/urandom | dd of="$data/projects/alpha/blob.bin" bs=4096 seek=100 conv=notrunc status=none
level
cmp "$data/projects/alpha/blob.bin" "$replica/projects/alpha/blob.bin" && echo "   blob.bin identical"

say "rename a directory (replayed as a rename, not a re-send)"
mv "$data/projects/alpha" "$data/projects/beta"
level
find "$replica" | sed "s|$demo/||"

say "delete a file"
rm "$data/projects/beta/readme.txt"
level

say "unmount: pending changes drain first"
umount "$data"
echo "   unmounted; the data stays in $data and the replica in $replica"
diff -r "$data" "$replica" && echo "   final check: identical"
