// Extended attribute family. There is no *at() xattr call, so each one goes
// through "/proc/self/fd/<root>/<relative path>" with the l*() variants:
// the root link is followed, the final component never is.
#include <sys/xattr.h>

#include <string>

#include "fs/context.hpp"

namespace mirrorfs::fs {

namespace {

Result<std::string> proc_path(Context& c, fuse_ino_t ino) {
  auto rel = node_path(c, ino);
  if (!rel) return tl::unexpected(rel.error());
  std::string p = "/proc/self/fd/" + std::to_string(c.root.get());
  if (!rel->empty()) p += "/" + *rel;
  return p;
}

// getxattr and listxattr share one reply shape: a size probe or the bytes.
template <class Call>
Result<void> reply_sized(fuse_req_t req, size_t size, const char* op, Call&& call) {
  if (size == 0) {
    const ssize_t n = call(nullptr, 0);
    if (n == -1) return fail_errno(op, "");
    fuse_reply_xattr(req, static_cast<size_t>(n));
    return {};
  }
  std::string buf(size, '\0');
  const ssize_t n = call(buf.data(), size);
  if (n == -1) return fail_errno(op, "");
  fuse_reply_buf(req, buf.data(), static_cast<size_t>(n));
  return {};
}

}  // namespace

void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                 int flags) {
  guarded(req, "setxattr", [&]() -> Result<void> {
    Context& c = ctx(req);
    auto p = proc_path(c, ino);
    if (!p) return tl::unexpected(p.error());
    auto rel = c.inodes.path(ino);
    Stamp s = rel ? pre_at(c, *rel) : Stamp{};
    if (::lsetxattr(p->c_str(), name, value, size, flags) == -1) return fail_errno("setxattr", name);
    if (rel) {
      post_at(c, *rel, s);
      report(c, ChangeKind::Meta, std::move(*rel), {}, 0, 0, 0, s);
    }
    fuse_reply_err(req, 0);
    return {};
  });
}

void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  guarded(req, "getxattr", [&]() -> Result<void> {
    auto p = proc_path(ctx(req), ino);
    if (!p) return tl::unexpected(p.error());
    return reply_sized(req, size, "getxattr", [&](char* buf, size_t n) {
      return ::lgetxattr(p->c_str(), name, buf, n);
    });
  });
}

void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  guarded(req, "listxattr", [&]() -> Result<void> {
    auto p = proc_path(ctx(req), ino);
    if (!p) return tl::unexpected(p.error());
    return reply_sized(req, size, "listxattr",
                       [&](char* buf, size_t n) { return ::llistxattr(p->c_str(), buf, n); });
  });
}

void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  guarded(req, "removexattr", [&]() -> Result<void> {
    Context& c = ctx(req);
    auto p = proc_path(c, ino);
    if (!p) return tl::unexpected(p.error());
    auto rel = c.inodes.path(ino);
    Stamp s = rel ? pre_at(c, *rel) : Stamp{};
    if (::lremovexattr(p->c_str(), name) == -1) return fail_errno("removexattr", name);
    if (rel) {
      post_at(c, *rel, s);
      report(c, ChangeKind::Meta, std::move(*rel), {}, 0, 0, 0, s);
    }
    fuse_reply_err(req, 0);
    return {};
  });
}

}  // namespace mirrorfs::fs
