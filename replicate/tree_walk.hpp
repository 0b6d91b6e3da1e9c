// TreeWalk: the source tree, every entry once, parents before children, in
// batches of journal-style "ship the current state" entries. The replicator
// uses it for the startup sync of a target (issue 4 replaces the full pass
// with a size+mtime / checksum reconcile through the agent).
// Single-threaded; reads the source only through the root fd.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "fs/api/fd.hpp"
#include "replicate/journal.hpp"

namespace mirrorfs::replicate {

class TreeWalk {
 public:
  explicit TreeWalk(const Fd& root) : root_(root), dirs_{std::string()} {}
  // Up to about max entries (whole directories at a time); empty when done.
  // The first batch holds the root itself. Unreadable directories are
  // skipped with their path counted in errors().
  [[nodiscard]] Batch next(std::size_t max);
  [[nodiscard]] std::size_t errors() const noexcept { return errors_; }

 private:
  void list(const std::string& dir, Batch& out);
  const Fd& root_;
  std::vector<std::string> dirs_;  // directories still to list (a stack)
  bool root_sent_ = false;
  std::size_t errors_ = 0;
};

}  // namespace mirrorfs::replicate
