// InodeTable: maps the kernel's node ids to names under the source root.
//
// Lifecycle: an entry is born on lookup/create/mkdir/... (nlookup += 1) and
// dies when the kernel forgets it (nlookup reaches 0). The table holds NO
// file descriptors: every backing access is an *at() call on the root fd
// with the relative path this table builds, so the number of known inodes is
// independent of RLIMIT_NOFILE (DESIGN.md, "Known traps").
//
// Each inode keeps the names (parent, name) it is known by: usually one, more
// for hard links. path() uses the first one; rename/unlink keep them current.
//
// Thread safety: all methods are safe to call concurrently. Lock order: mu_
// is a leaf lock; nothing is called while holding it.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace mirrorfs::fs {

using NodeId = std::uint64_t;  // fuse_ino_t without the FUSE header
inline constexpr NodeId kRootId = 1;

class InodeTable {
 public:
  InodeTable();

  // Records one more kernel reference to the inode at (parent, name) with
  // backing identity st; returns its node id.
  NodeId remember(NodeId parent, std::string_view name, const struct stat& st);
  // Drops n kernel references; erases the entry at zero.
  void forget(NodeId id, std::uint64_t n);

  // Relative path of a node ("" for the root), or nullopt if the node is
  // unknown or has no name left (unlinked while open).
  [[nodiscard]] std::optional<std::string> path(NodeId id) const;
  // path(parent) + "/" + name, or nullopt if parent is unknown.
  [[nodiscard]] std::optional<std::string> child_path(NodeId parent, std::string_view name) const;
  // The node the kernel knows at a relative path ("" is the root), found
  // name by name from the root; nullopt if the kernel holds no node there.
  [[nodiscard]] std::optional<NodeId> lookup(std::string_view path) const;
  // The names (parent, name) the kernel may cache for a node.
  [[nodiscard]] std::vector<std::pair<NodeId, std::string>> names(NodeId id) const;
  // The kernel's inode for this node is stale for good (with the writeback
  // cache the kernel keeps its own size and mtime): the next lookup of the
  // backing inode gets a new node id, hence a fresh kernel inode. The old
  // node keeps its names for the handles still open on it until forgotten.
  void detach(NodeId id);

  // Namespace changes made through the mount, after they succeeded.
  void renamed(NodeId old_parent, std::string_view old_name, NodeId new_parent,
               std::string_view new_name, bool exchange);
  void unlinked(NodeId parent, std::string_view name);

  // Open files of a node, so that an inode with no name left (unlinked while
  // open) can still be reached: the kernel sends fchmod/fchown/futimens on
  // such a file without a file handle.
  void opened(NodeId id, int fd);
  void closed(NodeId id, int fd);
  // A duplicate of one of the node's open descriptors, or -1 if none.
  [[nodiscard]] int dup_open_fd(NodeId id) const;

  [[nodiscard]] std::size_t size() const;

 private:
  struct Name {
    NodeId parent;
    std::string name;
    bool operator==(const Name&) const = default;
  };
  struct Node {
    dev_t dev = 0;
    ino_t ino = 0;
    std::uint64_t nlookup = 0;
    std::vector<Name> names;
    std::vector<int> open_fds;  // borrowed: owned by the kernel's file handles
  };
  struct SrcKey {
    dev_t dev;
    ino_t ino;
    bool operator==(const SrcKey&) const = default;
  };
  struct SrcHash {
    std::size_t operator()(const SrcKey& k) const noexcept {
      return std::hash<std::uint64_t>()(k.ino) ^ (std::hash<std::uint64_t>()(k.dev) << 1);
    }
  };

  // Requires mu_ held (shared is enough).
  bool append_path(NodeId id, std::string& out, int depth) const;
  std::optional<NodeId> find_by_name(NodeId parent, std::string_view name) const;
  static std::string name_key(NodeId parent, std::string_view name);

  mutable std::shared_mutex mu_;
  NodeId next_id_ = kRootId + 1;
  std::unordered_map<NodeId, Node> nodes_;
  std::unordered_map<SrcKey, NodeId, SrcHash> by_src_;
  std::unordered_map<std::string, NodeId> by_name_;  // name_key(parent, name) -> id
};

}  // namespace mirrorfs::fs
