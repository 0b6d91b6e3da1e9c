// File family: create, open, read, write, flush, release, fsync, fallocate,
// copy_file_range, lseek. The kernel's fi->fh holds the backing fd: it is
// release()d from an Fd on open and re-wrapped (closed) in op_release.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs/context.hpp"

namespace mirrorfs::fs {

namespace {

int fd_of(const fuse_file_info* fi) { return static_cast<int>(fi->fh); }

// With the writeback cache the kernel may read a page to complete a partial
// write, even on a write-only file, and it implements O_APPEND itself (the
// offsets it sends already point at the end).
int backing_flags(const Context& c, int flags) {
  if (c.tuning.writeback_cache) {
    if ((flags & O_ACCMODE) == O_WRONLY) flags = (flags & ~O_ACCMODE) | O_RDWR;
    flags &= ~O_APPEND;
  }
  return flags | O_CLOEXEC | O_NOFOLLOW;
}

void set_open_flags(const Context& c, fuse_file_info* fi) {
  // Only this mount writes the backing tree (the scanner invalidates the
  // rest), so the page cache may outlive an open/close.
  fi->keep_cache = c.tuning.attr_timeout > 0 ? 1 : 0;
}

// The path a change through an open file belongs to; empty if the file has
// no name left (unlinked while open): then there is nothing to replicate.
std::string path_or_empty(Context& c, fuse_ino_t ino) {
  auto p = c.inodes.path(ino);
  return p ? std::move(*p) : std::string();
}

void report_data(Context& c, fuse_ino_t ino, std::uint64_t off, std::uint64_t len,
                 const Stamp& s) {
  if (auto p = c.inodes.path(ino)) report(c, ChangeKind::Data, std::move(*p), {}, off, len, 0, s);
}

}  // namespace

void op_create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
               fuse_file_info* fi) {
  guarded(req, "create", [&]() -> Result<void> {
    Context& c = ctx(req);
    auto rel = child_path(c, parent, name);
    if (!rel) return tl::unexpected(rel.error());
    Fd fd(::openat(c.root.get(), rel->c_str(), backing_flags(c, fi->flags) | O_CREAT, mode));
    if (!fd.valid()) return fail_errno("create", *rel);
    if (auto r = own_new_entry(c, req, parent, *rel, fd.get()); !r) return r;
    fuse_entry_param e;
    if (auto r = make_entry(c, parent, name, *rel, e); !r) return r;
    Stamp s;
    post_stat(c, e.attr, s);
    report(c, ChangeKind::Created, *rel, {}, 0, 0, 0, s);
    set_open_flags(c, fi);
    c.inodes.opened(e.ino, fd.get());
    fi->fh = static_cast<uint64_t>(fd.release());
    if (fuse_reply_create(req, &e, fi) != 0) {  // the kernel gave up on the request
      c.inodes.closed(e.ino, fd_of(fi));
      ::close(fd_of(fi));
      c.inodes.forget(e.ino, 1);
    }
    return {};
  });
}

void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  guarded(req, "open", [&]() -> Result<void> {
    Context& c = ctx(req);
    auto rel = node_path(c, ino);
    if (!rel) return tl::unexpected(rel.error());
    Stamp s = (fi->flags & O_TRUNC) ? pre_at(c, *rel) : Stamp{};
    Fd fd(::openat(c.root.get(), at_path(*rel), backing_flags(c, fi->flags)));
    if (!fd.valid()) return fail_errno("open", *rel);
    if (fi->flags & O_TRUNC) {
      post_fd(c, fd.get(), s);
      report(c, ChangeKind::Data, *rel, {}, 0, Change::kToEnd, 0, s);
    }
    set_open_flags(c, fi);
    c.inodes.opened(ino, fd.get());
    fi->fh = static_cast<uint64_t>(fd.release());
    if (fuse_reply_open(req, fi) != 0) {
      c.inodes.closed(ino, fd_of(fi));
      ::close(fd_of(fi));
    }
    return {};
  });
}

void op_read(fuse_req_t req, fuse_ino_t /*ino*/, size_t size, off_t off, fuse_file_info* fi) {
  // Splice straight from the backing file into the reply: no copy through us.
  fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
  buf.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
  buf.buf[0].fd = fd_of(fi);
  buf.buf[0].pos = off;
  fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

void op_write_buf(fuse_req_t req, fuse_ino_t ino, fuse_bufvec* in_buf, off_t off,
                  fuse_file_info* fi) {
  guarded(req, "write", [&]() -> Result<void> {
    Context& c = ctx(req);
    fuse_bufvec out = FUSE_BUFVEC_INIT(fuse_buf_size(in_buf));
    out.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
    out.buf[0].fd = fd_of(fi);
    out.buf[0].pos = off;
    Stamp s = pre_fd(c, fd_of(fi));
    const ssize_t n = fuse_buf_copy(&out, in_buf, fuse_buf_copy_flags{});
    if (n < 0) return fail(static_cast<int>(-n), "write " + quoted(path_or_empty(c, ino)));
    post_fd(c, fd_of(fi), s);
    report_data(c, ino, static_cast<std::uint64_t>(off), static_cast<std::uint64_t>(n), s);
    fuse_reply_write(req, static_cast<size_t>(n));
    return {};
  });
}

void op_flush(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  guarded(req, "flush", [&]() -> Result<void> {
    // close() of a duplicate reports errors the backing filesystem defers to
    // close time (NFS, quotas) to the application's close().
    if (::close(::dup(fd_of(fi))) == -1)
      return fail_errno("flush", path_or_empty(ctx(req), ino));
    fuse_reply_err(req, 0);
    return {};
  });
}

void op_release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  ctx(req).inodes.closed(ino, fd_of(fi));  // before close: the number may be reused at once
  Fd(fd_of(fi)).reset();
  fuse_reply_err(req, 0);
}

void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) {
  guarded(req, "fsync", [&]() -> Result<void> {
    const int fd = fd_of(fi);
    if ((datasync ? ::fdatasync(fd) : ::fsync(fd)) == -1)
      return fail_errno("fsync", path_or_empty(ctx(req), ino));
    fuse_reply_err(req, 0);
    return {};
  });
}

void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                  fuse_file_info* fi) {
  guarded(req, "fallocate", [&]() -> Result<void> {
    Context& c = ctx(req);
    Stamp s = pre_fd(c, fd_of(fi));
    if (::fallocate(fd_of(fi), mode, offset, length) == -1)
      return fail_errno("fallocate", path_or_empty(c, ino));
    post_fd(c, fd_of(fi), s);
    report_data(c, ino, static_cast<std::uint64_t>(offset), static_cast<std::uint64_t>(length), s);
    fuse_reply_err(req, 0);
    return {};
  });
}

void op_copy_file_range(fuse_req_t req, fuse_ino_t /*ino_in*/, off_t off_in,
                        fuse_file_info* fi_in, fuse_ino_t ino_out, off_t off_out,
                        fuse_file_info* fi_out, size_t len, int flags) {
  guarded(req, "copy_file_range", [&]() -> Result<void> {
    Context& c = ctx(req);
    loff_t in = off_in, out = off_out;
    Stamp s = pre_fd(c, fd_of(fi_out));
    const ssize_t n = ::copy_file_range(fd_of(fi_in), &in, fd_of(fi_out), &out, len,
                                        static_cast<unsigned>(flags));
    if (n == -1) return fail_errno("copy_file_range", path_or_empty(c, ino_out));
    post_fd(c, fd_of(fi_out), s);
    report_data(c, ino_out, static_cast<std::uint64_t>(off_out), static_cast<std::uint64_t>(n), s);
    fuse_reply_write(req, static_cast<size_t>(n));
    return {};
  });
}

void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fuse_file_info* fi) {
  guarded(req, "lseek", [&]() -> Result<void> {
    const off_t res = ::lseek(fd_of(fi), off, whence);
    if (res == -1) return fail_errno("lseek", path_or_empty(ctx(req), ino));
    fuse_reply_lseek(req, res);
    return {};
  });
}

}  // namespace mirrorfs::fs
