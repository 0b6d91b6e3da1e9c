// Confined path handling for the receiver: validation, beneath-the-root
// resolution with openat2, regular-file opens that cannot be tricked into a
// symlink or a device, temp files, tree removal.
#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "replicate/receiver.hpp"

namespace mirrorfs::replicate::target {
namespace {

constexpr std::size_t kMaxPath = 4095, kMaxName = 255;
constexpr int kMaxDepth = 2048;

Result<Fd> openat2_beneath(int root, const std::string& rel, int flags) {
  open_how how{};
  how.flags = static_cast<std::uint64_t>(flags | O_CLOEXEC);
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  for (int attempt = 0;; ++attempt) {
    const long fd = ::syscall(SYS_openat2, root, rel.c_str(), &how, sizeof how);
    if (fd >= 0) return Fd(static_cast<int>(fd));
    // EAGAIN: a concurrent rename raced the beneath check; retry a little.
    if ((errno == EAGAIN || errno == EINTR) && attempt < 16) continue;
    return fail_errno("openat2", rel);
  }
}

std::vector<std::string> list_names(int dirfd, int& err) {
  std::vector<std::string> names;
  err = 0;
  const int dup = ::fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
  if (dup < 0) {
    err = errno;
    return names;
  }
  DIR* d = ::fdopendir(dup);
  if (d == nullptr) {
    err = errno;
    ::close(dup);
    return names;
  }
  errno = 0;
  while (const dirent* e = ::readdir(d)) {
    const std::string_view n = e->d_name;
    if (n != "." && n != "..") names.emplace_back(n);
    errno = 0;
  }
  err = errno;
  ::closedir(d);
  return names;
}

Result<void> remove_rec(int dir, const std::string& name, int depth) {
  if (depth > kMaxDepth) return fail(ELOOP, "remove: tree too deep at " + quoted(name));
  for (int attempt = 0; attempt < 4; ++attempt) {
    if (::unlinkat(dir, name.c_str(), 0) == 0 || errno == ENOENT) return {};
    if (errno != EISDIR && errno != EPERM) return fail_errno("unlinkat", name);
    const int fd = ::openat(dir, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT) return {};
      if (errno == ENOTDIR || errno == ELOOP) continue;  // swapped for a non-dir: unlink again
      return fail_errno("open dir", name);
    }
    const Fd sub(fd);
    int err = 0;
    for (const std::string& child : list_names(sub.get(), err))
      if (Result<void> r = remove_rec(sub.get(), child, depth + 1); !r) return r;
    if (err != 0) return fail(err, "readdir " + quoted(name));
    if (::unlinkat(dir, name.c_str(), AT_REMOVEDIR) == 0 || errno == ENOENT) return {};
    if (errno != ENOTEMPTY && errno != ENOTDIR) return fail_errno("rmdir", name);
  }
  return fail(EBUSY, "remove " + quoted(name) + ": keeps changing");
}

}  // namespace

Result<void> check_path(std::string_view path) {
  if (path.size() > kMaxPath) return fail(ENAMETOOLONG, "path too long");
  if (path.empty()) return fail(EINVAL, "empty path");
  if (path.find('\0') != std::string_view::npos) return fail(EINVAL, "NUL in path " + quoted(path));
  if (path.front() == '/') return fail(EINVAL, "absolute path " + quoted(path));
  std::size_t start = 0;
  for (;;) {
    const std::size_t slash = path.find('/', start);
    const std::string_view comp = path.substr(start, slash - start);
    if (comp.empty() || comp == "." || comp == "..")
      return fail(EINVAL, "bad component in path " + quoted(path));
    if (comp.size() > kMaxName) return fail(ENAMETOOLONG, "name too long in " + quoted(path));
    if (slash == std::string_view::npos) return {};
    start = slash + 1;
  }
}

Result<Parent> locate(int root, std::string_view path, bool allow_root) {
  Parent p;
  if (path.empty() && allow_root) {
    p.fd = root;
    p.name = ".";
    return p;
  }
  if (Result<void> ok = check_path(path); !ok) return tl::unexpected(ok.error());
  const std::size_t slash = path.rfind('/');
  if (slash == std::string_view::npos) {
    p.fd = root;
    p.name = std::string(path);
    return p;
  }
  Result<Fd> dir = openat2_beneath(root, std::string(path.substr(0, slash)), O_RDONLY | O_DIRECTORY);
  if (!dir) return tl::unexpected(dir.error());
  p.owned = std::move(*dir);
  p.fd = p.owned.get();
  p.name = std::string(path.substr(slash + 1));
  return p;
}

Result<Fd> open_regular(int dir, const std::string& name, int flags) {
  const int pfd = ::openat(dir, name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (pfd < 0) return fail_errno("open", name);
  const Fd path_fd(pfd);
  struct stat st {};
  if (::fstat(pfd, &st) == -1) return fail_errno("fstat", name);
  if (!S_ISREG(st.st_mode)) return fail(S_ISDIR(st.st_mode) ? EISDIR : EINVAL,
                                        "not a regular file: " + quoted(name));
  // The O_PATH fd pins the inode: reopening through /proc cannot land elsewhere.
  const std::string proc = "/proc/self/fd/" + std::to_string(pfd);
  const int fd = ::open(proc.c_str(), (flags & ~O_CREAT & ~O_TRUNC) | O_CLOEXEC);
  if (fd < 0) return fail_errno("reopen", name);
  return Fd(fd);
}

std::string temp_name() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(rng()));
  return std::string(kTempPrefix) + buf;
}

Result<Fd> create_temp(int dir, std::string& tmp_name) {
  for (int attempt = 0; attempt < 8; ++attempt) {
    tmp_name = temp_name();
    const int fd = ::openat(dir, tmp_name.c_str(),
                            O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd >= 0) return Fd(fd);
    if (errno != EEXIST) return fail_errno("create temp", tmp_name);
  }
  return fail(EEXIST, "create temp: no free name");
}

Result<void> remove_tree(int dir, const std::string& name) { return remove_rec(dir, name, 0); }

Result<void> replace_with(int tmp_dir, const std::string& tmp, int dir, const std::string& name) {
  if (::renameat(tmp_dir, tmp.c_str(), dir, name.c_str()) == 0) return {};
  if (errno != EISDIR && errno != ENOTEMPTY && errno != EEXIST && errno != ENOTDIR)
    return fail_errno("rename", name);
  // A directory (or a file where we put a directory) is in the way: remove it.
  if (Result<void> r = remove_tree(dir, name); !r) return r;
  if (::renameat(tmp_dir, tmp.c_str(), dir, name.c_str()) == 0) return {};
  return fail_errno("rename", name);
}

Result<void> pwrite_all(int fd, std::string_view data, std::uint64_t offset) {
  constexpr auto kMaxOff = static_cast<std::uint64_t>(std::numeric_limits<off_t>::max());
  if (offset > kMaxOff || data.size() > kMaxOff - offset) return fail(EFBIG, "write past the limit");
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::pwrite(fd, data.data() + done, data.size() - done,
                               static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail_errno("pwrite", "at " + std::to_string(offset + done));
    }
    done += static_cast<std::size_t>(n);
  }
  return {};
}

Result<void> pwrite_zeros(int fd, std::uint64_t offset, std::uint64_t length) {
  const std::string zeros(std::size_t{64} << 10, '\0');
  for (std::uint64_t done = 0; done < length;) {
    const std::uint64_t n = std::min<std::uint64_t>(zeros.size(), length - done);
    if (Result<void> w = pwrite_all(fd, std::string_view(zeros).substr(0, n), offset + done); !w) return w;
    done += n;
  }
  return {};
}

}  // namespace mirrorfs::replicate::target
