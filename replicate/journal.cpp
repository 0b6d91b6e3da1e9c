// Journal: fan-out of records to target queues, the take/complete/requeue
// cycle, memory bounds and stats. Per-record rules live in journal_queue.cpp.
#include "replicate/journal.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <unordered_map>

#include "replicate/journal_queue.hpp"

namespace mirrorfs::replicate {

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
      out.push_back(std::move(std::get<Entry>(node.mapped())));
      --ops_;
      ++inflight_ops_;
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
  inflight_ops_ = 0;
  inflight_first_seq_ = 0;
  inflight_oldest_ = {};
}

// A broken session may have applied any prefix of the batch, and renames
// are not idempotent (an exchange applied twice undoes itself): requeued ops
// become marks that ship the current state of the names they touched.
void TargetQueue::requeue(std::vector<Entry>&& entries) {
  for (Entry& e : entries) {
    if (e.kind == Entry::Kind::Path) {
      merge_into_marks(std::move(e), true);
    } else {
      degrade_op(std::move(e), true);
    }
  }
  complete();
}

void TargetQueue::retry(const std::string& path, bool subtree, std::uint64_t seq, Clock::time_point now) {
  std::vector<std::string> names{path};  // path as named at take time, and where it went since
  for (const FlightRename& r : flight_renames_) {
    const std::size_t n = names.size();
    for (std::size_t i = 0; i < n; ++i) {
      if (path_under(names[i], r.from)) names.push_back(path_remap(names[i], r.from, r.to));
      if (r.exchange && path_under(names[i], r.to)) names.push_back(path_remap(names[i], r.to, r.from));
    }
  }
  for (const std::string& p : names) {
    Entry& m = mark(p, seq, now);
    m.exist = m.replace = true;
    m.subtree |= subtree;
    m.ranges.clear();
    place_last(m);
  }
  enforce_limit(seq, now);
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

// Turns a Rename/Link op into marks on the names it touched.
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
    from.subtree = from.replace = exchange;
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
  s.in_flight = inflight_.size() + inflight_ops_;
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
    : limits_(limits), log_(std::move(log)) {}

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
      for (auto& q : queues_) {
        try {
          q->apply(c, seq, now);
        } catch (...) {  // bad_alloc: never drop, rescan instead
          q->set_overflow(seq);
        }
      }
    }
    work_cv_.notify_all();
  } catch (...) {  // std::system_error from the mutex: nothing sane left to do
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
