// Metadata on the target: owner, mode, mtime (ns) and xattrs, never through a
// symlink. Order matters: chown clears set-id bits, so chmod comes after it;
// xattr writes do not touch mtime, and times come last.
// Name-based xattr calls use "/proc/self/fd/<dir>/<name>" with the l*xattr
// family: the parent is pinned by its fd and the final name is not followed.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

#include "replicate/receiver.hpp"

namespace mirrorfs::replicate::target {
namespace {

bool ignorable_owner_error(int e) { return e == EPERM && ::geteuid() != 0; }

// The xattr primitives for one object, by fd or by pinned path.
struct XattrOps {
  int fd = -1;
  std::string path;
  [[nodiscard]] ssize_t list(char* buf, std::size_t n) const {
    return fd >= 0 ? ::flistxattr(fd, buf, n) : ::llistxattr(path.c_str(), buf, n);
  }
  [[nodiscard]] ssize_t get(const char* name, void* buf, std::size_t n) const {
    return fd >= 0 ? ::fgetxattr(fd, name, buf, n) : ::lgetxattr(path.c_str(), name, buf, n);
  }
  [[nodiscard]] int set(const Xattr& x) const {
    return fd >= 0 ? ::fsetxattr(fd, x.name.c_str(), x.value.data(), x.value.size(), 0)
                   : ::lsetxattr(path.c_str(), x.name.c_str(), x.value.data(), x.value.size(), 0);
  }
  [[nodiscard]] int remove(const char* name) const {
    return fd >= 0 ? ::fremovexattr(fd, name) : ::lremovexattr(path.c_str(), name);
  }
};

Result<std::vector<std::string>> list_xattrs(const XattrOps& ops) {
  for (int attempt = 0; attempt < 8; ++attempt) {
    const ssize_t size = ops.list(nullptr, 0);
    if (size < 0) {
      if (errno == ENOTSUP) return std::vector<std::string>{};
      return fail_errno("listxattr", ops.path);
    }
    std::string buf(static_cast<std::size_t>(size), '\0');
    const ssize_t got = ops.list(buf.data(), buf.size());
    if (got < 0 && errno == ERANGE) continue;  // grew in between
    if (got < 0) return fail_errno("listxattr", ops.path);
    std::vector<std::string> names;
    for (std::size_t i = 0; i < static_cast<std::size_t>(got);) {
      const std::size_t end = buf.find('\0', i);
      if (end == std::string::npos || end == i) break;
      names.push_back(buf.substr(i, end - i));
      i = end + 1;
    }
    return names;
  }
  return fail(EAGAIN, "listxattr: keeps changing");
}

Result<std::vector<Xattr>> read_xattrs(const XattrOps& ops) {
  Result<std::vector<std::string>> names = list_xattrs(ops);
  if (!names) return tl::unexpected(names.error());
  std::vector<Xattr> out;
  for (std::string& n : *names) {
    for (int attempt = 0; attempt < 8; ++attempt) {
      const ssize_t size = ops.get(n.c_str(), nullptr, 0);
      if (size < 0 && errno == ENODATA) break;
      if (size < 0) return fail_errno("getxattr " + n, ops.path);
      std::string value(static_cast<std::size_t>(size), '\0');
      const ssize_t got = ops.get(n.c_str(), value.data(), value.size());
      if (got < 0 && errno == ERANGE) continue;
      if (got < 0) return fail_errno("getxattr " + n, ops.path);
      value.resize(static_cast<std::size_t>(got));
      out.push_back({std::move(n), std::move(value)});
      break;
    }
  }
  std::sort(out.begin(), out.end(), [](const Xattr& a, const Xattr& b) { return a.name < b.name; });
  return out;
}

// Makes the object's xattrs exactly m.xattrs.
Result<void> sync_xattrs(const XattrOps& ops, const Meta& m) {
  if (!m.with_xattrs) return {};
  Result<std::vector<std::string>> have = list_xattrs(ops);
  if (!have) return tl::unexpected(have.error());
  for (const std::string& n : *have) {
    bool wanted = false;
    for (const Xattr& x : m.xattrs) wanted = wanted || x.name == n;
    if (wanted || ops.remove(n.c_str()) == 0 || errno == ENODATA) continue;
    // security.* labels may be managed by the target's own policy.
    if (n.rfind("security.", 0) == 0 && (errno == EPERM || errno == EACCES)) continue;
    return fail_errno("removexattr " + n, ops.path);
  }
  for (const Xattr& x : m.xattrs) {
    if (x.name.empty() || x.name.find('\0') != std::string::npos)
      return fail(EINVAL, "bad xattr name " + quoted(x.name));
    if (ops.set(x) == -1) return fail_errno("setxattr " + quoted(x.name), ops.path);
  }
  return {};
}

void mtime_of(const Meta& m, timespec (&ts)[2]) {
  ts[0].tv_sec = 0;
  ts[0].tv_nsec = UTIME_OMIT;  // atime is not replicated
  ts[1].tv_sec = static_cast<time_t>(m.mtime_sec);
  ts[1].tv_nsec = static_cast<long>(m.mtime_nsec % 1'000'000'000u);
}

FileType type_of(mode_t mode) {
  if (S_ISREG(mode)) return FileType::Regular;
  if (S_ISDIR(mode)) return FileType::Directory;
  if (S_ISLNK(mode)) return FileType::Symlink;
  return FileType::Other;
}

}  // namespace

Result<void> apply_meta_fd(int fd, const Meta& m) {
  if (m.mode == 0) return {};
  if (m.with_owner && ::fchown(fd, m.uid, m.gid) == -1 && !ignorable_owner_error(errno))
    return fail_errno("fchown", "staged file");
  if (::fchmod(fd, m.mode & 07777) == -1) return fail_errno("fchmod", "staged file");
  if (Result<void> r = sync_xattrs({fd, "staged file"}, m); !r) return r;
  timespec ts[2];
  mtime_of(m, ts);
  if (::futimens(fd, ts) == -1) return fail_errno("futimens", "staged file");
  return {};
}

Result<void> apply_meta_at(int dir, const std::string& name, const Meta& m) {
  if (m.mode == 0) return {};
  struct stat st {};
  if (::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == -1) return fail_errno("stat", name);
  if (m.with_owner && ::fchownat(dir, name.c_str(), m.uid, m.gid, AT_SYMLINK_NOFOLLOW) == -1 &&
      !ignorable_owner_error(errno))
    return fail_errno("chown", name);
  // Symlinks have no mode of their own. For anything else glibc's NOFOLLOW
  // chmod checks the type on an O_PATH fd: a symlink swapped in meanwhile
  // gets EOPNOTSUPP, never a chmod of its target.
  if (!S_ISLNK(st.st_mode) &&
      ::fchmodat(dir, name.c_str(), m.mode & 07777, AT_SYMLINK_NOFOLLOW) == -1 &&
      errno != EOPNOTSUPP)
    return fail_errno("chmod", name);
  const XattrOps ops{-1, "/proc/self/fd/" + std::to_string(dir) + "/" + name};
  if (Result<void> r = sync_xattrs(ops, m); !r) return r;
  timespec ts[2];
  mtime_of(m, ts);
  if (::utimensat(dir, name.c_str(), ts, AT_SYMLINK_NOFOLLOW) == -1)
    return fail_errno("utimensat", name);
  return {};
}

Result<StatInfo> stat_at(int dir, const std::string& name) {
  struct stat st {};
  if (::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == -1) return fail_errno("stat", name);
  StatInfo s;
  s.type = type_of(st.st_mode);
  s.size = static_cast<std::uint64_t>(st.st_size);
  s.nlink = st.st_nlink;
  s.rdev = st.st_rdev;
  s.meta.mode = st.st_mode;
  s.meta.uid = st.st_uid;
  s.meta.gid = st.st_gid;
  s.meta.mtime_sec = st.st_mtim.tv_sec;
  s.meta.mtime_nsec = static_cast<std::uint32_t>(st.st_mtim.tv_nsec);
  s.meta.with_xattrs = true;
  Result<std::vector<Xattr>> xs =
      read_xattrs({-1, "/proc/self/fd/" + std::to_string(dir) + "/" + name});
  if (!xs) return tl::unexpected(xs.error());
  s.meta.xattrs = std::move(*xs);
  if (S_ISLNK(st.st_mode)) {
    std::string buf(4096, '\0');
    const ssize_t n = ::readlinkat(dir, name.c_str(), buf.data(), buf.size());
    if (n < 0) return fail_errno("readlink", name);
    buf.resize(static_cast<std::size_t>(n));
    s.symlink = std::move(buf);
  }
  return s;
}

}  // namespace mirrorfs::replicate::target
