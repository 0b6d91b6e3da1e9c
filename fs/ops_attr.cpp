// Attribute family: lookup, forget, getattr, setattr, readlink, statfs.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <climits>

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

void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  guarded(req, "getattr", [&]() -> Result<void> {
    Context& c = ctx(req);
    struct stat st {};
    if (fi != nullptr) {
      if (::fstat(static_cast<int>(fi->fh), &st) == -1) return fail_errno("fstat", "open file");
    } else {
      auto rel = node_path(c, ino);
      if (!rel) return tl::unexpected(rel.error());
      if (::fstatat(c.root.get(), at_path(*rel), &st, AT_SYMLINK_NOFOLLOW) == -1)
        return fail_errno("lstat", *rel);
    }
    fuse_reply_attr(req, &st, c.tuning.attr_timeout);
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
Result<void> set_size(Context& c, const std::string& rel, fuse_file_info* fi, off_t size) {
  if (fi != nullptr) {
    if (::ftruncate(static_cast<int>(fi->fh), size) == -1) return fail_errno("ftruncate", rel);
    return {};
  }
  Fd fd(::openat(c.root.get(), at_path(rel), O_WRONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd.valid()) return fail_errno("open for truncate", rel);
  if (::ftruncate(fd.get(), size) == -1) return fail_errno("ftruncate", rel);
  return {};
}

Result<void> apply_setattr(Context& c, const std::string& rel, const struct stat& attr,
                           int to_set, fuse_file_info* fi) {
  const int fd = fi != nullptr ? static_cast<int>(fi->fh) : -1;
  const int root = c.root.get();
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
  if (to_set & FUSE_SET_ATTR_SIZE) {
    if (auto r = set_size(c, rel, fi, attr.st_size); !r) return r;
    report(c, ChangeKind::Data, rel, {}, static_cast<std::uint64_t>(attr.st_size), Change::kToEnd);
  }
  if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) {
    const timespec tv[2] = {
        time_arg(to_set, FUSE_SET_ATTR_ATIME, FUSE_SET_ATTR_ATIME_NOW, attr.st_atim),
        time_arg(to_set, FUSE_SET_ATTR_MTIME, FUSE_SET_ATTR_MTIME_NOW, attr.st_mtim)};
    const int rc = fd >= 0 ? ::futimens(fd, tv)
                           : ::utimensat(root, at_path(rel), tv, AT_SYMLINK_NOFOLLOW);
    if (rc == -1) return fail_errno("utimens", rel);
  }
  if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID |
                FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME))
    report(c, ChangeKind::Meta, rel);
  return {};
}

}  // namespace

void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set,
                fuse_file_info* fi) {
  guarded(req, "setattr", [&]() -> Result<void> {
    Context& c = ctx(req);
    auto rel = node_path(c, ino);
    if (!rel && fi == nullptr) return tl::unexpected(rel.error());
    const std::string path = rel ? *rel : std::string();
    if (auto r = apply_setattr(c, path, *attr, to_set, fi); !r) return r;
    struct stat st {};
    const int rc = fi != nullptr ? ::fstat(static_cast<int>(fi->fh), &st)
                                 : ::fstatat(c.root.get(), at_path(path), &st, AT_SYMLINK_NOFOLLOW);
    if (rc == -1) return fail_errno("lstat", path);
    fuse_reply_attr(req, &st, c.tuning.attr_timeout);
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
