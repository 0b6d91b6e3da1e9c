// Receiver: dispatch, namespace operations (mkdir, symlink, link, mknod,
// rename, remove), metadata, Stat and Barrier. File content operations are
// in target_files.cpp, path confinement in target_fs.cpp.
#include "replicate/receiver.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <cstdio>
#include <new>
#include <vector>

namespace mirrorfs::replicate {

using target::locate;
using target::Parent;

Receiver::Receiver(Fd root, std::shared_ptr<spdlog::logger> log)
    : root_(std::move(root)), log_(std::move(log)) {}

Receiver::~Receiver() {
  // Abandoned stages: remove their temps so they do not litter the target.
  for (auto& [path, s] : staged_) (void)::unlinkat(s.dir.get(), s.tmp.c_str(), 0);
  for (auto& [path, p] : patching_) (void)::unlinkat(p.dir.get(), p.tmp.c_str(), 0);
}

Reply Receiver::handle(const Request& req) noexcept {
  Reply reply;
  try {
    Result<std::string> r = dispatch(req);
    if (r) {
      reply.data = std::move(*r);
    } else {
      reply.err = r.error().code > 0 ? r.error().code : EIO;
      reply.message = std::move(r.error().what);
      if (log_) log_->debug("op {} on {}: {}", static_cast<int>(req.op), quoted(req.path),
                            reply.message);
    }
  } catch (const std::bad_alloc&) {
    reply = Reply{ENOMEM, "out of memory", {}};
  } catch (...) {
    reply = Reply{EIO, "unexpected exception", {}};
  }
  return reply;
}

namespace {
Result<std::string> empty(Result<void> r) {
  if (!r) return tl::unexpected(r.error());
  return std::string{};
}
}  // namespace

Result<std::string> Receiver::dispatch(const Request& r) {
  switch (r.op) {
    case Op::Hello: return op_hello(r);
    case Op::Mkdir: return empty(op_mkdir(r));
    case Op::BeginFile: return empty(op_begin(r));
    case Op::Write: return empty(op_write(r));
    case Op::Truncate: return empty(op_truncate(r));
    case Op::CommitFile: return empty(op_commit(r));
    case Op::Signature: return op_signature(r);
    case Op::Delta: return empty(op_delta(r));
    case Op::SetMeta: return empty(op_set_meta(r));
    case Op::Symlink: return empty(op_symlink(r));
    case Op::Link: return empty(op_link(r));
    case Op::Mknod: return empty(op_mknod(r));
    case Op::Rename: return empty(op_rename(r));
    case Op::Remove: return empty(op_remove(r));
    case Op::Barrier: return empty(op_barrier());
    case Op::Stat: return op_stat(r);
    case Op::Checksum: return op_checksum(r);
    case Op::Punch: return empty(op_punch(r));
    case Op::List: return op_list(r);
  }
  return fail(EPROTO, "unknown op " + std::to_string(static_cast<int>(r.op)));
}

Result<std::string> Receiver::op_hello(const Request& r) {
  if (r.offset != kProtocolVersion)
    return fail(EPROTONOSUPPORT, "sender speaks protocol " + std::to_string(r.offset) +
                                     ", this agent speaks " + std::to_string(kProtocolVersion));
  return "mirrorfs-agent protocol " + std::to_string(kProtocolVersion);
}

Result<void> Receiver::op_mkdir(const Request& r) {
  Result<Parent> p = locate(root_.get(), r.path, true);
  if (!p) return tl::unexpected(p.error());
  if (::mkdirat(p->fd, p->name.c_str(), 0700) == -1) {
    if (errno != EEXIST) return fail_errno("mkdir", r.path);
    struct stat st {};
    if (::fstatat(p->fd, p->name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == -1)
      return fail_errno("stat", r.path);
    if (!S_ISDIR(st.st_mode)) {  // a file or symlink is in the way: the source says dir
      if (Result<void> rm = target::remove_tree(p->fd, p->name); !rm) return rm;
      if (::mkdirat(p->fd, p->name.c_str(), 0700) == -1) return fail_errno("mkdir", r.path);
    }
  }
  if (Result<void> m = target::apply_meta_at(p->fd, p->name, r.meta); !m) return m;
  return touch(p->fd);
}

Result<void> Receiver::op_set_meta(const Request& r) {
  Result<Parent> p = locate(root_.get(), r.path, true);
  if (!p) return tl::unexpected(p.error());
  return target::apply_meta_at(p->fd, p->name, r.meta);
}

Result<void> Receiver::op_symlink(const Request& r) {
  if (r.path2.empty() || r.path2.size() > 4095 || r.path2.find('\0') != std::string::npos)
    return fail(EINVAL, "bad symlink text for " + quoted(r.path));
  Result<Parent> p = locate(root_.get(), r.path);
  if (!p) return tl::unexpected(p.error());
  forget_under(r.path);
  const std::string tmp = target::temp_name();
  if (::symlinkat(r.path2.c_str(), p->fd, tmp.c_str()) == -1) return fail_errno("symlink", r.path);
  return install_temp(p->fd, tmp, p->name, r.meta);
}

Result<void> Receiver::op_link(const Request& r) {
  Result<Parent> from = locate(root_.get(), r.path);
  if (!from) return tl::unexpected(from.error());
  Result<Parent> to = locate(root_.get(), r.path2);
  if (!to) return tl::unexpected(to.error());
  forget_under(r.path2);
  const std::string tmp = target::temp_name();
  if (::linkat(from->fd, from->name.c_str(), to->fd, tmp.c_str(), 0) == -1)
    return fail_errno("link", r.path + " -> " + r.path2);
  Result<void> done = target::replace_with(to->fd, tmp, to->fd, to->name);
  // rename() between two names of one inode does nothing: drop the temp name.
  (void)::unlinkat(to->fd, tmp.c_str(), 0);
  if (!done) return done;
  return touch(to->fd);
}

Result<void> Receiver::op_mknod(const Request& r) {
  const mode_t type = r.meta.mode & S_IFMT;
  if (type != S_IFIFO && type != S_IFSOCK && type != S_IFCHR && type != S_IFBLK)
    return fail(EINVAL, "mknod: not a fifo, socket or device: " + quoted(r.path));
  Result<Parent> p = locate(root_.get(), r.path);
  if (!p) return tl::unexpected(p.error());
  forget_under(r.path);
  const std::string tmp = target::temp_name();
  if (::mknodat(p->fd, tmp.c_str(), type | 0600, static_cast<dev_t>(r.offset)) == -1)
    return fail_errno("mknod", r.path);
  return install_temp(p->fd, tmp, p->name, r.meta);
}

Result<void> Receiver::install_temp(int parent_fd, const std::string& tmp, const std::string& name,
                                    const Meta& meta) {
  Result<void> done = target::apply_meta_at(parent_fd, tmp, meta);
  if (done) done = target::replace_with(parent_fd, tmp, parent_fd, name);
  if (!done) {
    (void)::unlinkat(parent_fd, tmp.c_str(), 0);
    return done;
  }
  return touch(parent_fd);
}

Result<void> Receiver::op_rename(const Request& r) {
  if ((r.flags & ~static_cast<std::uint32_t>(RENAME_NOREPLACE | RENAME_EXCHANGE)) != 0 ||
      r.flags == (RENAME_NOREPLACE | RENAME_EXCHANGE))
    return fail(EINVAL, "rename: bad flags " + std::to_string(r.flags));
  Result<Parent> from = locate(root_.get(), r.path);
  if (!from) return tl::unexpected(from.error());
  Result<Parent> to = locate(root_.get(), r.path2);
  if (!to) return tl::unexpected(to.error());
  auto once = [&] {
    return ::renameat2(from->fd, from->name.c_str(), to->fd, to->name.c_str(), r.flags);
  };
  if (once() == -1) {
    const int e = errno;
    // The source's rename succeeded, so what is in the way on the target is
    // stale (a non-empty directory, or a directory where a file goes).
    if (r.flags != 0 || (e != ENOTEMPTY && e != EEXIST && e != EISDIR && e != ENOTDIR))
      return fail_errno("rename", r.path + " -> " + r.path2);
    if (Result<void> rm = target::remove_tree(to->fd, to->name); !rm) return rm;
    if (once() == -1) return fail_errno("rename", r.path + " -> " + r.path2);
  }
  if (r.flags & RENAME_EXCHANGE) {
    rekey(r.path, r.path2, true);
  } else {
    forget_under(r.path2);
    rekey(r.path, r.path2, false);
  }
  if (Result<void> t = touch(from->fd); !t) return t;
  return touch(to->fd);
}

Result<void> Receiver::op_remove(const Request& r) {
  Result<Parent> p = locate(root_.get(), r.path);
  if (!p) {
    if (p.error().code == ENOENT) return {};  // a parent is already gone
    return tl::unexpected(p.error());
  }
  forget_under(r.path);
  if (Result<void> rm = target::remove_tree(p->fd, p->name); !rm) return rm;
  return touch(p->fd);
}

Result<std::string> Receiver::op_stat(const Request& r) {
  Result<Parent> p = locate(root_.get(), r.path, true);
  if (!p) return tl::unexpected(p.error());
  Result<StatInfo> s = target::stat_at(p->fd, p->name);
  if (!s) return tl::unexpected(s.error());
  return encode_stat(*s);
}

Result<void> Receiver::op_barrier() {
  Result<void> first_error;
  for (auto& [key, fd] : dirty_) {
    if (::fsync(fd.get()) == -1 && errno != EINVAL && first_error)
      first_error = fail_errno("fsync", "barrier");
  }
  dirty_.clear();
  signed_.clear();
  return first_error;
}

Result<void> Receiver::touch(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) == -1) return fail_errno("fstat", "touched");
  if (dirty_.count({st.st_dev, st.st_ino}) != 0) return {};
  const int dup = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dup < 0) return fail_errno("dup", "touched");
  return touch_owned(Fd(dup));
}

Result<void> Receiver::touch_owned(Fd fd) {
  struct stat st {};
  if (::fstat(fd.get(), &st) == -1) return fail_errno("fstat", "touched");
  if (dirty_.size() >= 1024) {
    // Bound the fds held: sync what is pending now rather than run out.
    if (Result<void> r = op_barrier(); !r) return r;
  }
  dirty_.try_emplace({st.st_dev, st.st_ino}, std::move(fd));
  return {};
}

namespace {
bool at_or_under(const std::string& key, const std::string& path) {
  return key == path || (key.size() > path.size() && key.compare(0, path.size(), path) == 0 &&
                         key[path.size()] == '/');
}

template <class Map>
void rekey_map(Map& m, const std::string& from, const std::string& to, bool exchange) {
  Map moved;
  for (auto it = m.begin(); it != m.end();) {
    std::string key;
    if (at_or_under(it->first, from)) key = to + it->first.substr(from.size());
    else if (exchange && at_or_under(it->first, to)) key = from + it->first.substr(to.size());
    if (key.empty()) {
      ++it;
      continue;
    }
    moved.insert_or_assign(std::move(key), std::move(it->second));
    it = m.erase(it);
  }
  for (auto& [k, v] : moved) m.insert_or_assign(k, std::move(v));
}
}  // namespace

void Receiver::forget_under(const std::string& path) {
  for (auto it = staged_.begin(); it != staged_.end();) {
    if (!at_or_under(it->first, path)) { ++it; continue; }
    (void)::unlinkat(it->second.dir.get(), it->second.tmp.c_str(), 0);
    it = staged_.erase(it);
  }
  for (auto it = patching_.begin(); it != patching_.end();) {
    if (!at_or_under(it->first, path)) { ++it; continue; }
    (void)::unlinkat(it->second.dir.get(), it->second.tmp.c_str(), 0);
    it = patching_.erase(it);
  }
}

void Receiver::rekey(const std::string& from, const std::string& to, bool exchange) {
  rekey_map(staged_, from, to, exchange);
  rekey_map(patching_, from, to, exchange);
}

}  // namespace mirrorfs::replicate
