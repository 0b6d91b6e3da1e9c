// The state every FUSE handler shares, and the helpers they all use.
// One Context per mount, owned by fs::Session; handlers reach it through
// fuse_req_userdata(). Everything here is safe to use from any FUSE thread.
#pragma once

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>

#include <spdlog/logger.h>

#include <memory>
#include <string>

#include "fs/api/change_sink.hpp"
#include "fs/api/fd.hpp"
#include "fs/api/result.hpp"
#include "fs/inode_table.hpp"

namespace mirrorfs::fs {

struct Tuning {
  double attr_timeout = 1.0;   // seconds the kernel may cache attributes
  double entry_timeout = 1.0;  // seconds the kernel may cache names
  bool writeback_cache = true;
  unsigned max_threads = 16;
  bool stamps = false;  // fill Change::stamp (a scanner filters the mount's own changes)
};

struct Context {
  Fd root;  // the backing directory, opened before the mount covered it
  InodeTable inodes;
  ChangeSink* sink = nullptr;
  std::shared_ptr<spdlog::logger> log;
  Tuning tuning;
  bool is_root = false;  // the daemon runs as uid 0: created entries get the caller's owner
};

inline Context& ctx(fuse_req_t req) { return *static_cast<Context*>(fuse_req_userdata(req)); }

// The path for *at() calls on the root fd: "." stands for the root itself.
inline const char* at_path(const std::string& rel) { return rel.empty() ? "." : rel.c_str(); }

// Relative path of a node; ESTALE if the kernel names a node we no longer know.
[[nodiscard]] Result<std::string> node_path(Context& c, fuse_ino_t ino);
[[nodiscard]] Result<std::string> child_path(Context& c, fuse_ino_t parent, const char* name);

// Reports a change to the sink (never blocks, never throws).
void report(Context& c, ChangeKind kind, std::string path, std::string to_path = {},
            std::uint64_t offset = 0, std::uint64_t length = 0, std::uint32_t flags = 0,
            Stamp stamp = {});

// Stamps for the scanner's self-filter (one fstat each; nothing when
// tuning.stamps is off). pre_*() before the backing syscall, post_*() after.
[[nodiscard]] Stamp pre_fd(const Context& c, int fd);
[[nodiscard]] Stamp pre_at(const Context& c, const std::string& rel);
void post_fd(const Context& c, int fd, Stamp& s);
void post_at(const Context& c, const std::string& rel, Stamp& s);
void post_stat(const Context& c, const struct stat& st, Stamp& s);

// lstat()s rel, remembers it as a child of parent and fills e for the reply.
[[nodiscard]] Result<void> make_entry(Context& c, fuse_ino_t parent, const char* name,
                                      const std::string& rel, fuse_entry_param& e);

// Gives a new entry the caller's uid/gid when the daemon runs as root
// (the kernel already checked permissions: default_permissions).
[[nodiscard]] Result<void> own_new_entry(Context& c, fuse_req_t req, fuse_ino_t parent,
                                         const std::string& rel, int fd);

void log_op_error(Context& c, const char* op, const Error& e);

// Runs body; an Error becomes fuse_reply_err. body replies itself on success,
// as its last step. Nothing escapes: exceptions become ENOMEM / EIO.
template <class Body>
void guarded(fuse_req_t req, const char* op, Body&& body) noexcept {
  try {
    if (Result<void> r = body(); !r) {
      log_op_error(ctx(req), op, r.error());
      fuse_reply_err(req, r.error().code);
    }
  } catch (const std::bad_alloc&) {
    fuse_reply_err(req, ENOMEM);
  } catch (...) {
    ctx(req).log->error("{}: unexpected exception", op);
    fuse_reply_err(req, EIO);
  }
}

// The handler table, one function per FUSE operation, grouped by family.
void op_init(void* userdata, fuse_conn_info* conn);
void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name);
void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup);
void op_forget_multi(fuse_req_t req, size_t count, fuse_forget_data* forgets);
void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info* fi);
void op_readlink(fuse_req_t req, fuse_ino_t ino);
void op_statfs(fuse_req_t req, fuse_ino_t ino);

void op_mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev);
void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode);
void op_symlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name);
void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname);
void op_unlink(fuse_req_t req, fuse_ino_t parent, const char* name);
void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char* name);
void op_rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
               const char* newname, unsigned int flags);
void op_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi);
void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi);
void op_releasedir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi);

void op_create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, fuse_file_info* fi);
void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi);
void op_write_buf(fuse_req_t req, fuse_ino_t ino, fuse_bufvec* in_buf, off_t off, fuse_file_info* fi);
void op_flush(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
void op_release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi);
void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                  fuse_file_info* fi);
void op_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in, fuse_file_info* fi_in,
                        fuse_ino_t ino_out, off_t off_out, fuse_file_info* fi_out, size_t len,
                        int flags);
void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fuse_file_info* fi);

void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                 int flags);
void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size);
void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char* name);

}  // namespace mirrorfs::fs
