// Receiver: file content. Staged files (BeginFile..CommitFile), in-place
// writes, librsync deltas (streamed into a temp, then renamed), signatures
// and checksums. Every open of an existing file goes through
// target::open_regular, so a symlink, fifo or device at the path is refused.
#include <fcntl.h>
#include <sys/stat.h>
#include <xxhash.h>

#include <vector>

#include "replicate/receiver.hpp"

namespace mirrorfs::replicate {

using target::locate;
using target::Parent;

namespace {

constexpr std::uint64_t kMaxOffset = static_cast<std::uint64_t>(std::numeric_limits<off_t>::max());

Result<void> sync_fd(int fd, const std::string& path) {
  if (::fsync(fd) == -1) return fail_errno("fsync", path);
  return {};
}

Receiver::Basis basis_of(const struct stat& st) {
  Receiver::Basis b;
  b.present = true;
  b.dev = st.st_dev;
  b.ino = st.st_ino;
  b.size = st.st_size;
  b.mtime = st.st_mtim;
  b.ctime = st.st_ctim;
  return b;
}

bool same_basis(const Receiver::Basis& a, const Receiver::Basis& b) {
  if (a.present != b.present) return false;
  return !a.present ||
         (a.dev == b.dev && a.ino == b.ino && a.size == b.size && a.mtime.tv_sec == b.mtime.tv_sec &&
          a.mtime.tv_nsec == b.mtime.tv_nsec && a.ctime.tv_sec == b.ctime.tv_sec &&
          a.ctime.tv_nsec == b.ctime.tv_nsec);
}

}  // namespace

namespace target {
Result<std::uint64_t> xxh64_fd(int fd, const std::string& path, bool layout) {
  XXH64_state_t* st = XXH64_createState();
  if (st == nullptr) return fail(ENOMEM, "xxh64 state");
  const std::unique_ptr<XXH64_state_t, XXH_errorcode (*)(XXH64_state_t*)> guard(st, XXH64_freeState);
  XXH64_reset(st, 0);
  std::vector<char> buf(256 * 1024);
  off_t off = 0;
  for (;;) {
    const ssize_t n = ::pread(fd, buf.data(), buf.size(), off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail_errno("read", path);
    if (n == 0) break;
    XXH64_update(st, buf.data(), static_cast<std::size_t>(n));
    off += n;
  }
  // The data extents, as (start, end) pairs: equal content with holes in
  // other places hashes differently.
  for (off_t pos = 0; layout && pos < off;) {
    const off_t data = ::lseek(fd, pos, SEEK_DATA);
    if (data < 0) break;  // ENXIO: only a hole is left
    off_t hole = ::lseek(fd, data, SEEK_HOLE);
    if (hole < 0 || hole > off) hole = off;
    const std::uint64_t ext[2] = {static_cast<std::uint64_t>(data), static_cast<std::uint64_t>(hole)};
    XXH64_update(st, ext, sizeof ext);
    pos = hole;
  }
  return XXH64_digest(st);
}
}  // namespace target
using target::xxh64_fd;

Result<void> Receiver::op_begin(const Request& r) {
  Result<Parent> p = locate(root_.get(), r.path);
  if (!p) return tl::unexpected(p.error());
  forget_under(r.path);  // a new stage replaces an unfinished one
  Staged s;
  Result<Fd> file = target::create_temp(p->fd, s.tmp);
  if (!file) return tl::unexpected(file.error());
  s.file = std::move(*file);
  s.dir = p->owned.valid() ? std::move(p->owned) : Fd(::fcntl(p->fd, F_DUPFD_CLOEXEC, 0));
  if (!s.dir.valid()) {
    (void)::unlinkat(p->fd, s.tmp.c_str(), 0);
    return fail_errno("dup", r.path);
  }
  staged_.insert_or_assign(r.path, std::move(s));
  return {};
}

Result<void> Receiver::op_write(const Request& r) {
  if (auto it = staged_.find(r.path); it != staged_.end())
    return target::pwrite_all(it->second.file.get(), r.data, r.offset);
  Result<Parent> p = locate(root_.get(), r.path);
  if (!p) return tl::unexpected(p.error());
  Result<Fd> f = target::open_regular(p->fd, p->name, O_WRONLY);
  if (!f) return tl::unexpected(f.error());
  // pwrite at the offset: a gap the sender skipped past EOF stays a hole.
  if (Result<void> w = target::pwrite_all(f->get(), r.data, r.offset); !w) return w;
  return touch_owned(std::move(*f));
}

Result<void> Receiver::op_truncate(const Request& r) {
  if (r.offset > kMaxOffset) return fail(EFBIG, "truncate " + quoted(r.path));
  const auto size = static_cast<off_t>(r.offset);
  if (auto it = staged_.find(r.path); it != staged_.end()) {
    if (::ftruncate(it->second.file.get(), size) == -1) return fail_errno("truncate", r.path);
    return {};
  }
  Result<Parent> p = locate(root_.get(), r.path);
  if (!p) return tl::unexpected(p.error());
  Result<Fd> f = target::open_regular(p->fd, p->name, O_WRONLY);
  if (!f) return tl::unexpected(f.error());
  if (::ftruncate(f->get(), size) == -1) return fail_errno("truncate", r.path);  // extends with a hole
  return touch_owned(std::move(*f));
}

Result<void> Receiver::op_commit(const Request& r) {
  auto it = staged_.find(r.path);
  if (it == staged_.end()) return fail(EINVAL, "commit without BeginFile: " + quoted(r.path));
  Staged s = std::move(it->second);
  staged_.erase(it);
  auto abort = [&](Error e) {
    (void)::unlinkat(s.dir.get(), s.tmp.c_str(), 0);
    return tl::unexpected(std::move(e));
  };
  if (Result<void> m = target::apply_meta_fd(s.file.get(), r.meta); !m) return abort(m.error());
  if (Result<void> f = sync_fd(s.file.get(), r.path); !f) return abort(f.error());
  // Re-resolve now: the path may have moved under a Rename since BeginFile.
  Result<Parent> p = locate(root_.get(), r.path);
  if (!p) return abort(p.error());
  if (Result<void> mv = target::replace_with(s.dir.get(), s.tmp, p->fd, p->name); !mv)
    return abort(mv.error());
  return touch(p->fd);
}

Result<std::string> Receiver::op_signature(const Request& r) {
  signed_.erase(r.path);
  Result<Parent> p = locate(root_.get(), r.path);
  if (!p) {
    if (p.error().code != ENOENT) return tl::unexpected(p.error());
    signed_[r.path] = Basis{};
    return std::string{};
  }
  Result<Fd> f = target::open_regular(p->fd, p->name, O_RDONLY);
  if (!f) {
    const int e = f.error().code;
    if (e != ENOENT && e != EISDIR && e != EINVAL && e != ELOOP) return tl::unexpected(f.error());
    signed_[r.path] = Basis{};  // no basis
    return std::string{};
  }
  Result<std::string> sig = signature_of(*f);
  struct stat st {};
  if (sig && ::fstat(f->get(), &st) == 0) signed_[r.path] = basis_of(st);
  return sig;
}

// The first chunk of a delta: open the basis, which must be the file the
// path's Signature described, and a temp to patch into.
Result<void> Receiver::start_delta(const std::string& path) {
  const auto sig = signed_.find(path);
  const bool known = sig != signed_.end();
  const Basis expected = known ? sig->second : Basis{};
  signed_.erase(path);  // one delta per signature
  Result<Parent> p = locate(root_.get(), path);
  if (!p) return tl::unexpected(p.error());
  Patching st;
  Result<Fd> basis = target::open_regular(p->fd, p->name, O_RDONLY);
  if (basis) st.basis = std::move(*basis);
  else if (const int e = basis.error().code; e != ENOENT && e != EISDIR && e != EINVAL && e != ELOOP)
    return tl::unexpected(basis.error());
  struct stat bst {};
  if (st.basis.valid() && ::fstat(st.basis.get(), &bst) == -1) return fail_errno("fstat", path);
  const Basis now = st.basis.valid() ? basis_of(bst) : Basis{};
  // Without a Signature only a basis-free (all-literal) delta is accepted.
  if (!same_basis(now, expected) || (!known && now.present))
    return fail(ESTALE, "delta basis changed since its signature: " + quoted(path));
  Result<Fd> file = target::create_temp(p->fd, st.tmp);
  if (!file) return tl::unexpected(file.error());
  st.file = std::move(*file);
  st.dir = p->owned.valid() ? std::move(p->owned) : Fd(::fcntl(p->fd, F_DUPFD_CLOEXEC, 0));
  st.stream = std::make_unique<PatchStream>(st.basis, st.file);
  const bool dir_ok = st.dir.valid();
  patching_.insert_or_assign(path, std::move(st));
  if (!dir_ok) {
    forget_under(path);
    return fail(EMFILE, "dup for delta " + quoted(path));
  }
  return {};
}

Result<void> Receiver::op_delta(const Request& r) {
  auto it = patching_.find(r.path);
  if (it == patching_.end()) {
    if (Result<void> s = start_delta(r.path); !s) return s;
    it = patching_.find(r.path);
  }
  // The stream holds the basis and temp fd numbers; moving the Fds keeps them open.
  Result<void> fed = it->second.stream->feed(r.data);
  if (fed && (r.flags & kLast)) {
    Patching p = std::move(it->second);
    patching_.erase(it);
    fed = finish_delta(r.path, p, r.meta);
    if (!fed) (void)::unlinkat(p.dir.get(), p.tmp.c_str(), 0);
    return fed;
  }
  if (!fed) forget_under(r.path);
  return fed;
}

Result<void> Receiver::op_punch(const Request& r) {
  if (Result<void> ok = target::check_path(r.path); !ok) return ok;
  Result<std::uint64_t> len = decode_u64(r.data);
  if (!len) return tl::unexpected(len.error());
  if (r.offset > kMaxOffset || *len > kMaxOffset - r.offset) return fail(EFBIG, "punch " + quoted(r.path));
  if (*len == 0) return {};
  const auto off = static_cast<off_t>(r.offset), n = static_cast<off_t>(*len);
  auto punch = [&](int fd) -> Result<void> {
    if (::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, n) == 0) return {};
    if (errno != EOPNOTSUPP) return fail_errno("punch hole", r.path);
    // No hole support on the target: zeros are the same content.
    return target::pwrite_zeros(fd, r.offset, *len);
  };
  if (auto it = staged_.find(r.path); it != staged_.end()) return punch(it->second.file.get());
  Result<Parent> p = locate(root_.get(), r.path);
  if (!p) return tl::unexpected(p.error());
  Result<Fd> f = target::open_regular(p->fd, p->name, O_WRONLY);
  if (!f) return tl::unexpected(f.error());
  if (Result<void> w = punch(f->get()); !w) return w;
  return touch_owned(std::move(*f));
}

Result<void> Receiver::finish_delta(const std::string& path, Patching& p, const Meta& meta) {
  if (Result<void> f = p.stream->finish(); !f) return f;
  if (Result<void> m = target::apply_meta_fd(p.file.get(), meta); !m) return m;
  if (Result<void> s = sync_fd(p.file.get(), path); !s) return s;
  Result<Parent> dst = locate(root_.get(), path);
  if (!dst) return tl::unexpected(dst.error());
  if (Result<void> mv = target::replace_with(p.dir.get(), p.tmp, dst->fd, dst->name); !mv) return mv;
  return touch(dst->fd);
}

Result<std::string> Receiver::op_checksum(const Request& r) {
  Result<Parent> p = locate(root_.get(), r.path);
  if (!p) return tl::unexpected(p.error());
  struct stat st {};
  if (::fstatat(p->fd, p->name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == -1)
    return fail_errno("stat", r.path);
  if (S_ISLNK(st.st_mode)) {  // the link text is a symlink's content
    std::string buf(4096, '\0');
    const ssize_t n = ::readlinkat(p->fd, p->name.c_str(), buf.data(), buf.size());
    if (n < 0) return fail_errno("readlink", r.path);
    return encode_u64(XXH64(buf.data(), static_cast<std::size_t>(n), 0));
  }
  Result<Fd> f = target::open_regular(p->fd, p->name, O_RDONLY);
  if (!f) return tl::unexpected(f.error());
  Result<std::uint64_t> h = xxh64_fd(f->get(), r.path, (r.flags & kChecksumLayout) != 0);
  if (!h) return tl::unexpected(h.error());
  return encode_u64(*h);
}

}  // namespace mirrorfs::replicate
