// TargetQueue: marks, namespace ops and their order for one target.
// The rules are written down in journal.hpp; this file only implements them.
#include "replicate/journal_queue.hpp"

#include <algorithm>

namespace mirrorfs::replicate {
namespace {

constexpr std::uint64_t kEnd = Change::kToEnd;
constexpr std::uint32_t kRenameExchange = 2;  // RENAME_EXCHANGE, without <linux/fs.h>

// The namespace op a Renamed or Linked change becomes, stamped with its seq.
Entry op_of(Entry::Kind kind, const Change& c, std::uint64_t seq, Clock::time_point now) {
  Entry op;
  op.kind = kind;
  op.path = c.path;
  op.to_path = c.to_path;
  op.flags = c.flags;
  op.first_seq = op.last_seq = seq;
  op.first_time = now;
  return op;
}

std::vector<std::string> keys_under(const std::map<std::string, Entry>& m, const std::string& dir) {
  std::vector<std::string> keys;
  if (dir.empty()) {
    for (const auto& kv : m) keys.push_back(kv.first);
    return keys;
  }
  if (m.count(dir) != 0) keys.push_back(dir);
  const std::string lo = dir + '/';
  const std::string hi = dir + static_cast<char>('/' + 1);
  for (auto it = m.lower_bound(lo); it != m.end() && it->first < hi; ++it) keys.push_back(it->first);
  return keys;
}

void add_range_end(Entry& m, std::uint64_t off, std::uint64_t end, std::size_t max_ranges) {
  if (m.whole || m.exist || end <= off) return;
  std::vector<Range> out;
  out.reserve(m.ranges.size() + 1);
  Range cur{off, end};
  bool placed = false;
  for (const Range& r : m.ranges) {
    if (r.end < cur.offset) {
      out.push_back(r);
    } else if (cur.end < r.offset) {
      if (!placed) out.push_back(cur), placed = true;
      out.push_back(r);
    } else {  // overlapping or adjacent: absorb
      cur.offset = std::min(cur.offset, r.offset);
      cur.end = std::max(cur.end, r.end);
    }
  }
  if (!placed) out.push_back(cur);
  if (out.size() > max_ranges) {
    m.whole = true;
    m.ranges.clear();
    return;
  }
  m.ranges = std::move(out);
}

}  // namespace

bool path_under(std::string_view p, std::string_view dir) noexcept {
  if (dir.empty()) return true;
  if (p.size() < dir.size() || p.compare(0, dir.size(), dir) != 0) return false;
  return p.size() == dir.size() || p[dir.size()] == '/';
}

std::string path_remap(std::string_view p, std::string_view from, std::string_view to) {
  std::string out(to);
  out.append(p.substr(from.size()));
  return out;
}

void add_range_to(Entry& m, std::uint64_t off, std::uint64_t len, std::size_t max_ranges) {
  const std::uint64_t end = (len == kEnd || off > kEnd - len) ? kEnd : off + len;
  add_range_end(m, off, end, max_ranges);
}

void merge_entry(Entry& dst, Entry&& src, std::size_t max_ranges) {
  if (dst.first_seq == 0 || (src.first_seq != 0 && src.first_seq < dst.first_seq)) {
    dst.first_seq = src.first_seq;
  }
  dst.last_seq = std::max(dst.last_seq, src.last_seq);
  if (src.first_time != Clock::time_point{} &&
      (dst.first_time == Clock::time_point{} || src.first_time < dst.first_time)) {
    dst.first_time = src.first_time;
  }
  dst.meta |= src.meta;
  dst.exist |= src.exist;
  dst.whole |= src.whole;
  dst.subtree |= src.subtree;
  dst.replace |= src.replace;
  dst.removed |= src.removed;
  if (dst.exist || dst.whole) {
    dst.ranges.clear();
    return;
  }
  for (const Range& r : src.ranges) add_range_end(dst, r.offset, r.end, max_ranges);
}

// ---- primitives ----------------------------------------------------------

Entry& TargetQueue::mark(const std::string& path, std::uint64_t seq, Clock::time_point now) {
  auto [it, fresh] = marks_.try_emplace(path);
  Entry& m = it->second;
  if (fresh) {
    m.path = path;
    m.first_seq = seq;
    m.first_time = now;
    place_last(m);
  }
  m.last_seq = std::max(m.last_seq, seq);
  return m;
}

void TargetQueue::place_last(Entry& m) {
  if (m.pos != 0) order_.erase(m.pos);
  m.pos = next_pos_++;
  order_.emplace(m.pos, m.path);
}

void TargetQueue::push_op(Entry op) {
  op.pos = next_pos_++;
  const std::uint64_t pos = op.pos;
  order_.emplace(pos, std::move(op));
  ++ops_;
}

Entry* TargetQueue::covering_subtree(const std::string& path) {
  std::string p = path;
  for (;;) {
    if (auto it = marks_.find(p); it != marks_.end() && it->second.subtree) return &it->second;
    if (p.empty()) return nullptr;
    const auto slash = p.rfind('/');
    p.resize(slash == std::string::npos ? 0 : slash);
  }
}

// True if the target may not hold the object now at path: it was created or
// replaced since it last shipped, pending or in flight (the shipper may have
// found it gone already).
// True if a subtree mark in flight covers path: its walk may already have
// seen the state after an op recorded now, so that op must not be replayed.
bool TargetQueue::inflight_covers(const std::string& path) const {
  std::string p = path;
  for (;;) {
    if (auto it = inflight_.find(p); it != inflight_.end() && it->second.subtree) return true;
    if (p.empty()) return false;
    const auto slash = p.rfind('/');
    p.resize(slash == std::string::npos ? 0 : slash);
  }
}

bool TargetQueue::has_exist_at(const std::string& path) const {
  const auto it = marks_.find(path);
  if (it != marks_.end() && it->second.exist) return true;
  const auto fl = inflight_.find(path);
  return fl != inflight_.end() && fl->second.exist;
}

std::vector<Entry> TargetQueue::extract_under(const std::string& dir) {
  std::vector<Entry> out;
  for (const std::string& k : keys_under(marks_, dir)) {
    auto node = marks_.extract(k);
    order_.erase(node.mapped().pos);
    out.push_back(std::move(node.mapped()));
  }
  std::sort(out.begin(), out.end(), [](const Entry& a, const Entry& b) { return a.pos < b.pos; });
  return out;
}

// Drops the marks of an object that a rename or link replaced; true if the
// target's copy of it may not be replaceable as is (stale type or children).
bool TargetQueue::drop_under(const std::string& dir) {
  bool stale = false;
  for (const Entry& e : extract_under(dir)) stale |= e.exist || e.subtree || e.path != dir;
  return stale;
}

void TargetQueue::merge_into_marks(Entry&& e, bool keep_pos) {
  if (auto it = marks_.find(e.path); it != marks_.end()) {
    merge_entry(it->second, std::move(e), limits_.max_ranges_per_path);
    if (!keep_pos) place_last(it->second);
    return;
  }
  const std::uint64_t pos = e.pos;
  auto [it, ok] = marks_.emplace(e.path, std::move(e));
  Entry& m = it->second;
  if (keep_pos && pos != 0 && order_.count(pos) == 0) {
    order_.emplace(pos, m.path);
  } else {
    m.pos = 0;
    place_last(m);
  }
}

void TargetQueue::insert_moved(std::vector<Entry>&& moved, const std::string& from, const std::string& to) {
  for (Entry& e : moved) {
    e.path = path_remap(e.path, from, to);
    e.pos = 0;
    merge_into_marks(std::move(e), false);
  }
}

void TargetQueue::copy_inflight(const std::string& from, const std::string& to, std::uint64_t seq) {
  for (const std::string& k : keys_under(inflight_, from)) {
    // The shipper may have read the path after this rename (seeing another
    // object, or none, and removing the target's tree there): the target's
    // copy that the rename moves is of unknown state, so ship it in full.
    Entry e = inflight_.at(k);
    e.path = path_remap(k, from, to);
    e.pos = 0;
    e.last_seq = std::max(e.last_seq, seq);
    e.exist = e.subtree = e.replace = true;
    e.whole = e.removed = false;
    e.ranges.clear();
    merge_into_marks(std::move(e), false);
  }
}

// ---- record handlers -----------------------------------------------------

void TargetQueue::apply(const Change& c, std::uint64_t seq, Clock::time_point now) {
  switch (c.kind) {
    case ChangeKind::Data: on_data(c, seq, now); break;
    case ChangeKind::Meta: on_meta(c, seq, now); break;
    case ChangeKind::Content: on_content(c, seq, now); break;
    case ChangeKind::Created: on_created(c, seq, now); break;
    case ChangeKind::Removed: on_removed(c, seq, now); break;
    case ChangeKind::Renamed:
      if ((c.flags & kRenameExchange) != 0) {
        on_exchange(c, seq, now);
      } else {
        on_renamed(c, seq, now);
      }
      break;
    case ChangeKind::Linked: on_linked(c, seq, now); break;
  }
  enforce_limit(seq, now);
}

void TargetQueue::on_data(const Change& c, std::uint64_t seq, Clock::time_point now) {
  if (Entry* s = covering_subtree(c.path)) {
    s->last_seq = seq;
    return;
  }
  Entry& m = mark(c.path, seq, now);
  add_range_to(m, c.offset, c.length, limits_.max_ranges_per_path);
}

void TargetQueue::on_meta(const Change& c, std::uint64_t seq, Clock::time_point now) {
  if (Entry* s = covering_subtree(c.path)) {
    s->last_seq = seq;
    return;
  }
  mark(c.path, seq, now).meta = true;
}

// Ranges unknown (a write behind the mount): ship it whole (a delta against
// the target's copy) with its metadata.
void TargetQueue::on_content(const Change& c, std::uint64_t seq, Clock::time_point now) {
  if (Entry* s = covering_subtree(c.path)) {
    s->last_seq = seq;
    return;
  }
  Entry& m = mark(c.path, seq, now);
  m.whole = m.meta = true;
  m.ranges.clear();
}

void TargetQueue::on_created(const Change& c, std::uint64_t seq, Clock::time_point now) {
  if (Entry* s = covering_subtree(c.path)) {
    s->last_seq = seq;
    return;
  }
  Entry& m = mark(c.path, seq, now);
  m.exist = true;
  m.ranges.clear();
  place_last(m);
}

void TargetQueue::on_removed(const Change& c, std::uint64_t seq, Clock::time_point now) {
  // A removed directory was empty: the marks below it are removals that a
  // tree Remove of the path covers -- also if the path is created again
  // before it ships, so then the target's copy is removed first (replace).
  bool below = false;
  for (Entry& e : extract_under(c.path)) {
    if (e.path == c.path) {
      merge_into_marks(std::move(e), false);
    } else {
      below = true;
    }
  }
  Entry& m = mark(c.path, seq, now);
  m.exist = true;
  m.removed = true;
  m.replace |= below;
  m.subtree = false;
  m.ranges.clear();
  place_last(m);
}

void TargetQueue::on_renamed(const Change& c, std::uint64_t seq, Clock::time_point now) {
  note_rename(c.path, c.to_path, false);
  // A subtree mark ships its region at its own position: no op may move
  // anything into or out of a region after its subtree mark.
  if (covering_subtree(c.path) != nullptr || covering_subtree(c.to_path) != nullptr ||
      inflight_covers(c.path) || inflight_covers(c.to_path) || has_exist_at(c.path)) {
    degrade_rename(c, seq, now);
    return;
  }
  Entry op = op_of(Entry::Kind::Rename, c, seq, now);
  op.replace = drop_under(c.to_path);
  push_op(std::move(op));
  insert_moved(extract_under(c.path), c.path, c.to_path);
  copy_inflight(c.path, c.to_path, seq);
}

// Renames recorded while a batch is in flight, so that retries of paths of
// that batch (named as they were at take time) also reach the new names.
void TargetQueue::note_rename(const std::string& from, const std::string& to, bool exchange) {
  if (!inflight_.empty() || !inflight_ops_.empty()) flight_renames_.push_back({from, to, exchange});
}

// The target may not have the source of this rename: ship the destination
// in full and remove the old name instead of replaying the rename.
void TargetQueue::degrade_rename(const Change& c, std::uint64_t seq, Clock::time_point now) {
  std::vector<Entry> old_to = extract_under(c.to_path);
  std::vector<Entry> moved = extract_under(c.path);
  insert_moved(std::move(old_to), c.to_path, c.to_path);
  insert_moved(std::move(moved), c.path, c.to_path);
  copy_inflight(c.path, c.to_path, seq);
  Entry& to = mark(c.to_path, seq, now);
  to.exist = true;
  to.subtree = true;  // the target has none of it under the new name
  to.ranges.clear();
  place_last(to);
  Entry& from = mark(c.path, seq, now);  // the target's old object there must go
  from.exist = true;
  from.removed = true;
  from.replace = true;
  from.ranges.clear();
  place_last(from);
}

void TargetQueue::on_exchange(const Change& c, std::uint64_t seq, Clock::time_point now) {
  note_rename(c.path, c.to_path, true);
  const std::string& a = c.path;
  const std::string& b = c.to_path;
  const bool degrade = covering_subtree(a) != nullptr || covering_subtree(b) != nullptr ||
                       inflight_covers(a) || inflight_covers(b) || has_exist_at(a) || has_exist_at(b);
  std::vector<Entry> ma = extract_under(a);
  std::vector<Entry> mb = extract_under(b);
  if (!degrade) {
    push_op(op_of(Entry::Kind::Rename, c, seq, now));
  }
  insert_moved(std::move(ma), a, b);
  insert_moved(std::move(mb), b, a);
  copy_inflight(a, b, seq);
  copy_inflight(b, a, seq);
  if (degrade) {
    for (const std::string* p : {&a, &b}) {
      Entry& m = mark(*p, seq, now);
      m.exist = m.subtree = m.replace = true;
      m.ranges.clear();
      place_last(m);
    }
  }
}

void TargetQueue::on_linked(const Change& c, std::uint64_t seq, Clock::time_point now) {
  if (covering_subtree(c.path) != nullptr || covering_subtree(c.to_path) != nullptr ||
      inflight_covers(c.path) || inflight_covers(c.to_path) || has_exist_at(c.path)) {
    Entry& m = mark(c.to_path, seq, now);
    m.exist = true;
    m.ranges.clear();
    place_last(m);
    return;
  }
  Entry op = op_of(Entry::Kind::Link, c, seq, now);
  op.replace = drop_under(c.to_path);
  push_op(std::move(op));
  // The link copies the target's object at path as it stands at the op; the
  // changes still pending (or in flight) there may move past the op (a later
  // removal, rename or requeue of path), so the new name gets them too.
  for (const Marks* from : {&marks_, &inflight_}) {
    const auto it = from->find(c.path);
    if (it == from->end() || !(it->second.meta || it->second.whole || !it->second.ranges.empty())) continue;
    Entry& m = mark(c.to_path, seq, now);
    m.meta |= it->second.meta;
    m.whole |= it->second.whole;
    for (const Range& r : it->second.ranges) add_range_end(m, r.offset, r.end, limits_.max_ranges_per_path);
    if (m.whole) m.ranges.clear();
  }
}

// ---- LinkIndex -----------------------------------------------------------

void LinkIndex::on_change(const Change& c) {
  switch (c.kind) {
    case ChangeKind::Data:
    case ChangeKind::Meta:
    case ChangeKind::Content: return;
    case ChangeKind::Created:
    case ChangeKind::Removed: return drop_under(c.path);
    case ChangeKind::Linked: {
      drop_under(c.to_path);
      auto [it, fresh] = group_of_.try_emplace(c.path, next_group_);
      if (fresh) members_[next_group_++].push_back(c.path);
      group_of_[c.to_path] = it->second;
      members_[it->second].push_back(c.to_path);
      return;
    }
    case ChangeKind::Renamed: {
      std::map<std::string, std::uint64_t> moved;
      if ((c.flags & kRenameExchange) != 0) {
        remap(c.to_path, c.path, moved);
      } else {
        drop_under(c.to_path);
      }
      remap(c.path, c.to_path, moved);
      for (auto& [p, g] : moved) {
        group_of_[p] = g;
        members_[g].push_back(p);
      }
      return;
    }
  }
}

std::vector<std::string> LinkIndex::others(const std::string& path) const {
  std::vector<std::string> out;
  const auto it = group_of_.find(path);
  if (it == group_of_.end()) return out;
  for (const std::string& p : members_.at(it->second)) {
    if (p != path) out.push_back(p);
  }
  return out;
}

// Takes the paths under `from` out of their groups, renamed under `to`.
void LinkIndex::remap(const std::string& from, const std::string& to, std::map<std::string, std::uint64_t>& out) {
  std::vector<std::string> keys;
  for (auto it = group_of_.lower_bound(from); it != group_of_.end() && it->first.starts_with(from); ++it) {
    if (path_under(it->first, from)) keys.push_back(it->first);
  }
  for (const std::string& k : keys) {
    const std::uint64_t g = group_of_.at(k);
    out.emplace(path_remap(k, from, to), g);
    group_of_.erase(k);
    std::erase(members_.at(g), k);
  }
}

void LinkIndex::drop_under(const std::string& dir) {
  std::map<std::string, std::uint64_t> gone;
  remap(dir, dir, gone);
  for (const auto& kv : gone) {
    auto m = members_.find(kv.second);
    if (m == members_.end() || m->second.size() > 1) continue;
    if (m->second.size() == 1) group_of_.erase(m->second.front());  // a single name: not a link any more
    members_.erase(m);
  }
}

}  // namespace mirrorfs::replicate
