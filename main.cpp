// The composition root: the only file that sees both fs/ and replicate/.
// Parses the command line, opens the source, mounts, daemonizes, starts
// replication, serves until unmounted, drains, exits.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/sinks/syslog_sink.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "fs/session.hpp"
#include "options.hpp"
#include "replicate/change_log.hpp"
#include "replicate/control.hpp"
#include "replicate/journal.hpp"
#include "replicate/receiver.hpp"
#include "replicate/replicator.hpp"
#include "replicate/scanner.hpp"
#include "replicate/status_report.hpp"
#include "replicate/transport.hpp"

namespace mirrorfs {
namespace {

constexpr const char* kDescription = R"(mirrorfs - keep a directory mirrored on other machines in real time.

mirrorfs is a FUSE passthrough filesystem mounted over a data directory.
Every change made through the mount is journaled with its byte ranges and
shipped to each target: a local path, or a remote one over SSH.

Mount:   mirrorfs SOURCE MOUNTPOINT [-f] [-o OPTION[,OPTION...]]...
         SOURCE may equal MOUNTPOINT (mount over the data directory in place).
Stop:    umount MOUNTPOINT   (or fusermount3 -u MOUNTPOINT)
Status:  mirrorfs status MOUNTPOINT [--json]
         per target: connected, lag, pending entries, bytes and files sent,
         last error. Exit 0; 2 if MOUNTPOINT is not a mirrorfs mount.
Agent:   mirrorfs agent ROOT (the receiver; started over ssh by the sender)

Options (-o):
  target=URL          where to mirror to; repeatable. /path, file:///path,
                      host:/path, ssh://[user@]host[:port]/path
  delay=DURATION      batching window before shipping (default 2ms)
  delete=yes|no       propagate deletions (default yes)
  initial_sync=quick|checksum|none
                      at mount, compare each target with the source and ship
                      what differs: by size and mtime (quick, the default),
                      by content (checksum), or trust the target (none)
  state_dir=DIR       what each target is known to hold, for restarts and
                      crash recovery (default /var/lib/mirrorfs)
  ssh=COMMAND         ssh command and options (default "ssh")
  agent=PATH          mirrorfs binary on the target (default "mirrorfs")
  drain_timeout=DUR   how long unmount waits for pending changes (default 30s)
  log_level=LEVEL     trace, debug, info, warn, error, off (default info)
  attr_timeout=SEC    kernel attribute cache (default 1)
  entry_timeout=SEC   kernel name cache (default 1)
  writeback=yes|no    kernel writeback cache (default no; see README)
  threads=N           maximum FUSE worker threads (default 16)
  change_log=FILE     append every reported change to FILE (debugging)
  Any other option goes to FUSE (ro, allow_other, ...). As root,
  allow_other and default_permissions are on. fstab-only options
  (_netdev, nofail, noauto, defaults, x-systemd.*, ...) are ignored.
Durations: 250ms, 2s, 1m; a bare number is milliseconds.

Exit status: 0 when mounted (or cleanly stopped in the foreground),
1 on any error, with one line on stderr saying what failed.)";

std::shared_ptr<spdlog::sinks::sink> g_sink;  // shared by every component logger

std::shared_ptr<spdlog::logger> make_logger(const std::string& name, const std::string& level) {
  auto log = std::make_shared<spdlog::logger>(name, g_sink);
  log->set_level(spdlog::level::from_str(level));
  log->set_pattern("%Y-%m-%d %H:%M:%S.%e [%l] %n: %v");
  return log;
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "mirrorfs: %s\n", what.c_str());
  std::exit(1);
}

bool already_mirrorfs_mount(const std::string& mountpoint) {
  char real[PATH_MAX];
  if (::realpath(mountpoint.c_str(), real) == nullptr) return false;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    // fields: id parent maj:min root mountpoint ... - fstype source
    std::istringstream f(line);
    std::string id, parent, dev, root, mp;
    f >> id >> parent >> dev >> root >> mp;
    if (mp == real && line.find(" - fuse.mirrorfs ") != std::string::npos) return true;
  }
  return false;
}

Fd open_source(const std::string& source) {
  Fd fd(::open(source.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) {
    const int e = errno;
    die("source " + mirrorfs::quoted(source) + ": " +
        (e == ENOTDIR ? std::string("not a directory") : std::string(std::strerror(e))));
  }
  return fd;
}

std::string canonical(const std::string& path) {
  char real[PATH_MAX];
  return ::realpath(path.c_str(), real) != nullptr ? std::string(real) : path;
}

// Parses every target= and checks, before anything is mounted, that each one
// answers: an unreachable target is a mount-time error, not a silent gap.
std::vector<replicate::TargetSpec> resolve_targets(const MountOptions& o) {
  std::vector<replicate::TargetSpec> specs;
  for (const std::string& url : o.targets) {
    auto spec = replicate::parse_target(url);
    if (!spec) die("target " + mirrorfs::quoted(url) + ": " + spec.error().what);
    spec->ssh = o.ssh;
    spec->agent = o.agent;
    if (spec->kind == replicate::TargetSpec::Kind::Local &&
        canonical(spec->path) == canonical(o.source))
      die("target " + mirrorfs::quoted(url) + " is the source itself");
    auto probe = replicate::connect(*spec);
    if (!probe) die("target " + mirrorfs::quoted(url) + " is unreachable: " + probe.error().what);
    specs.push_back(std::move(*spec));
  }
  return specs;
}

std::string status_answer(const std::string& request, const replicate::MountSummary& summary,
                          const std::vector<std::unique_ptr<replicate::Replicator>>& reps) {
  std::vector<replicate::ReplicatorStatus> st;
  for (const auto& r : reps) st.push_back(r->status());
  if (request == "status json") return replicate::format_status_json(summary, st);
  if (request == "status") return replicate::format_status_text(summary, st);
  return "error: unknown request\n";
}

void drain_and_stop(const MountOptions& o, std::vector<std::unique_ptr<replicate::Replicator>>& reps,
                    spdlog::logger& log) {
  for (auto& r : reps) {
    if (!r->drain(o.drain_timeout)) {
      const auto st = r->status();
      log.error("target {}: {} journal entries not shipped within drain_timeout={}ms; "
                "they are lost to this target until a full resync",
                st.target, st.pending, o.drain_timeout.count());
    }
    r->stop();
  }
}

int run_mount(MountOptions o) {
  struct stat st {};
  if (::stat(o.mountpoint.c_str(), &st) == -1)
    die("mountpoint " + mirrorfs::quoted(o.mountpoint) + ": " + std::strerror(errno));
  if (!S_ISDIR(st.st_mode)) die("mountpoint " + mirrorfs::quoted(o.mountpoint) + ": not a directory");
  if (already_mirrorfs_mount(o.mountpoint))
    die("mountpoint " + mirrorfs::quoted(o.mountpoint) + " is already a mirrorfs mount");
  Fd root = open_source(o.source);
  o.source = canonical(o.source);
  o.mountpoint = canonical(o.mountpoint);
  add_default_fuse_options(o, ::geteuid() == 0);

  g_sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  auto fs_log = make_logger("fs", o.log_level);
  auto main_log = make_logger("main", o.log_level);
  auto journal_log = make_logger("journal", o.log_level);
  auto repl_log = make_logger("repl", o.log_level);
  auto scan_log = make_logger("scan", o.log_level);
  if (auto r = replicate::prepare_state_dir(o.state_dir); !r)
    die(r.error().what + ": " + std::strerror(r.error().code));
  const std::vector<replicate::TargetSpec> specs = resolve_targets(o);
  // Each target's state says "dirty" before the mount serves anything.
  std::vector<std::shared_ptr<replicate::StateKeeper>> states;
  for (const auto& spec : specs) {
    auto keeper = std::make_shared<replicate::StateKeeper>(
        replicate::state_path(o.state_dir, o.source, spec.url), o.source, spec.url, repl_log);
    if (auto r = keeper->open(); !r)
      die("state_dir " + mirrorfs::quoted(o.state_dir) + ": " + r.error().what + ": " +
          std::strerror(r.error().code));
    states.push_back(std::move(keeper));
  }

  replicate::Journal journal(replicate::JournalLimits{}, journal_log);
  ChangeSink* sink = &journal;
  std::unique_ptr<replicate::Scanner> scanner;  // between the fs layer and the journal
  if (o.scan && !specs.empty()) {  // with no target there is nothing to catch up
    scanner = std::make_unique<replicate::Scanner>(journal, replicate::ScannerOptions{},
                                                   scan_log);
    sink = scanner.get();
  }
  std::unique_ptr<replicate::ChangeLog> change_log;
  if (!o.change_log.empty()) {
    auto cl = replicate::ChangeLog::open(o.change_log, sink);
    if (!cl) die(cl.error().what + ": " + std::strerror(cl.error().code));
    change_log = std::move(*cl);
    sink = change_log.get();
  }

  fs::SessionConfig sc{o.mountpoint, o.fuse_options, o.attr_timeout, o.entry_timeout,
                       o.writeback_cache, o.threads, o.fuse_debug, scanner != nullptr};
  auto session = fs::Session::mount(std::move(root), *sink, sc, fs_log);
  if (!session) die(session.error().what);

  // Queues exist before the mount serves its first request (the loop has not
  // started yet), so no change is recorded before its target's queue.
  std::vector<std::unique_ptr<replicate::Replicator>> reps;
  replicate::ReplicatorOptions ro;
  ro.delay = o.delay;
  ro.delete_missing = o.delete_extra;
  ro.initial_sync = o.initial_sync == InitialSync::Checksum ? replicate::SyncMode::Checksum
                    : o.initial_sync == InitialSync::Quick  ? replicate::SyncMode::Quick
                                                            : replicate::SyncMode::None;
  // The startup reconcile waits for the scanner's watches (a change made
  // behind the mount after the reconcile read its directory is then seen);
  // a scanner that failed or ended holds nothing back.
  auto scanning = std::make_shared<std::atomic<bool>>(scanner != nullptr);
  if (scanner)
    ro.ready_gate = [s = scanner.get(), scanning](std::stop_token stop) {
      if (scanning->load()) (void)s->wait_ready(stop);
      return !stop.stop_requested();
    };
  for (std::size_t i = 0; i < specs.size(); ++i) {
    ro.state = states[i];
    reps.push_back(std::make_unique<replicate::Replicator>(journal, specs[i], (*session)->root(), ro,
                                                           repl_log));
  }
  if (!o.foreground) {
    if (auto r = fs::daemonize(); !r) die(r.error().what);
    g_sink = std::make_shared<spdlog::sinks::syslog_sink_mt>("mirrorfs", LOG_PID, LOG_DAEMON, false);
    for (auto* l : {fs_log.get(), main_log.get(), journal_log.get(), repl_log.get(), scan_log.get()})
      l->sinks() = {g_sink};
  }
  const replicate::MountSummary summary{o.source, o.mountpoint, std::chrono::system_clock::now()};
  auto control = replicate::ControlServer::start(
      replicate::control_socket_path(o.mountpoint),
      [&](const std::string& req) { return status_answer(req, summary, reps); }, main_log);
  if (!control)
    main_log->warn("no control socket ({}: {}); `mirrorfs status` will not answer",
                   control.error().what, std::strerror(control.error().code));
  // After the queues exist (what the scanner reports is queued for every
  // target), before the replicators (their gate waits for it).
  if (scanner)
    if (auto r = scanner->start((*session)->root(), &(*session)->cache()); !r) {
      scanning->store(false);
      main_log->error("no scanner ({}: {}): writes that bypass the mount are not replicated",
                      r.error().what, std::strerror(r.error().code));
    }
  for (auto& r : reps) r->start();
  main_log->info("serving {} at {}, {} target(s)", mirrorfs::quoted(o.source),
                 mirrorfs::quoted(o.mountpoint), reps.size());
  const int rc = (*session)->run();
  if (scanner) scanner->stop();  // before the drain; it invalidates through the session
  // Unmounted: the root fd stays open until the session goes, so the
  // replicators can still read what is pending.
  drain_and_stop(o, reps, *main_log);
  if (control) control->reset();
  session->reset();
  main_log->info("stopped {}", mirrorfs::quoted(o.mountpoint));
  return rc;
}

int run_status(const std::string& mountpoint, bool json) {
  const std::string mnt = canonical(mountpoint);
  auto answer = replicate::control_request(replicate::control_socket_path(mnt),
                                           json ? "status json" : "status");
  if (!answer) {
    if (!already_mirrorfs_mount(mnt)) {
      std::fprintf(stderr, "mirrorfs: %s is not a mirrorfs mount\n", mirrorfs::quoted(mnt).c_str());
      return 2;
    }
    std::fprintf(stderr, "mirrorfs: the daemon of %s does not answer: %s: %s\n",
                 mirrorfs::quoted(mnt).c_str(), answer.error().what.c_str(),
                 std::strerror(answer.error().code));
    return 1;
  }
  std::fputs(answer->c_str(), stdout);
  return 0;
}

}  // namespace
}  // namespace mirrorfs

int main(int argc, char** argv) {
  using namespace mirrorfs;
  ::umask(0);  // the kernel already applied the caller's umask to every mode we get
  CLI::App app(kDescription, "mirrorfs");
  app.require_subcommand(0, 1);
  MountOptions o;
  std::vector<std::string> option_strings;
  app.add_option("source", o.source, "the data directory")->type_name("SOURCE");
  app.add_option("mountpoint", o.mountpoint, "where to mount (may equal SOURCE)")
      ->type_name("MOUNTPOINT");
  app.add_option("-o", option_strings, "mount options, comma-separated (see above)")
      ->type_name("OPTIONS");
  app.add_flag("-f,--foreground", o.foreground, "stay in the foreground, log to stderr");
  app.add_flag("-d,--debug", o.fuse_debug, "trace every FUSE request (implies -f)");

  std::string status_mnt;
  bool status_json = false;
  CLI::App* status = app.add_subcommand("status", "show replication state of a mount");
  status->add_option("mountpoint", status_mnt, "a mirrorfs mountpoint")->required();
  status->add_flag("--json", status_json, "machine-readable output");

  std::string agent_root;
  CLI::App* agent = app.add_subcommand("agent", "receive a mirror into ROOT over stdin/stdout");
  agent->add_option("root", agent_root, "the target directory")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (agent->parsed()) return replicate::run_agent(agent_root, 0, 1);
  if (status->parsed()) return run_status(status_mnt, status_json);
  if (o.source.empty() || o.mountpoint.empty()) {
    std::fprintf(stderr, "mirrorfs: SOURCE and MOUNTPOINT are required (see --help)\n");
    return 1;
  }
  for (const std::string& s : option_strings)
    if (auto r = apply_option_string(s, o); !r) {
      std::fprintf(stderr, "mirrorfs: %s\n", r.error().what.c_str());
      return 1;
    }
  if (o.fuse_debug) o.foreground = true;
  return run_mount(std::move(o));
}
