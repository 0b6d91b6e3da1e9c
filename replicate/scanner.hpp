// Scanner: catches changes that bypass the mount (a process that held the
// directory open before the mount, another mount namespace, the backing
// path written directly) with a recursive inotify watch of the backing
// directory, and journals them like any other change.
//
// Lifecycle: main.cpp builds it in front of the Journal (it is the sink the
// FUSE layer reports to: record() notes the change for the self-filter and
// passes it on), start()s it when the mount starts serving and stop()s it
// after the FUSE loop ends, before the drain. start() walks the tree once
// (watches + a ctime baseline, see ScanBook) on the scanner thread;
// wait_ready() returns once every directory is watched (or polled).
//
// What it reports (to `next`, from its own thread "mfs-scan"):
//  * a file whose ctime moved without the mount reporting it: Content (ranges
//    unknown: shipped as a delta); a directory or symlink: Meta;
//  * entries created, removed or renamed behind the mount: Created (with
//    every entry below a directory that appears), Removed, Renamed (an
//    inotify MOVED_FROM/MOVED_TO pair; RENAME_EXCHANGE as one exchange); a
//    rename into or out of the tree: Created / Removed.
// The mount's own changes are recognised by their stamps and paths and are
// not reported again. When it cannot tell, it reports (correctness first)
// and counts it as "unsure".
// Every bypass change also invalidates what the kernel caches for it
// (SourceCache), from the scanner thread, never from a FUSE handler.
// Lost events: IN_Q_OVERFLOW rescans the whole tree against the ctime book
// (a warning in the log); a directory that cannot be watched (ENOSPC: the
// inotify watch limit) is re-listed every poll_interval instead, with a
// warning naming the limit. Never a silent gap.
// Threads: record() and stats() are thread-safe; start/stop/wait_ready are
// called by main's thread. The directory tree is touched only by the
// scanner thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <stop_token>
#include <string>
#include <thread>
#include <unordered_map>

#include "fs/api/change_sink.hpp"
#include "fs/api/fd.hpp"
#include "fs/api/result.hpp"
#include "fs/api/source_cache.hpp"
#include "replicate/scan_book.hpp"

struct stat;

namespace spdlog {
class logger;
}

namespace mirrorfs::replicate {

struct ScannerOptions {
  // Events are handled this long after they are read: the FUSE worker that
  // caused one has reported its change by then (it does so before replying).
  std::chrono::milliseconds event_delay{20};
  std::chrono::milliseconds poll_interval{2000};  // unwatched directories
  ScanBookLimits book{};
};

struct ScannerStats {
  std::uint64_t bypass = 0;        // changes reported as bypassing the mount
  std::uint64_t unsure = 0;        // ... of which possibly the mount's own (shipped anyway)
  std::uint64_t own_filtered = 0;  // events recognised as the mount's own
  std::uint64_t overflows = 0;     // IN_Q_OVERFLOW rescans
  std::uint64_t watched = 0;       // directories with a watch
  std::uint64_t polled = 0;        // directories without one (watch limit)
};

class Scanner final : public ChangeSink {
 public:
  Scanner(ChangeSink& next, ScannerOptions opt, std::shared_ptr<spdlog::logger> log);
  ~Scanner() override;
  Scanner(const Scanner&) = delete;
  Scanner& operator=(const Scanner&) = delete;

  // FUSE worker threads: notes c for the self-filter, passes it on.
  void record(const Change& c) noexcept override;

  // Starts the scanner thread on the backing directory `root` (it must
  // outlive stop()). cache may be null (no kernel cache to invalidate).
  [[nodiscard]] Result<void> start(const Fd& root, SourceCache* cache);
  // Stops and joins the thread. Idempotent.
  void stop();
  // Blocks until the initial walk has placed every watch (true), or the
  // scanner stopped / failed / stop was requested (false).
  [[nodiscard]] bool wait_ready(std::stop_token stop);

  [[nodiscard]] ScannerStats stats() const;

 private:
  struct Child {
    std::uint64_t ino = 0;
    bool is_dir = false;
    std::uint64_t dir = 0;  // its Dir id if is_dir
  };
  struct Dir {
    int wd = -1;
    std::uint64_t parent = 0;  // 0: the root has none
    std::string name;
    std::unordered_map<std::string, Child> children;
  };
  struct Event {
    int wd = -1;
    std::uint32_t mask = 0, cookie = 0;
    std::string name;
    ScanClock::time_point due{};
  };
  struct MoveFrom {
    std::uint64_t dir = 0;
    std::string name;
    ScanClock::time_point due{};
  };
  enum class Mode { Baseline, Fresh, Rescan };

  void run(std::stop_token stop);
  void loop(std::stop_token stop);
  void flush();
  void set_ready(bool ok);
  [[nodiscard]] std::string dir_path(std::uint64_t id) const;
  [[nodiscard]] std::string child_path(std::uint64_t dir, const std::string& name) const;
  void scan_dir(std::uint64_t id, Mode mode, bool recurse);
  void watch(std::uint64_t id, int dirfd);
  std::uint64_t new_dir(std::uint64_t parent, const std::string& name);
  void drop_dir(std::uint64_t id);
  void drop_child(std::uint64_t dir, const std::string& name);
  void appeared(std::uint64_t dir, const std::string& name, const struct stat& st, bool own);
  void vanished(std::uint64_t dir, const std::string& name);
  void check(const std::string& path, const struct stat& st);
  [[nodiscard]] bool known(const struct stat& st) const;
  void read_events(ScanClock::time_point now);
  void handle(const Event& e);
  void handle_moved_to(const Event& e, std::uint64_t dir);
  void expire_moves(ScanClock::time_point now);
  void reship_files(std::uint64_t dir);
  void ship_suspects(ScanClock::time_point now);
  void poll_unwatched();
  void rescan_dirty();
  void forward(Change c);
  void invalidate_entry(std::uint64_t dir, const std::string& name);
  [[nodiscard]] bool lstat_at(const std::string& path, struct stat& st) const;

  ChangeSink& next_;
  ScannerOptions opt_;
  std::shared_ptr<spdlog::logger> log_;
  ScanBook book_;
  int root_ = -1;
  SourceCache* cache_ = nullptr;
  Fd inotify_, wake_;
  std::jthread thread_;

  // Lock order: ready_mu_ is a leaf lock.
  std::mutex ready_mu_;
  std::condition_variable_any ready_cv_;
  bool ready_ = false, finished_ = false;  // guarded by ready_mu_

  std::atomic<std::uint64_t> bypass_{0}, unsure_{0}, own_{0}, overflows_{0}, watched_{0},
      polled_{0}, unclear_{0};

  // Scanner thread only.
  std::unordered_map<std::uint64_t, Dir> dirs_;
  std::unordered_map<int, std::uint64_t> wd_dir_;
  std::uint64_t next_id_ = 2;
  std::deque<Event> events_;
  std::map<std::uint32_t, MoveFrom> moves_;  // MOVED_FROM by cookie, waiting for its MOVED_TO
  std::set<std::uint64_t> unwatched_;
  ScanClock::time_point next_poll_{};
  bool rescan_all_ = false;
  std::set<std::uint64_t> dirty_;  // directories to list again (events were unclear)
  ScanClock::time_point dirty_since_{};
  bool limit_warned_ = false;
};

}  // namespace mirrorfs::replicate
