#include "fs/inode_table.hpp"

#include <fcntl.h>

#include <algorithm>
#include <mutex>

namespace mirrorfs::fs {

namespace {
constexpr int kMaxDepth = 4096;  // a path can hold at most ~2048 components of "a/"
}

InodeTable::InodeTable() {
  Node root;
  root.nlookup = 1;  // the kernel never forgets the root
  nodes_.emplace(kRootId, std::move(root));
}

std::string InodeTable::name_key(NodeId parent, std::string_view name) {
  std::string key(reinterpret_cast<const char*>(&parent), sizeof parent);
  key.append(name);
  return key;
}

NodeId InodeTable::remember(NodeId parent, std::string_view name, const struct stat& st) {
  std::unique_lock lock(mu_);
  const SrcKey src{st.st_dev, st.st_ino};
  NodeId id;
  if (auto it = by_src_.find(src); it != by_src_.end()) {
    id = it->second;
  } else {
    id = next_id_++;
    by_src_.emplace(src, id);
    nodes_.emplace(id, Node{st.st_dev, st.st_ino, 0, {}, {}});
  }
  Node& node = nodes_.at(id);
  node.nlookup += 1;
  Name n{parent, std::string(name)};
  if (std::find(node.names.begin(), node.names.end(), n) == node.names.end()) {
    // A name that pointed at another inode before (replaced behind our back)
    // now belongs to this one.
    const std::string key = name_key(parent, name);
    if (auto old = by_name_.find(key); old != by_name_.end() && old->second != id) {
      if (auto o = nodes_.find(old->second); o != nodes_.end()) std::erase(o->second.names, n);
    }
    by_name_[key] = id;
    node.names.insert(node.names.begin(), std::move(n));  // the newest name is the best guess
  }
  return id;
}

void InodeTable::forget(NodeId id, std::uint64_t n) {
  std::unique_lock lock(mu_);
  auto it = nodes_.find(id);
  if (it == nodes_.end() || id == kRootId) return;
  Node& node = it->second;
  node.nlookup = n >= node.nlookup ? 0 : node.nlookup - n;
  if (node.nlookup > 0) return;
  for (const Name& nm : node.names) {
    auto k = by_name_.find(name_key(nm.parent, nm.name));
    if (k != by_name_.end() && k->second == id) by_name_.erase(k);
  }
  if (auto s = by_src_.find(SrcKey{node.dev, node.ino}); s != by_src_.end() && s->second == id)
    by_src_.erase(s);  // a detached node no longer owns its backing inode's key
  nodes_.erase(it);
}

bool InodeTable::append_path(NodeId id, std::string& out, int depth) const {
  if (id == kRootId) return true;
  if (depth > kMaxDepth) return false;
  auto it = nodes_.find(id);
  if (it == nodes_.end() || it->second.names.empty()) return false;
  const Name& n = it->second.names.front();
  if (!append_path(n.parent, out, depth + 1)) return false;
  if (!out.empty()) out.push_back('/');
  out.append(n.name);
  return true;
}

std::optional<std::string> InodeTable::path(NodeId id) const {
  std::shared_lock lock(mu_);
  std::string out;
  if (!append_path(id, out, 0)) return std::nullopt;
  return out;
}

std::optional<std::string> InodeTable::child_path(NodeId parent, std::string_view name) const {
  std::shared_lock lock(mu_);
  std::string out;
  if (!append_path(parent, out, 0)) return std::nullopt;
  if (!out.empty()) out.push_back('/');
  out.append(name);
  return out;
}

std::optional<NodeId> InodeTable::lookup(std::string_view path) const {
  std::shared_lock lock(mu_);
  NodeId id = kRootId;
  while (!path.empty()) {
    const std::size_t slash = path.find('/');
    const std::string_view name = path.substr(0, slash);
    const std::optional<NodeId> next = find_by_name(id, name);
    if (!next) return std::nullopt;
    id = *next;
    path = slash == std::string_view::npos ? std::string_view() : path.substr(slash + 1);
  }
  return id;
}

std::vector<std::pair<NodeId, std::string>> InodeTable::names(NodeId id) const {
  std::shared_lock lock(mu_);
  std::vector<std::pair<NodeId, std::string>> out;
  if (auto it = nodes_.find(id); it != nodes_.end())
    for (const Name& n : it->second.names) out.emplace_back(n.parent, n.name);
  return out;
}

void InodeTable::detach(NodeId id) {
  std::unique_lock lock(mu_);
  auto it = nodes_.find(id);
  if (it == nodes_.end() || id == kRootId) return;
  const Node& node = it->second;
  if (auto s = by_src_.find(SrcKey{node.dev, node.ino}); s != by_src_.end() && s->second == id)
    by_src_.erase(s);
  for (const Name& nm : node.names) {
    auto k = by_name_.find(name_key(nm.parent, nm.name));
    if (k != by_name_.end() && k->second == id) by_name_.erase(k);
  }
}

std::optional<NodeId> InodeTable::find_by_name(NodeId parent, std::string_view name) const {
  auto it = by_name_.find(name_key(parent, name));
  if (it == by_name_.end()) return std::nullopt;
  return it->second;
}

void InodeTable::renamed(NodeId old_parent, std::string_view old_name, NodeId new_parent,
                         std::string_view new_name, bool exchange) {
  std::unique_lock lock(mu_);
  const std::optional<NodeId> moved = find_by_name(old_parent, old_name);
  const std::optional<NodeId> other = find_by_name(new_parent, new_name);
  const Name from{old_parent, std::string(old_name)};
  const Name to{new_parent, std::string(new_name)};
  by_name_.erase(name_key(old_parent, old_name));
  by_name_.erase(name_key(new_parent, new_name));
  if (other && nodes_.count(*other)) {
    auto& names = nodes_.at(*other).names;
    std::erase(names, to);  // replaced: that name no longer leads to it
    if (exchange) {
      names.insert(names.begin(), from);
      by_name_[name_key(old_parent, old_name)] = *other;
    }
  }
  if (moved && nodes_.count(*moved)) {
    auto& names = nodes_.at(*moved).names;
    std::erase(names, from);
    names.insert(names.begin(), to);
    by_name_[name_key(new_parent, new_name)] = *moved;
  }
}

void InodeTable::unlinked(NodeId parent, std::string_view name) {
  std::unique_lock lock(mu_);
  const std::optional<NodeId> id = find_by_name(parent, name);
  by_name_.erase(name_key(parent, name));
  if (id && nodes_.count(*id)) std::erase(nodes_.at(*id).names, Name{parent, std::string(name)});
}

void InodeTable::opened(NodeId id, int fd) {
  std::unique_lock lock(mu_);
  if (auto it = nodes_.find(id); it != nodes_.end()) it->second.open_fds.push_back(fd);
}

void InodeTable::closed(NodeId id, int fd) {
  std::unique_lock lock(mu_);
  if (auto it = nodes_.find(id); it != nodes_.end()) std::erase(it->second.open_fds, fd);
}

int InodeTable::dup_open_fd(NodeId id) const {
  std::shared_lock lock(mu_);  // held across dup: closed() cannot run meanwhile
  auto it = nodes_.find(id);
  if (it == nodes_.end() || it->second.open_fds.empty()) return -1;
  return ::fcntl(it->second.open_fds.front(), F_DUPFD_CLOEXEC, 0);
}

std::size_t InodeTable::size() const {
  std::shared_lock lock(mu_);
  return nodes_.size();
}

}  // namespace mirrorfs::fs
