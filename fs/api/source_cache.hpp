// SourceCache: what the kernel caches of the mount, seen from outside fs/.
// The scanner (replicate/) calls it when something changed the backing
// directory behind the mount's back, so that readers through the mount do not
// keep seeing cached pages, attributes or names. fs/ implements it with
// fuse_lowlevel_notify_inval_inode / notify_inval_entry.
#pragma once

#include <string_view>

namespace mirrorfs {

// Contract: thread-safe; may block while the kernel writes back dirty pages
// of the node, which needs FUSE worker threads: never call it from inside a
// FUSE request handler (deadlock), only from a thread of its own. Paths are
// relative to the source root ("" is the root). A path the mount never
// handed to the kernel has nothing cached: the call does nothing.
class SourceCache {
 public:
  virtual ~SourceCache() = default;
  // Drops the cached attributes and pages of the node at path.
  virtual void invalidate_node(std::string_view path) noexcept = 0;
  // Drops the cached name `name` in the directory at dir_path (it was
  // created, removed or renamed behind the mount).
  virtual void invalidate_entry(std::string_view dir_path, std::string_view name) noexcept = 0;
};

}  // namespace mirrorfs
