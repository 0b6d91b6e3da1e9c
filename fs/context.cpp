#include "fs/context.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cstring>

namespace mirrorfs::fs {

Result<std::string> node_path(Context& c, fuse_ino_t ino) {
  if (auto p = c.inodes.path(ino)) return std::move(*p);
  return fail(ESTALE, "node " + std::to_string(ino) + " has no known name");
}

Result<std::string> child_path(Context& c, fuse_ino_t parent, const char* name) {
  if (auto p = c.inodes.child_path(parent, name)) return std::move(*p);
  return fail(ESTALE, "parent node " + std::to_string(parent) + " has no known name");
}

void report(Context& c, ChangeKind kind, std::string path, std::string to_path,
            std::uint64_t offset, std::uint64_t length, std::uint32_t flags, Stamp stamp) {
  c.sink->record(Change{kind, std::move(path), std::move(to_path), offset, length, flags, stamp});
}

namespace {
std::int64_t ctime_ns(const struct stat& st) {
  return static_cast<std::int64_t>(st.st_ctim.tv_sec) * 1'000'000'000 + st.st_ctim.tv_nsec;
}
}  // namespace

Stamp pre_fd(const Context& c, int fd) {
  Stamp s;
  struct stat st {};
  if (c.tuning.stamps && fd >= 0 && ::fstat(fd, &st) == 0) {
    s.ino = st.st_ino;
    // A directory's ctime moves with every entry made or removed in it, which
    // no stamp describes: its pre-ctime would prove nothing.
    s.ctime_before = S_ISDIR(st.st_mode) ? 0 : ctime_ns(st);
  }
  return s;
}

Stamp pre_at(const Context& c, const std::string& rel) {
  Stamp s;
  struct stat st {};
  if (c.tuning.stamps && ::fstatat(c.root.get(), at_path(rel), &st, AT_SYMLINK_NOFOLLOW) == 0) {
    s.ino = st.st_ino;
    // A directory's ctime moves with every entry made or removed in it, which
    // no stamp describes: its pre-ctime would prove nothing.
    s.ctime_before = S_ISDIR(st.st_mode) ? 0 : ctime_ns(st);
  }
  return s;
}

void post_stat(const Context& c, const struct stat& st, Stamp& s) {
  if (!c.tuning.stamps) return;
  if (s.ino != 0 && s.ino != st.st_ino) s.ctime_before = 0;  // another object now
  s.ino = st.st_ino;
  s.ctime_after = ctime_ns(st);
}

void post_fd(const Context& c, int fd, Stamp& s) {
  struct stat st {};
  if (c.tuning.stamps && fd >= 0 && ::fstat(fd, &st) == 0) post_stat(c, st, s);
}

void post_at(const Context& c, const std::string& rel, Stamp& s) {
  struct stat st {};
  if (c.tuning.stamps && ::fstatat(c.root.get(), at_path(rel), &st, AT_SYMLINK_NOFOLLOW) == 0)
    post_stat(c, st, s);
}

Result<void> make_entry(Context& c, fuse_ino_t parent, const char* name, const std::string& rel,
                        fuse_entry_param& e) {
  e = fuse_entry_param{};
  if (::fstatat(c.root.get(), at_path(rel), &e.attr, AT_SYMLINK_NOFOLLOW) == -1)
    return fail_errno("lstat", rel);
  e.attr_timeout = c.tuning.attr_timeout;
  e.entry_timeout = c.tuning.entry_timeout;
  e.ino = c.inodes.remember(parent, name, e.attr);
  return {};
}

Result<void> own_new_entry(Context& c, fuse_req_t req, fuse_ino_t parent, const std::string& rel,
                           int fd) {
  if (!c.is_root) return {};
  const fuse_ctx* caller = fuse_req_ctx(req);
  if (caller->uid == 0 && caller->gid == 0) return {};
  gid_t gid = caller->gid;
  // A set-group-ID directory hands its group down; the kernel already did that.
  struct stat dir {};
  if (auto dp = node_path(c, parent); dp && ::fstatat(c.root.get(), at_path(*dp), &dir, 0) == 0 &&
                                      (dir.st_mode & S_ISGID))
    gid = static_cast<gid_t>(-1);
  const int rc = fd >= 0 ? ::fchown(fd, caller->uid, gid)
                         : ::fchownat(c.root.get(), at_path(rel), caller->uid, gid,
                                      AT_SYMLINK_NOFOLLOW);
  if (rc == -1) return fail_errno("chown new entry", rel);
  return {};
}

void log_op_error(Context& c, const char* op, const Error& e) {
  switch (e.code) {
    case ENOENT: case EEXIST: case ENOTEMPTY: case ENODATA: case EACCES: case EPERM:
    case ENOTDIR: case EISDIR: case EINVAL: case ENAMETOOLONG: case ELOOP: case ENOTSUP:
    case ERANGE: case EXDEV: case ENOSPC: case EDQUOT: case EROFS:
    case ESTALE:  // a node whose every name was replaced: the kernel looks it up again
      c.log->debug("{}: {}: {}", op, e.what, std::strerror(e.code));
      break;
    default:
      c.log->warn("{}: {}: {}", op, e.what, std::strerror(e.code));
  }
}

}  // namespace mirrorfs::fs
