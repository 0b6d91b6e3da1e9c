#include "replicate/scan_book.hpp"

#include <algorithm>

namespace mirrorfs::replicate {

bool ScanBook::Known::has(std::int64_t t) const {
  return std::find(recent.begin(), recent.end(), t) != recent.end() || in_span(t);
}

bool ScanBook::Known::in_span(std::int64_t t) const {
  return std::any_of(spans.begin(), spans.end(),
                     [&](const auto& s) { return s.first != 0 && s.first < t && t <= s.second; });
}

void ScanBook::Known::add(std::int64_t t) {
  if (t == 0 || has(t)) return;
  recent[next] = t;
  next = static_cast<std::uint8_t>((next + 1) % recent.size());
  max = std::max(max, t);
}

std::string ScanBook::own_key(OwnKind kind, const std::string& path, const std::string& to) {
  std::string k(1, static_cast<char>(kind));
  k += path;
  if (kind == OwnKind::Move) {
    k.push_back('\0');
    k += to;
  }
  return k;
}

void ScanBook::add_own(std::string key, ScanClock::time_point now) {
  own_[key].push_back(now + limits_.own_ttl);
  own_fifo_.emplace_back(now + limits_.own_ttl, std::move(key));
  while (own_fifo_.size() > limits_.max_own) {  // never consumed: its event was lost
    auto it = own_.find(own_fifo_.front().second);
    if (it != own_.end()) {
      it->second.pop_front();
      if (it->second.empty()) own_.erase(it);
    }
    own_fifo_.pop_front();
  }
}

void ScanBook::resolve(std::uint64_t ino, std::int64_t ctime) {
  std::erase_if(suspects_, [&](const Suspect& s) { return s.ino == ino && s.ctime == ctime; });
}

void ScanBook::on_record(const Change& c, ScanClock::time_point now) {
  std::lock_guard lk(mu_);
  switch (c.kind) {
    case ChangeKind::Created: add_own(own_key(OwnKind::Create, c.path, {}), now); break;
    case ChangeKind::Linked: add_own(own_key(OwnKind::Create, c.to_path, {}), now); break;
    case ChangeKind::Removed: add_own(own_key(OwnKind::Remove, c.path, {}), now); break;
    case ChangeKind::Renamed:
      moves_.push_back(
          OwnMove{c.path, c.to_path, (c.flags & 2u) != 0, now + limits_.own_ttl, ++move_seq_});
      add_own(own_key(OwnKind::Move, c.path, c.to_path), now);
      if ((c.flags & 2u) != 0) add_own(own_key(OwnKind::Move, c.to_path, c.path), now);  // RENAME_EXCHANGE
      break;
    default: break;
  }
  const Stamp& s = c.stamp;
  if (s.ino == 0) return;
  auto [it, fresh] = inodes_.try_emplace(s.ino);
  Known& k = it->second;
  if (c.kind == ChangeKind::Removed && s.ctime_after == 0) {
    k.relaxed = true;
    return;
  }
  if (k.relaxed && s.ctime_before != 0 && !k.has(s.ctime_before)) {
    k.relaxed = false;
    k.add(s.ctime_before);
  }
  if (!fresh && s.ctime_before != 0 && !k.has(s.ctime_before) &&
      std::none_of(suspects_.begin(), suspects_.end(), [&](const Suspect& x) {
        return x.ino == s.ino && x.ctime == s.ctime_before;
      })) {
    Suspect x{s.ino,
              s.ctime_before,
              c.kind == ChangeKind::Renamed ? c.to_path : c.path,
              c.kind != ChangeKind::Meta,
              s.ctime_before < k.max,
              move_seq_,
              now + limits_.grace};
    suspects_.push_back(std::move(x));
  }
  if (s.ctime_after != 0) {
    k.add(s.ctime_after);
    resolve(s.ino, s.ctime_after);
    if (s.ctime_before != 0 && s.ctime_before < s.ctime_after) {
      k.spans[k.next_span] = {s.ctime_before, s.ctime_after};
      k.next_span = static_cast<std::uint8_t>((k.next_span + 1) % k.spans.size());
      std::erase_if(suspects_, [&](const Suspect& x) {
        return x.ino == s.ino && s.ctime_before < x.ctime && x.ctime <= s.ctime_after;
      });
    }
  }
}

bool ScanBook::known(std::uint64_t ino, std::int64_t ctime) const {
  std::lock_guard lk(mu_);
  auto it = inodes_.find(ino);
  return it != inodes_.end() && it->second.has(ctime);
}

bool ScanBook::known_inode(std::uint64_t ino) const {
  std::lock_guard lk(mu_);
  return inodes_.count(ino) != 0;
}

void ScanBook::learn(std::uint64_t ino, std::int64_t ctime) {
  std::lock_guard lk(mu_);
  inodes_[ino].add(ctime);
  resolve(ino, ctime);
}

bool ScanBook::suspect(std::uint64_t ino, std::int64_t ctime, std::string path, bool content,
                       ScanClock::time_point now, std::uint64_t moves_seen) {
  std::lock_guard lk(mu_);
  auto it = inodes_.find(ino);
  if (it != inodes_.end() && it->second.has(ctime)) return false;
  for (Suspect& x : suspects_) {
    if (x.ino == ino && x.ctime == ctime) {
      x.content |= content;
      return true;
    }
  }
  const bool unsure = it != inodes_.end() && ctime < it->second.max;
  suspects_.push_back(
      Suspect{ino, ctime, std::move(path), content, unsure, moves_seen, now + limits_.grace});
  return true;
}

std::vector<Suspect> ScanBook::take_expired(ScanClock::time_point now) {
  std::lock_guard lk(mu_);
  std::vector<Suspect> out;
  std::erase_if(suspects_, [&](Suspect& s) {
    if (s.deadline > now) return false;
    out.push_back(std::move(s));
    return true;
  });
  for (const Suspect& s : out) inodes_[s.ino].add(s.ctime);
  if (!out.empty()) prune_moves();
  return out;
}

ScanClock::time_point ScanBook::next_deadline() const {
  std::lock_guard lk(mu_);
  ScanClock::time_point t = ScanClock::time_point::max();
  for (const Suspect& s : suspects_) t = std::min(t, s.deadline);
  return t;
}

bool ScanBook::consume_own(OwnKind kind, const std::string& path, const std::string& to) {
  std::lock_guard lk(mu_);
  auto it = own_.find(own_key(kind, path, to));
  if (it == own_.end()) return false;
  if (kind == OwnKind::Move) {
    auto m = std::find_if(moves_.begin(), moves_.end(), [&](const OwnMove& x) {
      return (x.from == path && x.to == to) || (x.exchange && x.from == to && x.to == path);
    });
    if (m != moves_.end()) m->seen = true;
    prune_moves();
  }
  it->second.pop_front();
  if (it->second.empty()) own_.erase(it);
  return true;  // its fifo slot stays; expiry finds nothing left to drop
}

bool ScanBook::consume_own_move_from(const std::string& from) {
  std::lock_guard lk(mu_);
  auto m = std::find_if(moves_.begin(), moves_.end(),
                        [&](const OwnMove& x) { return !x.seen && x.from == from; });
  if (m == moves_.end()) return false;
  m->seen = true;
  if (auto it = own_.find(own_key(OwnKind::Move, m->from, m->to)); it != own_.end()) {
    it->second.pop_front();
    if (it->second.empty()) own_.erase(it);
  }
  prune_moves();
  return true;
}

void ScanBook::expire_own(ScanClock::time_point now) {
  std::lock_guard lk(mu_);
  while (!own_fifo_.empty() && own_fifo_.front().first <= now) {
    auto it = own_.find(own_fifo_.front().second);
    if (it != own_.end()) {
      while (!it->second.empty() && it->second.front() <= now) it->second.pop_front();
      if (it->second.empty()) own_.erase(it);
    }
    own_fifo_.pop_front();
  }
  std::erase_if(moves_, [&](const OwnMove& m) { return m.deadline <= now; });
}

void ScanBook::forget_own() {
  std::lock_guard lk(mu_);
  own_.clear();
  own_fifo_.clear();
  moves_.clear();
}

namespace {
bool under(const std::string& p, const std::string& dir) {
  return p.size() >= dir.size() && p.compare(0, dir.size(), dir) == 0 &&
         (p.size() == dir.size() || p[dir.size()] == '/');
}
std::string remap(const std::string& p, const std::string& from, const std::string& to) {
  return to + p.substr(from.size());
}
}  // namespace

// Handled renames stay only while a suspect may still need them.
void ScanBook::prune_moves() {
  std::uint64_t keep_after = move_seq_;
  for (const Suspect& s : suspects_) keep_after = std::min(keep_after, s.moves_seen);
  std::erase_if(moves_, [&](const OwnMove& m) { return m.seen && m.seq <= keep_after; });
}

std::string ScanBook::translate_since(const std::string& path, std::uint64_t since) const {
  std::lock_guard lk(mu_);
  std::string p = path;
  for (const OwnMove& m : moves_) {
    if (m.seq <= since) continue;
    if (under(p, m.from)) {
      p = remap(p, m.from, m.to);
    } else if (m.exchange && under(p, m.to)) {
      p = remap(p, m.to, m.from);
    }
  }
  return p;
}

std::string ScanBook::translate(const std::string& path, std::uint64_t* last) const {
  std::lock_guard lk(mu_);
  if (last != nullptr) *last = move_seq_;
  std::string p = path;
  for (const OwnMove& m : moves_) {
    if (m.seen) continue;
    if (under(p, m.from)) {
      p = remap(p, m.from, m.to);
    } else if (m.exchange && under(p, m.to)) {
      p = remap(p, m.to, m.from);
    }
  }
  return p;
}

std::size_t ScanBook::inode_count() const {
  std::lock_guard lk(mu_);
  return inodes_.size();
}

std::size_t ScanBook::own_count() const {
  std::lock_guard lk(mu_);
  return own_.size();
}

}  // namespace mirrorfs::replicate
