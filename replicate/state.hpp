// Persistent state: what each target is known to hold, across restarts.
//
// One small file per (source, target url) under state_dir (state_path()).
// While mounted it says "dirty" and, about once per second when the
// target's queue changed, lists the paths pending or in flight for it
// (Journal::pending_paths, capped at kMaxPersistedPaths, with an overflow
// flag) and the time of that write (the heartbeat). After a clean unmount
// whose drain emptied the queue it says "clean". Every write is atomic:
// temp file, fsync, rename, fsync of the directory.
//
// What the next mount makes of it (StateKeeper::open() -> Recovery):
//   no file   first run: the reconcile runs as asked
//   clean     the target held everything: initial_sync=checksum is
//             downgraded to quick (changes made while unmounted show in
//             size/mtime)
//   dirty     a crash: the persisted paths, and entries whose ctime is at
//             or after the last heartbeat minus kSuspectMargin, get their
//             metadata sent again and (regular files) a content comparison
//             even in quick mode (re-shipped with none)
// A recovery that has not finished carries its paths and its threshold into
// the state it writes, so a second crash during it loses nothing.
//
// Threads: open() and finish() from the owner (main / Replicator); start()
// spawns one heartbeat thread (mfs-state) that reads the journal's stats
// and snapshot only; recovered() from the replicator thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "fs/api/result.hpp"
#include "replicate/journal.hpp"

namespace spdlog {
class logger;
}

namespace mirrorfs::replicate {

inline constexpr std::size_t kMaxPersistedPaths = 100'000;
inline constexpr std::int64_t kSuspectMarginNs = 2'000'000'000;  // clock granularity, writes in flight

struct PersistedState {
  bool clean = false;
  std::string source, target;
  std::int64_t heartbeat_ns = 0;      // wall clock (CLOCK_REALTIME) of this write
  std::int64_t suspect_since_ns = 0;  // carried from an unfinished recovery; 0: none
  bool overflow = false;              // more paths were pending than listed
  std::vector<std::string> paths;     // pending or in flight (dirty only)
  bool operator==(const PersistedState&) const = default;
};

[[nodiscard]] std::string encode_state(const PersistedState& s);
[[nodiscard]] Result<PersistedState> decode_state(std::string_view data);

// Creates dir (0700, parents too) if missing and checks that a file can be
// created in it. The Error names the directory and the cause.
[[nodiscard]] Result<void> prepare_state_dir(const std::string& dir);
// dir/<xxh64 of source and target url>.state
[[nodiscard]] std::string state_path(const std::string& dir, const std::string& source,
                                     const std::string& target_url);
// nullopt if there is no file.
[[nodiscard]] Result<std::optional<PersistedState>> load_state(const std::string& path);
[[nodiscard]] Result<void> save_state(const std::string& path, const PersistedState& s);

struct Recovery {
  enum class Previous { None, Clean, Dirty } previous = Previous::None;
  std::vector<std::string> paths;     // dirty: pending when it stopped
  bool overflow = false;              // dirty: more were pending than listed
  std::int64_t suspect_since_ns = 0;  // dirty: entries with ctime >= this were maybe not shipped
  std::string describe() const;       // for the log line
};

class StateKeeper {
 public:
  StateKeeper(std::string path, std::string source, std::string target,
              std::shared_ptr<spdlog::logger> log);
  ~StateKeeper();
  StateKeeper(const StateKeeper&) = delete;
  StateKeeper& operator=(const StateKeeper&) = delete;

  // Reads what the previous run left, then writes "dirty" (call before the
  // mount serves). An Error: the state file cannot be written.
  [[nodiscard]] Result<Recovery> open();
  [[nodiscard]] const Recovery& recovery() const noexcept { return recovery_; }
  // Starts the heartbeat thread for queue t of j (which must outlive it).
  void start(const Journal& j, Journal::TargetId t);
  // The recovery reconcile finished: stop carrying the previous run's paths.
  void recovered();
  // Stops the heartbeat and writes the final state: "clean" if clean, else
  // "dirty" with what is still pending. Idempotent.
  void finish(bool clean);
  [[nodiscard]] const std::string& path() const noexcept { return path_; }

 private:
  void run(std::stop_token st) noexcept;
  [[nodiscard]] Result<void> write_dirty();

  std::string path_, source_, target_;
  std::shared_ptr<spdlog::logger> log_;
  Recovery recovery_;
  const Journal* journal_ = nullptr;
  Journal::TargetId id_ = 0;
  std::atomic<bool> carrying_{false};  // recovery paths still part of every write
  std::atomic<bool> force_{false};     // write at the next tick even if nothing changed
  bool finished_ = false;
  bool warned_ = false;  // heartbeat thread only: one warning per failure streak
  // Lock order: write_mu_ is a leaf (held across the file write only;
  // the journal's lock is taken before it is, never under it).
  std::mutex write_mu_;
  std::mutex sleep_mu_;
  std::condition_variable_any sleep_cv_;
  std::jthread thread_;
};

}  // namespace mirrorfs::replicate
