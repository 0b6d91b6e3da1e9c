// Receiver: List, the target half of the startup reconcile. One request
// lists one directory (confined like every other op: the directory is
// reached through target::locate and opened O_NOFOLLOW beneath the root),
// with optional content checksums of its regular files.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "replicate/receiver.hpp"

namespace mirrorfs::replicate {

namespace target {
namespace {

FileType list_type(mode_t mode) {
  if (S_ISREG(mode)) return FileType::Regular;
  if (S_ISDIR(mode)) return FileType::Directory;
  if (S_ISLNK(mode)) return FileType::Symlink;
  return FileType::Other;
}

// One entry; ENOENT if it vanished since readdir (the caller skips it).
Result<ListEntry> entry_at(int dir, const std::string& name, bool checksums) {
  struct stat st {};
  if (::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == -1) return fail_errno("stat", name);
  ListEntry e;
  e.name = name;
  e.type = list_type(st.st_mode);
  e.size = static_cast<std::uint64_t>(st.st_size);
  e.mode = st.st_mode;
  e.uid = st.st_uid;
  e.gid = st.st_gid;
  e.mtime_sec = st.st_mtim.tv_sec;
  e.mtime_nsec = static_cast<std::uint32_t>(st.st_mtim.tv_nsec);
  e.nlink = st.st_nlink;
  if (S_ISLNK(st.st_mode)) {
    std::string buf(4096, '\0');
    const ssize_t n = ::readlinkat(dir, name.c_str(), buf.data(), buf.size());
    if (n < 0) return fail_errno("readlink", name);
    buf.resize(static_cast<std::size_t>(n));
    e.symlink = std::move(buf);
  } else if (S_ISREG(st.st_mode) && checksums) {
    Result<Fd> f = open_regular(dir, name, O_RDONLY);
    if (!f) return tl::unexpected(f.error());
    Result<std::uint64_t> h = xxh64_fd(f->get(), name);
    if (!h) return tl::unexpected(h.error());
    e.has_checksum = true;
    e.checksum = *h;
  }
  return e;
}

}  // namespace

Result<std::string> list_dir(int dir_fd, const std::string& path, bool checksums,
                             std::size_t max_bytes) {
  const int dup = ::fcntl(dir_fd, F_DUPFD_CLOEXEC, 0);
  if (dup < 0) return fail_errno("dup", path);
  DIR* d = ::fdopendir(dup);
  if (d == nullptr) {
    ::close(dup);
    return fail_errno("opendir", path);
  }
  const std::unique_ptr<DIR, int (*)(DIR*)> guard(d, ::closedir);
  ::rewinddir(d);  // the dup shares dir_fd's offset: start from the first entry
  std::string body;
  std::uint32_t count = 0;
  std::size_t total = 4;
  while (true) {
    errno = 0;
    const dirent* de = ::readdir(d);
    if (de == nullptr) {
      if (errno != 0) return fail_errno("readdir", path);
      break;
    }
    const std::string name = de->d_name;
    if (name == "." || name == "..") continue;
    Result<ListEntry> e = entry_at(dir_fd, name, checksums);
    if (!e) {
      if (e.error().code == ENOENT) continue;  // gone since readdir
      return fail(e.error().code, e.error().what + " in " + quoted(path));
    }
    total += list_entry_size(*e);
    if (total > max_bytes)
      return fail(E2BIG, "listing of " + quoted(path) + " exceeds " + std::to_string(max_bytes) + " bytes");
    encode_list_entry(*e, body);
    ++count;
  }
  std::string out;
  out.reserve(body.size() + 4);
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((count >> (8 * i)) & 0xffu));
  out += body;
  return out;
}

}  // namespace target

Result<std::string> Receiver::op_list(const Request& r) {
  if ((r.flags & ~kListChecksums) != 0) return fail(EINVAL, "list: bad flags " + std::to_string(r.flags));
  Result<target::Parent> p = target::locate(root_.get(), r.path, true);
  if (!p) return tl::unexpected(p.error());
  Fd dir(::openat(p->fd, p->name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!dir.valid()) return fail_errno("open directory", r.path);
  // Room for the reply frame around the listing (errno, message, lengths).
  constexpr std::size_t kReplyOverhead = 4096;
  return target::list_dir(dir.get(), r.path, (r.flags & kListChecksums) != 0,
                          kMaxFrame - kReplyOverhead);
}

}  // namespace mirrorfs::replicate
