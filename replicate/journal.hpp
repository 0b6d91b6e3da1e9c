// Journal: what changed on the source and has not reached each target yet.
//
// Lifecycle: main.cpp builds one Journal, hands it to fs/ as the ChangeSink,
// and each Replicator registers one target queue (add_target) before the
// mount serves. record() fans every change out to every registered queue.
//
// What a queue holds (per target, independent cursors):
//  * path marks: one per path, "ship the CURRENT state of this path":
//      ranges   coalesced dirty byte ranges (Data; kToEnd = through EOF, i.e.
//               a truncate) -- valid only while the target holds the same
//               object as the source, except for those ranges;
//      whole    content unknown on the target (too many ranges, requeued);
//      meta     mode/owner/times/xattrs changed;
//      exist    existence/identity changed (Created, Removed, replaced):
//               ship the full current state, or remove it if it is gone;
//      subtree  everything below the path too (coarsening, degraded renames);
//      replace  remove what the target has at the path before recreating it
//               (type may have changed; removals were coarsened away).
//  * namespace ops in log order: Rename (with renameat2 flags; EXCHANGE
//    swaps) and Link. A Rename op may carry `replace`: the target's stale
//    object at to_path must be removed first.
// Every entry has a queue position; take_batch() returns entries in
// position order, which is an order the target can apply:
//  * Data/Meta coalesce into the path's mark where it stands (the object
//    has lived at that path continuously since the mark was placed);
//  * Created/Removed move the mark to the end (its type or identity may have
//    changed, so it must follow every namespace op recorded before);
//  * a rename moves every pending mark under the old name (the path and
//    everything below) to the new name and places it after the Rename op,
//    keeping the moved marks' relative order (parents before children);
//    marks under a replaced destination are dropped (that object is gone
//    on the source; the op's `replace` removes the target's stale copy);
//  * a rename whose source the target may not have yet (it has an exist mark,
//    pending or in flight), or whose source or destination lies under a
//    subtree mark (pending, or in flight: its walk may see the new state),
//    is not logged as an op: the marks move, the new name gets an
//    exist+subtree mark, the old name an exist+replace mark. (A subtree mark
//    ships its whole region at its position, so no later op may touch it.)
//    Links follow the same rule. A Link op also gives the new name the
//    ranges/meta still pending or in flight at the old name: the target
//    links the object as it stands at the op, and those marks may yet move
//    past it (a later removal, rename or requeue of the old name);
//  * Removed drops the marks below the path (a removed directory was empty;
//    removing the target's tree covers them). rmdir and unlink therefore
//    need no op of their own: the exist mark ships a Remove.
// Hard links: the journal keeps the groups of names it saw linked (Linked,
// moved by Renamed, left on Removed/Created/replace) and records a Data or
// Meta on one name on every name of its group, so each name is right on the
// target whatever link set the target holds. A change that replaces or
// moves a linked name while a ranges/meta mark of it is in flight (whose
// in-place write may land on the new object's bytes, in the target inode
// the other names share) marks the other names exist. Links made before
// the journal started are unknown to it: a change through one of their
// names reaches the others only while the target keeps that link set.
// In flight: take_batch() moves marks and ops to an in-flight set until
// complete() or requeue(). Whatever the shipper reads at an in-flight path
// may be the state after a change recorded meanwhile, so:
//  * a rename recorded meanwhile also places in-flight marks under the old
//    name (for an exchange, under either name) at the new name, as full
//    re-ships (exist+subtree+replace): the target's object that the rename
//    moves is of unknown state (the shipper may have removed it, or written
//    another object's state into it);
//  * retry() of a path of that batch marks it, every name it has had since
//    the take (through the batch's own later ops and the renames recorded
//    meanwhile) exist+subtree+replace at the end, and degrades every pending
//    op that touches one of those names (see settle below);
//  * requeue() (broken session: any prefix may have landed) turns the
//    batch's ops into exist+subtree+replace marks on both names (renames
//    are not idempotent) and degrades the pending ops touching those names;
//    marks go back to their positions, except that a mark whose name a
//    pending op touches (later changes of the object that op brings there
//    must not coalesce into a mark placed before the op), or whose
//    `replace` would merge into a later mark of its path, becomes a full
//    re-ship (exist+subtree+replace) at the end, and its name unknown;
//  * settle: an op touches a name if one of its paths lies under it or
//    above it; a degraded op's names are unknown too, transitively in log
//    order. (An op replayed on an unknown state would move it elsewhere.)
// Sequence numbers: every record() gets the next sequence number (global,
// the same in all queues); marks keep first_seq/last_seq even where they
// coalesce, ops keep theirs, so epochs can later be cut on them.
// Memory: a queue never holds more than about max_pending_paths entries.
// Past it, marks under the busiest directory collapse into one subtree
// mark (with replace if any collapsed mark was a removal), and in the last
// resort namespace ops turn into exist marks (both names of a rename
// exist+subtree+replace). Nothing is ever dropped. The link groups are not
// bounded by it: they hold the live hard-link names made while mounted.
// Threads: all methods are thread-safe. record() never blocks on I/O, never
// throws (on bad_alloc the queue falls back to a root rescan flag; the link
// groups may then miss a name, so every queue rescans) and only
// holds the journal mutex for in-memory work.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stop_token>
#include <string>
#include <vector>

#include "fs/api/change_sink.hpp"

namespace spdlog {
class logger;
}

namespace mirrorfs::replicate {

using Clock = std::chrono::steady_clock;

struct JournalLimits {
  std::size_t max_pending_paths = std::size_t{1} << 20;  // marks + ops, per target
  std::size_t max_ranges_per_path = 64;                  // past it: whole
};

struct Range {
  std::uint64_t offset = 0;
  std::uint64_t end = 0;  // exclusive; Change::kToEnd = through EOF
  bool operator==(const Range&) const = default;
};

struct Entry {
  enum class Kind : std::uint8_t { Path, Rename, Link };
  Kind kind = Kind::Path;
  std::string path;
  std::string to_path;      // Rename/Link destination
  std::uint32_t flags = 0;  // Rename: renameat2 flags as recorded
  std::vector<Range> ranges;
  bool whole = false, meta = false, exist = false, subtree = false, replace = false;
  bool removed = false;  // a Removed was recorded while this mark was pending
  std::uint64_t first_seq = 0, last_seq = 0;
  Clock::time_point first_time{};
  std::uint64_t pos = 0;  // queue position; keep it when requeueing
};

struct Batch {
  std::vector<Entry> entries;
};

struct QueueStats {
  std::size_t pending = 0;    // entries waiting (marks + ops)
  std::size_t in_flight = 0;  // entries taken and not yet completed/requeued
  Clock::duration oldest_age{};  // age of the oldest change not yet acknowledged
  std::uint64_t last_seq = 0;    // last sequence number recorded (all queues)
  std::uint64_t acked_seq = 0;   // every change with seq <= this has landed
  std::uint64_t coarsenings = 0;
};

class TargetQueue;
class LinkIndex;

class Journal final : public ChangeSink {
 public:
  using TargetId = std::size_t;

  Journal(JournalLimits limits, std::shared_ptr<spdlog::logger> log);
  ~Journal() override;
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  // Registers a queue; changes recorded from now on are queued for it.
  [[nodiscard]] TargetId add_target(std::string name);

  void record(const Change& c) noexcept override;

  // Blocks until the queue has entries or stop is requested; true if work.
  [[nodiscard]] bool wait_for_work(TargetId t, std::stop_token stop);
  // Takes up to max entries in apply order; they are in flight until
  // complete() or requeue(). Never blocks. Empty if nothing is pending.
  [[nodiscard]] Batch take_batch(TargetId t, std::size_t max);
  // The batch landed and was acknowledged (Barrier replied).
  void complete(TargetId t);
  // Nothing of the batch is known to have landed: put it back where it was.
  void requeue(TargetId t, Batch&& b);
  // One path failed on the target: ship it again, in full, after removing
  // what the target has there. Always with its subtree (the removal takes
  // the target's whole tree there); `subtree` is kept for the callers.
  void retry(TargetId t, const std::string& path, bool subtree);
  // Waits until nothing is pending or in flight for t; false on timeout.
  [[nodiscard]] bool wait_idle(TargetId t, Clock::time_point deadline);
  // Wakes every waiter (used on shutdown next to request_stop()).
  void wake_all();

  [[nodiscard]] QueueStats stats(TargetId t) const;
  [[nodiscard]] std::uint64_t last_seq() const;

  // The paths t still has to ship (pending and in flight: every mark, and
  // both names of each rename/link op), for the persistent state: at most
  // max of them; overflow when there were more, or when the queue fell back
  // to a full rescan. Copies under the journal's lock (no I/O).
  struct PathSnapshot {
    std::vector<std::string> paths;
    bool overflow = false;
  };
  [[nodiscard]] PathSnapshot pending_paths(TargetId t, std::size_t max) const;

 private:
  void guard_links(const Change& c, std::uint64_t seq, Clock::time_point now);

  JournalLimits limits_;
  std::shared_ptr<spdlog::logger> log_;
  // Lock order: mu_ is a leaf lock. Never held across I/O, never held while
  // calling out of the journal; Replicator locks are never taken under it.
  mutable std::mutex mu_;
  std::condition_variable_any work_cv_;  // pending became non-empty, or wake_all()
  std::condition_variable_any idle_cv_;  // a queue may have become idle
  std::vector<std::unique_ptr<TargetQueue>> queues_;  // guarded by mu_
  std::unique_ptr<LinkIndex> links_;                  // guarded by mu_
  std::uint64_t seq_ = 0;                             // guarded by mu_
};

}  // namespace mirrorfs::replicate
