// Journal::pending_paths: a capped copy of what a target still has to ship,
// for the persistent state (replicate/state.hpp). Kept apart from
// journal.cpp: it only reads the queues.
#include <spdlog/spdlog.h>

#include "replicate/journal.hpp"
#include "replicate/journal_queue.hpp"

namespace mirrorfs::replicate {

bool TargetQueue::collect_paths(std::size_t max, std::vector<std::string>& out) const {
  auto add = [&](const std::string& p) {
    if (out.size() >= max) return false;
    out.push_back(p);
    return true;
  };
  for (const auto& [path, e] : marks_)
    if (!add(path)) return false;
  for (const auto& [pos, slot] : order_) {
    if (const Entry* op = std::get_if<Entry>(&slot)) {
      if (!add(op->path) || !add(op->to_path)) return false;
    }
  }
  for (const auto& [path, e] : inflight_)
    if (!add(path)) return false;
  for (const Entry& op : inflight_ops_) {
    if (!add(op.path) || !add(op.to_path)) return false;
  }
  return !overflow_;
}

Journal::PathSnapshot Journal::pending_paths(TargetId t, std::size_t max) const {
  PathSnapshot s;
  try {
    std::lock_guard lk(mu_);
    s.overflow = !queues_.at(t)->collect_paths(max, s.paths);
  } catch (const std::bad_alloc&) {
    s.paths.clear();
    s.overflow = true;
  }
  return s;
}

}  // namespace mirrorfs::replicate
