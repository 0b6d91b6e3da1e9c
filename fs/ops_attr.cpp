// Attribute family: lookup, forget, getattr, setattr, readlink, statfs.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <climits>
#include <optional>

#include "fs/context.hpp"

namespace mirrorfs::fs {

void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  guarded(req, "lookup", [&]() -> Result<void> {
    Context& c = ctx(req);
    auto rel = child_path(c, parent, name);
    if (!rel) return tl::unexpected(rel.error());
    fuse_entry_param e;
    if (auto r = make_entry(c, parent, name, *rel, e); !r) return r;
    fuse_reply_entry(req, &e);
    return {};
  });
}

void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  ctx(req).inodes.forget(ino, nlookup);
  fuse_reply_none(req);
}

void op_forget_multi(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  for (size_t i = 0; i < count; ++i) ctx(req).inodes.forget(forgets[i].ino, forgets[i].nlookup);
  fuse_reply_none(req);
}

namespace {

// How to reach a node for an attribute call: by its path, or, when it has no
// name left (unlinked while open), through an open descriptor: the kernel's
// own handle if it sent one, else a duplicate of any open file of the node.
struct Target {
  std::optional<std::string> path;  // set when the node has a name
  int fd = -1;                      // usable descriptor, or -1: use the path
  Fd owned;                         // keeps a duplicate alive
};

Result<Target> target_of(Context& c, fuse_ino_t ino, const fuse_file_info* fi) {
  Target t;
  t.path = c.inodes.path(ino);
  if (fi != nullptr) {
    t.fd = static_cast<int>(fi->fh);
  } else if (!t.path) {
    t.owned.reset(c.inodes.dup_open_fd(ino));
    if (!t.owned.valid()) return fail(ESTALE, "node " + std::to_string(ino) + " has no name");
    t.fd = t.owned.get();
  }
  return t;
}

Result<struct stat> stat_target(Context& c, const Target& t) {
  struct stat st {};
  const int rc = t.fd >= 0 ? ::fstat(t.fd, &st)
                           : ::fstatat(c.root.get(), at_path(*t.path), &st, AT_SYMLINK_NOFOLLOW);
  if (rc == -1) return fail_errno("lstat", t.path.value_or("(unlinked)"));
  return st;
}

}  // namespace

void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  guarded(req, "getattr", [&]() -> Result<void> {
    Context& c = ctx(req);
    auto t = target_of(c, ino, fi);
    if (!t) return tl::unexpected(t.error());
    auto st = stat_target(c, *t);
    if (!st) return tl::unexpected(st.error());
    fuse_reply_attr(req, &*st, c.tuning.attr_timeout);
    return {};
  });
}

namespace {

timespec time_arg(int to_set, int set_flag, int now_flag, const timespec& value) {
  if (to_set & now_flag) return timespec{0, UTIME_NOW};
  if (to_set & set_flag) return value;
  return timespec{0, UTIME_OMIT};
}

// Truncates through the open handle when the kernel gave one, else by path.
Result<void> set_size(Context& c, const std::string& rel, int fd_or_minus1, off_t size) {
  if (fd_or_minus1 >= 0) {
    if (::ftruncate(fd_or_minus1, size) == -1) return fail_errno("ftruncate", rel);
    return {};
  }
  Fd fd(::openat(c.root.get(), at_path(rel), O_WRONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd.valid()) return fail_errno("open for truncate", rel);
  if (::ftruncate(fd.get(), size) == -1) return fail_errno("ftruncate", rel);
  return {};
}

Result<void> apply_setattr(Context& c, const Target& t, const struct stat& attr, int to_set) {
  const int fd = t.fd;
  const std::string rel = t.path.value_or(std::string());
  const int root = c.root.get();
  Stamp s = fd >= 0 ? pre_fd(c, fd) : pre_at(c, rel);
  if (to_set & FUSE_SET_ATTR_MODE) {
    const int rc = fd >= 0 ? ::fchmod(fd, attr.st_mode)
                           : ::fchmodat(root, at_path(rel), attr.st_mode, 0);
    if (rc == -1) return fail_errno("chmod", rel);
  }
  if (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
    const uid_t uid = (to_set & FUSE_SET_ATTR_UID) ? attr.st_uid : static_cast<uid_t>(-1);
    const gid_t gid = (to_set & FUSE_SET_ATTR_GID) ? attr.st_gid : static_cast<gid_t>(-1);
    const int rc = fd >= 0 ? ::fchown(fd, uid, gid)
                           : ::fchownat(root, at_path(rel), uid, gid, AT_SYMLINK_NOFOLLOW);
    if (rc == -1) return fail_errno("chown", rel);
  }
  if ((to_set & ~FUSE_SET_ATTR_CTIME) == 0) {
    // chown(f, -1, -1) and friends: nothing to set, but the caller expects
    // the backing filesystem's ctime update, which a no-op chown gives.
    const int rc = fd >= 0 ? ::fchown(fd, static_cast<uid_t>(-1), static_cast<gid_t>(-1))
                           : ::fchownat(root, at_path(rel), static_cast<uid_t>(-1),
                                        static_cast<gid_t>(-1), AT_SYMLINK_NOFOLLOW);
    if (rc == -1) return fail_errno("chown", rel);
  }
  if (to_set & FUSE_SET_ATTR_SIZE) {
    if (auto r = set_size(c, rel, fd, attr.st_size); !r) return r;
    if (t.path) {  // reported at once: a later step may fail, the truncate stays
      Stamp ds = s;
      if (fd >= 0) {
        post_fd(c, fd, ds);
      } else {
        post_at(c, rel, ds);
      }
      report(c, ChangeKind::Data, rel, {}, static_cast<std::uint64_t>(attr.st_size),
             Change::kToEnd, 0, ds);
    }
  }
  if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) {
    const timespec tv[2] = {
        time_arg(to_set, FUSE_SET_ATTR_ATIME, FUSE_SET_ATTR_ATIME_NOW, attr.st_atim),
        time_arg(to_set, FUSE_SET_ATTR_MTIME, FUSE_SET_ATTR_MTIME_NOW, attr.st_mtim)};
    const int rc = fd >= 0 ? ::futimens(fd, tv)
                           : ::utimensat(root, at_path(rel), tv, AT_SYMLINK_NOFOLLOW);
    if (rc == -1) return fail_errno("utimens", rel);
  }
  if (!t.path) return {};
  if (fd >= 0) {
    post_fd(c, fd, s);
  } else {
    post_at(c, rel, s);
  }
  if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID |
                FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME))
    report(c, ChangeKind::Meta, rel, {}, 0, 0, 0, s);
  return {};
}

}  // namespace

void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set,
                fuse_file_info* fi) {
  guarded(req, "setattr", [&]() -> Result<void> {
    Context& c = ctx(req);
    auto t = target_of(c, ino, fi);
    if (!t) return tl::unexpected(t.error());
    if (auto r = apply_setattr(c, *t, *attr, to_set); !r) return r;
    auto st = stat_target(c, *t);
    if (!st) return tl::unexpected(st.error());
    fuse_reply_attr(req, &*st, c.tuning.attr_timeout);
    return {};
  });
}

void op_readlink(fuse_req_t req, fuse_ino_t ino) {
  guarded(req, "readlink", [&]() -> Result<void> {
    Context& c = ctx(req);
    auto rel = node_path(c, ino);
    if (!rel) return tl::unexpected(rel.error());
    char buf[PATH_MAX + 1];
    const ssize_t n = ::readlinkat(c.root.get(), at_path(*rel), buf, sizeof buf - 1);
    if (n == -1) return fail_errno("readlink", *rel);
    buf[n] = '\0';
    fuse_reply_readlink(req, buf);
    return {};
  });
}

void op_statfs(fuse_req_t req, fuse_ino_t /*ino*/) {
  guarded(req, "statfs", [&]() -> Result<void> {
    struct statvfs sv {};
    if (::fstatvfs(ctx(req).root.get(), &sv) == -1) return fail_errno("statfs", "");
    fuse_reply_statfs(req, &sv);
    return {};
  });
}

}  // namespace mirrorfs::fs
