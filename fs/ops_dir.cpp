// Namespace family: mknod, mkdir, symlink, link, unlink, rmdir, rename, and
// directory handles (opendir, readdir, readdirplus, releasedir, fsyncdir).
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "fs/context.hpp"

namespace mirrorfs::fs {

namespace {

// Replies with the entry just created at (parent, name) after giving it the
// caller's owner, and reports it.
Result<void> finish_create(fuse_req_t req, fuse_ino_t parent, const char* name,
                           const std::string& rel) {
  Context& c = ctx(req);
  if (auto r = own_new_entry(c, req, parent, rel, -1); !r) return r;
  fuse_entry_param e;
  if (auto r = make_entry(c, parent, name, rel, e); !r) return r;
  Stamp s;
  post_stat(c, e.attr, s);
  report(c, ChangeKind::Created, rel, {}, 0, 0, 0, s);
  fuse_reply_entry(req, &e);
  return {};
}

}  // namespace

void op_mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
  guarded(req, "mknod", [&]() -> Result<void> {
    auto rel = child_path(ctx(req), parent, name);
    if (!rel) return tl::unexpected(rel.error());
    if (::mknodat(ctx(req).root.get(), rel->c_str(), mode, rdev) == -1)
      return fail_errno("mknod", *rel);
    return finish_create(req, parent, name, *rel);
  });
}

void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  guarded(req, "mkdir", [&]() -> Result<void> {
    auto rel = child_path(ctx(req), parent, name);
    if (!rel) return tl::unexpected(rel.error());
    if (::mkdirat(ctx(req).root.get(), rel->c_str(), mode) == -1) return fail_errno("mkdir", *rel);
    return finish_create(req, parent, name, *rel);
  });
}

void op_symlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) {
  guarded(req, "symlink", [&]() -> Result<void> {
    auto rel = child_path(ctx(req), parent, name);
    if (!rel) return tl::unexpected(rel.error());
    if (::symlinkat(link, ctx(req).root.get(), rel->c_str()) == -1)
      return fail_errno("symlink", *rel);
    return finish_create(req, parent, name, *rel);
  });
}

void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname) {
  guarded(req, "link", [&]() -> Result<void> {
    Context& c = ctx(req);
    auto from = node_path(c, ino);
    if (!from) return tl::unexpected(from.error());
    auto to = child_path(c, newparent, newname);
    if (!to) return tl::unexpected(to.error());
    Stamp s = pre_at(c, *from);
    if (::linkat(c.root.get(), from->c_str(), c.root.get(), to->c_str(), 0) == -1)
      return fail_errno("link", *to);
    fuse_entry_param e;
    if (auto r = make_entry(c, newparent, newname, *to, e); !r) return r;
    post_stat(c, e.attr, s);
    report(c, ChangeKind::Linked, *from, *to, 0, 0, 0, s);
    fuse_reply_entry(req, &e);
    return {};
  });
}

namespace {

void remove_entry(fuse_req_t req, fuse_ino_t parent, const char* name, int flags, const char* op) {
  guarded(req, op, [&]() -> Result<void> {
    Context& c = ctx(req);
    auto rel = child_path(c, parent, name);
    if (!rel) return tl::unexpected(rel.error());
    // Another hard link of a file keeps living with a new ctime that no
    // stamp will show: the scanner accepts it once (ctime_after 0).
    const Stamp s = flags == 0 ? pre_at(c, *rel) : Stamp{};
    if (::unlinkat(c.root.get(), rel->c_str(), flags) == -1) return fail_errno(op, *rel);
    c.inodes.unlinked(parent, name);
    report(c, ChangeKind::Removed, *rel, {}, 0, 0, 0, s);
    fuse_reply_err(req, 0);
    return {};
  });
}

}  // namespace

void op_unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  remove_entry(req, parent, name, 0, "unlink");
}

void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  remove_entry(req, parent, name, AT_REMOVEDIR, "rmdir");
}

void op_rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
               const char* newname, unsigned int flags) {
  guarded(req, "rename", [&]() -> Result<void> {
    Context& c = ctx(req);
    auto from = child_path(c, parent, name);
    if (!from) return tl::unexpected(from.error());
    auto to = child_path(c, newparent, newname);
    if (!to) return tl::unexpected(to.error());
    Stamp s = pre_at(c, *from);  // rename changes the moved inode's ctime
    if (::renameat2(c.root.get(), from->c_str(), c.root.get(), to->c_str(), flags) == -1)
      return fail_errno("rename", *from + " -> " + *to);
    post_at(c, *to, s);
    c.inodes.renamed(parent, name, newparent, newname, (flags & RENAME_EXCHANGE) != 0);
    report(c, ChangeKind::Renamed, *from, *to, 0, 0, flags, s);
    fuse_reply_err(req, 0);
    return {};
  });
}

// ---- directory handles ------------------------------------------------------

namespace {

struct DirHandle {
  DIR* dp = nullptr;
  off_t offset = 0;
  dirent* entry = nullptr;
  ~DirHandle() {
    if (dp != nullptr) ::closedir(dp);
  }
};

DirHandle* dir_handle(fuse_file_info* fi) { return reinterpret_cast<DirHandle*>(fi->fh); }

bool is_dot_or_dotdot(const char* name) {
  return name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0'));
}

// Fills one reply buffer from the directory stream. With plus, every entry
// but . and .. is looked up (the kernel then holds a reference to it).
Result<void> fill_dir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, DirHandle& d,
                      bool plus) {
  Context& c = ctx(req);
  if (off != d.offset) {
    ::seekdir(d.dp, off);
    d.entry = nullptr;
    d.offset = off;
  }
  std::string buf(size, '\0');
  size_t used = 0;
  std::string dir_rel;
  if (plus) {
    auto p = node_path(c, ino);
    if (!p) return tl::unexpected(p.error());
    dir_rel = std::move(*p);
  }
  while (true) {
    if (d.entry == nullptr) {
      errno = 0;
      d.entry = ::readdir(d.dp);
      if (d.entry == nullptr) {
        if (errno != 0 && used == 0) return fail_errno("readdir", dir_rel);
        break;
      }
    }
    const off_t next = d.entry->d_off;
    const char* name = d.entry->d_name;
    size_t len;
    if (plus && !is_dot_or_dotdot(name)) {
      fuse_entry_param e{};
      const std::string rel = dir_rel.empty() ? std::string(name) : dir_rel + "/" + name;
      if (auto r = make_entry(c, ino, name, rel, e); !r) {
        d.entry = nullptr;  // vanished since readdir: skip it
        continue;
      }
      len = fuse_add_direntry_plus(req, buf.data() + used, size - used, name, &e, next);
      if (len > size - used) {  // did not fit: undo the reference and stop here
        c.inodes.forget(e.ino, 1);
        break;
      }
    } else {
      struct stat st {};
      st.st_ino = d.entry->d_ino;
      st.st_mode = static_cast<mode_t>(DTTOIF(d.entry->d_type));
      if (plus) {
        fuse_entry_param e{};
        e.attr = st;  // ino 0: the kernel does not cache . and ..
        len = fuse_add_direntry_plus(req, buf.data() + used, size - used, name, &e, next);
      } else {
        len = fuse_add_direntry(req, buf.data() + used, size - used, name, &st, next);
      }
      if (len > size - used) break;
    }
    used += len;
    d.entry = nullptr;
    d.offset = next;
  }
  fuse_reply_buf(req, buf.data(), used);
  return {};
}

}  // namespace

void op_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  guarded(req, "opendir", [&]() -> Result<void> {
    Context& c = ctx(req);
    auto rel = node_path(c, ino);
    if (!rel) return tl::unexpected(rel.error());
    Fd fd(::openat(c.root.get(), at_path(*rel), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd.valid()) return fail_errno("opendir", *rel);
    auto d = std::make_unique<DirHandle>();
    d->dp = ::fdopendir(fd.get());
    if (d->dp == nullptr) return fail_errno("fdopendir", *rel);
    (void)fd.release();  // the DIR* owns it now
    fi->fh = reinterpret_cast<uint64_t>(d.release());
    fi->cache_readdir = 0;
    fuse_reply_open(req, fi);
    return {};
  });
}

void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  guarded(req, "readdir", [&]() { return fill_dir(req, ino, size, off, *dir_handle(fi), false); });
}

void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  guarded(req, "readdirplus",
          [&]() { return fill_dir(req, ino, size, off, *dir_handle(fi), true); });
}

void op_releasedir(fuse_req_t req, fuse_ino_t /*ino*/, fuse_file_info* fi) {
  delete dir_handle(fi);
  fuse_reply_err(req, 0);
}

void op_fsyncdir(fuse_req_t req, fuse_ino_t /*ino*/, int datasync, fuse_file_info* fi) {
  guarded(req, "fsyncdir", [&]() -> Result<void> {
    const int fd = ::dirfd(dir_handle(fi)->dp);
    if ((datasync ? ::fdatasync(fd) : ::fsync(fd)) == -1) return fail_errno("fsyncdir", "");
    fuse_reply_err(req, 0);
    return {};
  });
}

}  // namespace mirrorfs::fs
