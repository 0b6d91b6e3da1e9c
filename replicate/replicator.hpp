// Replicator: the sender's engine for ONE target. Owns one std::jthread
// (named mfs-repl-N) and that thread's Transport; reads the source only
// through the source root fd (never through the mount).
//
// Lifecycle: construct (registers the target's queue with the Journal, so
// changes recorded from then on are kept for it) -> start() (spawns the
// thread; it connects, retrying with backoff) -> ... -> drain(timeout)
// (optional, at unmount) -> stop() (or the destructor).
//
// Startup: if ready_gate is set, the thread first waits until it returns
// true (the scanner's watches are in place). Then, unless initial_sync is
// None, it reconciles the target with the source (Reconciler: bulk List
// exchanges, marks shipped through the Shipper) before any journal batch;
// changes recorded meanwhile wait in the journal and ship after, as current
// state. A broken session restarts the pass. Progress is logged every ~5 s
// and shown in status().
//
// Persistent state (ReplicatorOptions::state, opened by the caller): after
// a clean unmount a Checksum pass is downgraded to Quick; after a crash the
// paths that were pending and files modified since the last heartbeat are
// compared by content (initial_sync=none: recorded into the journal as
// changes). stop() writes the final state ("clean" if nothing was left).
//
// The loop: wait for work, wait `delay` (batching window), take a batch,
// ship it (Shipper: current state of each path, ops replayed, Barrier last),
// then complete() it in the journal. A broken session: log, requeue the whole
// batch, back off 100 ms .. 10 s (doubling), reconnect, then remove the
// stale temps of interrupted transfers from the directories the broken
// batch touched (over ~1000 of them: a whole quick reconcile). A request that
// fails on the target: log, Journal::retry() the path (shipped in full
// next time), and back off before the next batch.
//
// Threads: start/stop/drain/status may be called from any thread;
// status() never blocks on the network.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "fs/api/fd.hpp"
#include "replicate/journal.hpp"
#include "replicate/shipper.hpp"
#include "replicate/reconcile.hpp"
#include "replicate/state.hpp"
#include "replicate/transport.hpp"

namespace spdlog {
class logger;
}

namespace mirrorfs::replicate {

struct ReplicatorOptions {
  std::chrono::milliseconds delay{2};  // batching window after the first change
  bool delete_missing = true;          // delete=yes|no
  std::size_t max_batch = 512;         // journal entries per batch
  std::uint64_t in_place_min = std::uint64_t{1} << 20;
  std::chrono::milliseconds backoff_min{100};
  std::chrono::milliseconds backoff_max{10'000};
  SyncMode initial_sync = SyncMode::None;  // startup reconcile (main: from initial_sync=)
  std::size_t initial_batch = 1000;        // marks per startup batch shipped
  std::size_t reconcile_dirs = 256;        // List requests per exchange
  // Called by the replicator thread before the reconcile until it returns
  // true (false: asked again 100 ms later). Empty: start at once.
  std::function<bool(std::stop_token)> ready_gate;
  // Opened (StateKeeper::open()) by the caller; null: no persistent state.
  std::shared_ptr<StateKeeper> state;
};

struct ReplicatorStatus {
  std::string target;  // spec.url
  bool connected = false;
  std::size_t pending = 0;  // journal entries waiting or in flight
  double lag_seconds = 0;   // age of the oldest change not yet acknowledged
  std::uint64_t bytes_sent = 0;
  std::uint64_t files_sent = 0;
  std::uint64_t batches = 0;
  std::uint64_t acked_seq = 0;  // every change with seq <= this has landed
  std::uint64_t last_seq = 0;
  bool initial_sync_done = true;     // the startup pass over the tree has finished
  std::uint64_t initial_entries = 0;  // entries the startup pass shipped so far
  std::string initial_mode = "none";  // none | quick | checksum (after the state's downgrade)
  std::uint64_t initial_scanned = 0;        // source entries compared
  std::uint64_t initial_to_send = 0;        // entries found different
  std::uint64_t initial_bytes_to_send = 0;  // their regular-file bytes
  std::uint64_t initial_bytes_sent = 0;     // wire bytes of the startup pass
  std::uint64_t initial_checksums = 0;      // content comparisons made
  double initial_seconds = 0;               // elapsed (so far, or in all)
  double initial_eta_seconds = -1;          // -1: unknown
  std::string last_error;  // "" if none yet
  std::chrono::system_clock::time_point last_error_time{};
};

using TransportFactory = std::function<Result<std::unique_ptr<Transport>>(const TargetSpec&)>;

class Replicator {
 public:
  // source_root must outlive the Replicator. factory defaults to connect().
  Replicator(Journal& journal, TargetSpec spec, const Fd& source_root, ReplicatorOptions opt,
             std::shared_ptr<spdlog::logger> log, TransportFactory factory = {});
  ~Replicator();
  Replicator(const Replicator&) = delete;
  Replicator& operator=(const Replicator&) = delete;

  void start();
  void stop();  // idempotent; returns after the thread has ended
  // Waits until nothing is pending or in flight and the last batch was
  // acknowledged; false on timeout.
  [[nodiscard]] bool drain(std::chrono::milliseconds timeout);
  [[nodiscard]] ReplicatorStatus status() const;
  [[nodiscard]] Journal::TargetId target_id() const noexcept { return id_; }

 private:
  void run(std::stop_token st) noexcept;
  void loop(std::stop_token st);
  bool ensure_connected(std::stop_token st);
  bool ship_one(std::stop_token st);
  bool ship_initial_chunk(std::stop_token st);
  bool pass_gate(std::stop_token st);
  void apply_recovery();
  void publish_progress(bool force);
  void finish_reconcile();
  void note_broken_batch(const Batch& b);
  bool sweep_temps(std::stop_token st);
  [[nodiscard]] const char* pass_name() const noexcept;
  bool ship_batch(std::stop_token st, Batch& b, bool from_journal);
  void sleep_for(std::stop_token st, std::chrono::milliseconds d);
  void note_error(const std::string& what);
  std::chrono::milliseconds next_backoff();

  Journal& journal_;
  const Fd& root_;
  TargetSpec spec_;
  ReplicatorOptions opt_;
  std::shared_ptr<spdlog::logger> log_;
  TransportFactory factory_;
  Journal::TargetId id_;
  int index_;  // N in mfs-repl-N and repl[N]
  Shipper shipper_;                        // replicator thread only
  std::unique_ptr<Transport> transport_;   // replicator thread only
  std::chrono::milliseconds backoff_{0};   // replicator thread only
  std::unique_ptr<Reconciler> walk_;       // replicator thread only: startup pass
  Batch walk_marks_;                       // replicator thread only: found, not yet shipped
  std::chrono::steady_clock::time_point walk_started_{}, walk_logged_{};
  std::uint64_t walk_bytes_base_ = 0;      // bytes_sent_ when the pass started
  ReconcileOptions walk_opt_;              // mode and recovery hints, set up once
  bool gate_passed_ = false;               // replicator thread only
  bool recovery_applied_ = false;          // replicator thread only
  // Parents of the paths of batches broken mid-session: swept for stale
  // temps after the reconnect. `sweep_all_`: too many, reconcile the tree.
  std::set<std::string> sweep_dirs_;       // replicator thread only
  bool sweep_all_ = false;                 // replicator thread only
  bool sweeping_ = false;                  // replicator thread only: the pass is a re-check

  std::atomic<bool> initial_done_{false};
  std::atomic<std::uint64_t> initial_entries_{0};
  std::atomic<std::uint64_t> rc_scanned_{0}, rc_to_send_{0}, rc_bytes_to_send_{0}, rc_bytes_sent_{0},
      rc_checksums_{0};
  std::atomic<double> rc_seconds_{0}, rc_eta_{-1};
  std::atomic<int> rc_mode_{0};  // SyncMode

  std::atomic<bool> connected_{false};
  std::atomic<std::uint64_t> bytes_sent_{0}, files_sent_{0}, batches_{0};
  // Lock order: err_mu_ and sleep_mu_ are leaves; never held with the
  // journal's mutex or across I/O.
  mutable std::mutex err_mu_;
  std::string last_error_;
  std::chrono::system_clock::time_point last_error_time_{};
  std::mutex sleep_mu_;
  std::condition_variable_any sleep_cv_;
  std::jthread thread_;  // last: joined first on destruction
};

}  // namespace mirrorfs::replicate
