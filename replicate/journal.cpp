// Journal: fan-out of records to target queues, the take/complete/requeue
// cycle, memory bounds and stats. Per-record rules live in journal_queue.cpp.
#include "replicate/journal.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <unordered_map>

#include "replicate/journal_queue.hpp"

namespace mirrorfs::replicate {
namespace {

// True if p lies under one of `names` or one of them lies under p.
bool overlaps(const std::string& p, const std::vector<std::string>& names) {
  return std::any_of(names.begin(), names.end(),
                     [&](const std::string& d) { return path_under(p, d) || path_under(d, p); });
}

}  // namespace

// ---- TargetQueue: batches ------------------------------------------------

std::vector<Entry> TargetQueue::take(std::size_t max) {
  std::vector<Entry> out;
  while (!order_.empty() && out.size() < max) {
    auto node = order_.extract(order_.begin());
    if (auto* path = std::get_if<std::string>(&node.mapped())) {
      auto mnode = marks_.extract(*path);
      Entry e = std::move(mnode.mapped());
      if (auto it = inflight_.find(e.path); it != inflight_.end()) {
        merge_entry(it->second, Entry(e), limits_.max_ranges_per_path);
      } else {
        inflight_.emplace(e.path, e);
      }
      out.push_back(std::move(e));
    } else {
      inflight_ops_.push_back(std::get<Entry>(node.mapped()));
      out.push_back(std::move(std::get<Entry>(node.mapped())));
      --ops_;
    }
  }
  if (overflow_ && out.size() < max) {  // bad_alloc was seen: rescan everything
    Entry root;
    root.exist = root.subtree = true;
    root.first_seq = root.last_seq = overflow_seq_;
    root.pos = next_pos_++;
    inflight_.emplace("", root);
    out.push_back(std::move(root));
    overflow_ = false;
  }
  for (const Entry& e : out) {
    if (inflight_first_seq_ == 0 || e.first_seq < inflight_first_seq_) inflight_first_seq_ = e.first_seq;
    if (inflight_oldest_ == Clock::time_point{} || e.first_time < inflight_oldest_) inflight_oldest_ = e.first_time;
  }
  return out;
}

void TargetQueue::complete() {
  flight_renames_.clear();
  inflight_.clear();
  inflight_ops_.clear();
  inflight_first_seq_ = 0;
  inflight_oldest_ = {};
}

// A broken session may have applied any prefix of the batch, and renames
// are not idempotent (an exchange applied twice undoes itself): requeued ops
// become marks that re-ship both names in full, and the pending ops that
// touch those names (recorded as if the op had landed) degrade too. Marks go
// back to their place, or merge into a newer mark of their path; a `replace`
// that so moves past pending ops, or a mark whose name a pending op touches,
// re-ships the whole tree there instead.
void TargetQueue::requeue(std::vector<Entry>&& entries) {
  std::vector<std::string> op_paths;  // names the pending ops touch
  for (const auto& kv : order_) {
    if (const auto* op = std::get_if<Entry>(&kv.second)) op_paths.insert(op_paths.end(), {op->path, op->to_path});
  }
  std::vector<std::string> dirty;
  for (Entry& e : entries) {
    if (e.kind != Entry::Kind::Path) {
      dirty.push_back(e.path);
      dirty.push_back(e.to_path);
      degrade_op(std::move(e), true);
      continue;
    }
    auto it = marks_.find(e.path);
    // Back in place before a pending op on its name, later changes of the
    // object that op brings would coalesce into it: ship it in full last.
    const bool moved_on = overlaps(e.path, op_paths);
    if (moved_on || (it != marks_.end() && (e.replace || it->second.replace))) {
      dirty.push_back(e.path);
      e.exist = e.subtree = true;
      e.replace |= moved_on;
      e.ranges.clear();
    }
    merge_into_marks(std::move(e), !moved_on);
  }
  complete();
  settle(std::move(dirty));
}

// A path of the batch failed: the target holds something unknown there, so
// remove it and ship it again in full (subtree too: `replace` removes the
// target's whole tree there). Marks every name it has had since: through the
// batch's own ops (they ran after it, on the unknown state), the renames
// recorded meanwhile, and the pending ops, which degrade.
void TargetQueue::retry(const std::string& path, bool /*subtree*/, std::uint64_t seq, Clock::time_point now) {
  std::vector<std::string> names{path};
  for (const Entry& op : inflight_ops_) {
    if (overlaps(op.path, names) || overlaps(op.to_path, names)) {
      names.push_back(op.path);
      names.push_back(op.to_path);
    }
  }
  for (const FlightRename& r : flight_renames_) {
    const std::size_t n = names.size();
    for (std::size_t i = 0; i < n; ++i) {
      if (path_under(names[i], r.from)) names.push_back(path_remap(names[i], r.from, r.to));
      if (r.exchange && path_under(names[i], r.to)) names.push_back(path_remap(names[i], r.to, r.from));
    }
  }
  settle(names);
  for (const std::string& p : names) {
    Entry& m = mark(p, seq, now);
    m.exist = m.replace = m.subtree = true;
    m.ranges.clear();
    place_last(m);
  }
  enforce_limit(seq, now);
}

// The target's state under the `dirty` names is unknown from here on: every
// pending op that reads or writes there (either name overlapping one) turns
// into marks, and its names become unknown too, transitively in log order.
void TargetQueue::settle(std::vector<std::string> dirty) {
  if (dirty.empty() || ops_ == 0) return;
  std::vector<std::uint64_t> op_pos;  // settling only adds marks: this list stays complete
  for (const auto& [pos, slot] : order_) {
    if (std::holds_alternative<Entry>(slot)) op_pos.push_back(pos);
  }
  for (const std::uint64_t pos : op_pos) {
    auto it = order_.find(pos);
    Entry& op = std::get<Entry>(it->second);
    if (!overlaps(op.path, dirty) && !overlaps(op.to_path, dirty)) continue;
    Entry e = std::move(op);
    order_.erase(it);
    --ops_;
    dirty.push_back(e.path);
    dirty.push_back(e.to_path);
    degrade_op(std::move(e), true);
  }
}

std::vector<std::string> TargetQueue::inflight_in_place(const std::string& dir) const {
  std::vector<std::string> out;
  for (auto it = inflight_.lower_bound(dir); it != inflight_.end() && it->first.starts_with(dir); ++it) {
    if (path_under(it->first, dir) && !it->second.exist) out.push_back(it->first);
  }
  return out;
}

void TargetQueue::set_overflow(std::uint64_t seq) noexcept {
  if (!overflow_) overflow_seq_ = seq;
  overflow_ = true;
}

// ---- TargetQueue: memory bound -------------------------------------------

void TargetQueue::enforce_limit(std::uint64_t seq, Clock::time_point now) {
  const std::size_t max = std::max<std::size_t>(limits_.max_pending_paths, 4);
  if (order_.size() <= max) return;
  if (ops_ > max / 2) collapse_ops();
  const std::size_t goal = max - max / 4;
  while (order_.size() > goal && collapse_busiest_dir(seq, now)) {
  }
}

// Turns a Rename/Link op into marks on the names it touched. Whether or not
// the target applied it, both names of a rename are shipped in full after
// removing what the target has there (the old name may since hold a new
// object; the new name the target's stale one).
void TargetQueue::degrade_op(Entry&& op, bool keep_pos) {
  const bool rename = op.kind == Entry::Kind::Rename;
  const bool exchange = rename && (op.flags & 2u) != 0;
  Entry to;
  to.path = op.to_path;
  to.exist = true;
  to.subtree = rename;
  to.replace = op.replace || exchange;
  to.first_seq = op.first_seq;
  to.last_seq = op.last_seq;
  to.first_time = op.first_time;
  to.pos = op.pos;
  if (rename) {
    Entry from = to;
    from.path = op.path;
    from.removed = !exchange;
    from.subtree = from.replace = true;
    merge_into_marks(std::move(from), keep_pos);
    to.pos = 0;
  }
  merge_into_marks(std::move(to), keep_pos);
}

// Last resort for a flood of renames: every pending op becomes marks.
void TargetQueue::collapse_ops() {
  std::vector<Entry> ops;
  for (auto it = order_.begin(); it != order_.end();) {
    if (auto* op = std::get_if<Entry>(&it->second)) {
      ops.push_back(std::move(*op));
      it = order_.erase(it);
    } else {
      ++it;
    }
  }
  ops_ = 0;
  for (Entry& op : ops) {
    op.replace = true;
    degrade_op(std::move(op), false);
  }
  ++coarsenings_;
}

// Collapses the marks under one directory into a subtree mark on it. Picks
// the deepest directory that frees enough entries, else the busiest one.
bool TargetQueue::collapse_busiest_dir(std::uint64_t seq, Clock::time_point now) {
  std::unordered_map<std::string, std::size_t> count;
  for (const auto& kv : marks_) {
    const std::string& p = kv.first;
    for (auto slash = p.rfind('/'); slash != std::string::npos && slash > 0; slash = p.rfind('/', slash - 1)) {
      ++count[p.substr(0, slash)];
    }
  }
  const std::size_t goal = limits_.max_pending_paths - limits_.max_pending_paths / 4;
  const std::size_t excess = order_.size() > goal ? order_.size() - goal : 1;
  std::string best;
  std::size_t best_n = 0;
  bool best_enough = false;
  for (const auto& [dir, n] : count) {
    const bool enough = n > excess;
    const bool better = (enough && !best_enough) ||
                        (enough == best_enough && (enough ? dir.size() > best.size() : n > best_n));
    if (n >= 2 && better) best = dir, best_n = n, best_enough = enough;
  }
  const bool root = best_n < 2;
  if (root && marks_.size() < 2) return false;
  Entry sub;
  sub.path = root ? std::string() : best;
  std::vector<Entry> kept;  // the root cannot be replaced: removals stay exact marks
  for (Entry& e : extract_under(sub.path)) {
    if (root && (e.removed || e.replace) && !e.path.empty()) {
      kept.push_back(std::move(e));
      continue;
    }
    sub.replace |= !root && (e.removed || e.replace);
    e.ranges.clear();
    e.subtree = e.exist = true;
    e.removed = e.replace = false;
    e.path = sub.path;
    merge_entry(sub, std::move(e), limits_.max_ranges_per_path);
  }
  sub.subtree = sub.exist = true;
  if (sub.first_seq == 0) sub.first_seq = seq, sub.first_time = now;
  sub.last_seq = std::max(sub.last_seq, seq);
  merge_into_marks(std::move(sub), false);
  for (Entry& e : kept) merge_into_marks(std::move(e), true);
  ++coarsenings_;
  return !root;  // after the root nothing coarser is left
}

QueueStats TargetQueue::stats(Clock::time_point now) const {
  QueueStats s;
  s.pending = order_.size() + (overflow_ ? 1 : 0);
  s.in_flight = inflight_.size() + inflight_ops_.size();
  Clock::time_point oldest = inflight_oldest_;
  std::uint64_t first = inflight_first_seq_;
  auto consider = [&](const Entry& e) {
    if (oldest == Clock::time_point{} || e.first_time < oldest) oldest = e.first_time;
    if (first == 0 || e.first_seq < first) first = e.first_seq;
  };
  for (const auto& kv : order_) {
    if (const auto* op = std::get_if<Entry>(&kv.second)) {
      consider(*op);
    } else {
      consider(marks_.at(std::get<std::string>(kv.second)));
    }
  }
  if (overflow_ && (first == 0 || overflow_seq_ < first)) first = overflow_seq_;
  s.oldest_age = oldest == Clock::time_point{} ? Clock::duration{} : now - oldest;
  s.acked_seq = first == 0 ? 0 : first - 1;
  s.coarsenings = coarsenings_;
  return s;
}

// ---- Journal ---------------------------------------------------------------

Journal::Journal(JournalLimits limits, std::shared_ptr<spdlog::logger> log)
    : limits_(limits), log_(std::move(log)), links_(std::make_unique<LinkIndex>()) {}

Journal::~Journal() = default;

Journal::TargetId Journal::add_target(std::string name) {
  std::lock_guard lk(mu_);
  queues_.push_back(std::make_unique<TargetQueue>(std::move(name), limits_));
  return queues_.size() - 1;
}

void Journal::record(const Change& c) noexcept {
  try {
    const Clock::time_point now = Clock::now();
    {
      std::lock_guard lk(mu_);
      const std::uint64_t seq = ++seq_;
      std::vector<Change> all{c};  // c, and c on the other names of its inode
      try {
        guard_links(c, seq, now);
        links_->on_change(c);
        if (c.kind == ChangeKind::Data || c.kind == ChangeKind::Meta ||
            c.kind == ChangeKind::Content) {
          for (std::string& p : links_->others(c.path)) {
            all.push_back(c);
            all.back().path = std::move(p);
          }
        }
      } catch (...) {  // bad_alloc: the link groups may be incomplete now
        for (auto& q : queues_) q->set_overflow(seq);
      }
      for (auto& q : queues_) {
        try {
          for (const Change& one : all) q->apply(one, seq, now);
        } catch (...) {  // bad_alloc: never drop, rescan instead
          q->set_overflow(seq);
        }
      }
    }
    work_cv_.notify_all();
  } catch (...) {  // std::system_error from the mutex: nothing sane left to do
  }
}

// A mark in flight at a path whose object c replaces or moves may write the
// new object's bytes or mode into the target's old inode in place, which the
// target shares with the other names of a hard link: ship those in full.
void Journal::guard_links(const Change& c, std::uint64_t seq, Clock::time_point now) {
  if (c.kind == ChangeKind::Data || c.kind == ChangeKind::Meta || c.kind == ChangeKind::Content ||
      links_->size() == 0)
    return;
  std::vector<std::string> touched{c.path};
  if (c.kind == ChangeKind::Renamed) touched.push_back(c.to_path);
  for (auto& q : queues_) {
    for (const std::string& t : touched) {
      for (const std::string& p : q->inflight_in_place(t)) {
        for (std::string& other : links_->others(p)) {
          q->apply(Change{ChangeKind::Created, std::move(other)}, seq, now);
        }
      }
    }
  }
}

bool Journal::wait_for_work(TargetId t, std::stop_token stop) {
  std::unique_lock lk(mu_);
  return work_cv_.wait(lk, stop, [&] { return queues_.at(t)->has_work(); });
}

Batch Journal::take_batch(TargetId t, std::size_t max) {
  std::lock_guard lk(mu_);
  return Batch{queues_.at(t)->take(max)};
}

void Journal::complete(TargetId t) {
  {
    std::lock_guard lk(mu_);
    queues_.at(t)->complete();
  }
  idle_cv_.notify_all();
}

void Journal::requeue(TargetId t, Batch&& b) {
  {
    std::lock_guard lk(mu_);
    queues_.at(t)->requeue(std::move(b.entries));
  }
  work_cv_.notify_all();
}

void Journal::retry(TargetId t, const std::string& path, bool subtree) {
  {
    std::lock_guard lk(mu_);
    queues_.at(t)->retry(path, subtree, seq_, Clock::now());
  }
  work_cv_.notify_all();
}

bool Journal::wait_idle(TargetId t, Clock::time_point deadline) {
  std::unique_lock lk(mu_);
  return idle_cv_.wait_until(lk, deadline, [&] { return queues_.at(t)->idle(); });
}

void Journal::wake_all() {
  { std::lock_guard lk(mu_); }  // pairs with the waiters' predicate check
  work_cv_.notify_all();
  idle_cv_.notify_all();
}

QueueStats Journal::stats(TargetId t) const {
  std::lock_guard lk(mu_);
  QueueStats s = queues_.at(t)->stats(Clock::now());
  s.last_seq = seq_;
  if (queues_.at(t)->idle()) s.acked_seq = seq_;
  return s;
}

std::uint64_t Journal::last_seq() const {
  std::lock_guard lk(mu_);
  return seq_;
}

}  // namespace mirrorfs::replicate
