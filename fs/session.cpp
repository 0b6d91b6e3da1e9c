#include "fs/session.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <thread>

#include "fs/context.hpp"

namespace mirrorfs::fs {

void op_init(void* userdata, fuse_conn_info* conn) {
  auto& c = *static_cast<Context*>(userdata);
  auto want = [&](unsigned cap) {
    if (conn->capable & cap) conn->want |= cap;
  };
  if (c.tuning.writeback_cache) want(FUSE_CAP_WRITEBACK_CACHE);
  if (!(conn->want & FUSE_CAP_WRITEBACK_CACHE)) c.tuning.writeback_cache = false;
  want(FUSE_CAP_SPLICE_WRITE);
  want(FUSE_CAP_SPLICE_READ);
  want(FUSE_CAP_PARALLEL_DIROPS);
  want(FUSE_CAP_CACHE_SYMLINKS);
  conn->max_background = 128;
  conn->congestion_threshold = 96;
  c.log->debug("FUSE init: protocol {}.{}, writeback cache {}, max_write {}", conn->proto_major,
               conn->proto_minor, c.tuning.writeback_cache ? "on" : "off", conn->max_write);
}

namespace {

// libfuse prints its own complaints; we keep the last one so that a failed
// mount reports exactly one line, ours, that includes it.
std::string g_fuse_message;  // written only before the session loop starts
std::shared_ptr<spdlog::logger> g_fuse_log;

void capture_fuse_log(fuse_log_level level, const char* fmt, va_list ap) {
  static std::string pending;  // libfuse may print one line in several calls
  char buf[1024];
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  pending += buf;
  if (pending.empty() || pending.back() != '\n') return;
  pending.pop_back();
  if (pending.starts_with("fuse: ")) pending.erase(0, 6);
  if (level <= FUSE_LOG_ERR) g_fuse_message = pending;
  if (g_fuse_log) g_fuse_log->debug("libfuse: {}", pending);
  pending.clear();
}

fuse_lowlevel_ops make_ops() {
  fuse_lowlevel_ops ops{};
  ops.init = op_init;
  ops.lookup = op_lookup;
  ops.forget = op_forget;
  ops.forget_multi = op_forget_multi;
  ops.getattr = op_getattr;
  ops.setattr = op_setattr;
  ops.readlink = op_readlink;
  ops.statfs = op_statfs;
  ops.mknod = op_mknod;
  ops.mkdir = op_mkdir;
  ops.symlink = op_symlink;
  ops.link = op_link;
  ops.unlink = op_unlink;
  ops.rmdir = op_rmdir;
  ops.rename = op_rename;
  ops.opendir = op_opendir;
  ops.readdir = op_readdir;
  ops.readdirplus = op_readdirplus;
  ops.releasedir = op_releasedir;
  ops.fsyncdir = op_fsyncdir;
  ops.create = op_create;
  ops.open = op_open;
  ops.read = op_read;
  ops.write_buf = op_write_buf;
  ops.flush = op_flush;
  ops.release = op_release;
  ops.fsync = op_fsync;
  ops.fallocate = op_fallocate;
  ops.copy_file_range = op_copy_file_range;
  ops.lseek = op_lseek;
  ops.setxattr = op_setxattr;
  ops.getxattr = op_getxattr;
  ops.listxattr = op_listxattr;
  ops.removexattr = op_removexattr;
  return ops;
}

}  // namespace

// Invalidation of what the kernel caches for nodes changed behind the mount.
class KernelCache final : public SourceCache {
 public:
  explicit KernelCache(Context& c) : c_(c) {}
  fuse_session* se = nullptr;

  void invalidate_node(std::string_view path) noexcept override {
    try {
      const auto id = c_.inodes.lookup(path);
      if (!id || se == nullptr) return;  // never handed to the kernel: nothing cached
      // off 0, len 0: attributes and every cached page.
      const int rc = fuse_lowlevel_notify_inval_inode(se, *id, 0, 0);
      if (rc != 0 && rc != -ENOENT)
        c_.log->debug("invalidate {}: {}", quoted(path), std::strerror(-rc));
      if (c_.tuning.writeback_cache && *id != kRootId) {
        // With the writeback cache the kernel never takes a size or mtime
        // from us for an inode it holds: drop its names and give the backing
        // inode a new node id, so the next lookup builds a fresh one.
        const auto names = c_.inodes.names(*id);
        c_.inodes.detach(*id);
        for (const auto& [parent, name] : names)
          (void)fuse_lowlevel_notify_inval_entry(se, parent, name.c_str(), name.size());
      }
    } catch (...) {  // bad_alloc: the cache times out by itself
    }
  }

  void invalidate_entry(std::string_view dir_path, std::string_view name) noexcept override {
    try {
      const auto id = c_.inodes.lookup(dir_path);
      if (!id || se == nullptr) return;
      const std::string n(name);
      const int rc = fuse_lowlevel_notify_inval_entry(se, *id, n.c_str(), n.size());
      if (rc != 0 && rc != -ENOENT)
        c_.log->debug("invalidate entry {}: {}", quoted(n), std::strerror(-rc));
      if (auto child = c_.inodes.child_path(*id, name); child) invalidate_node(*child);
    } catch (...) {
    }
  }

 private:
  Context& c_;
};

struct Session::Impl {
  Context context;
  KernelCache cache{context};
  fuse_session* se = nullptr;
  bool mounted = false;
  bool signals = false;
  ~Impl() {
    if (se == nullptr) return;
    if (signals) fuse_remove_signal_handlers(se);
    if (mounted) fuse_session_unmount(se);
    fuse_session_destroy(se);
  }
};

Session::Session(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Session::~Session() = default;
const Fd& Session::root() const noexcept { return impl_->context.root; }
SourceCache& Session::cache() noexcept { return impl_->cache; }

Result<std::unique_ptr<Session>> Session::mount(Fd root, ChangeSink& sink, SessionConfig config,
                                                std::shared_ptr<spdlog::logger> log) {
  auto impl = std::make_unique<Impl>();
  Context& c = impl->context;
  c.root = std::move(root);
  c.sink = &sink;
  c.log = std::move(log);
  c.tuning = Tuning{config.attr_timeout, config.entry_timeout, config.writeback_cache,
                    config.max_threads, config.stamps};
  c.is_root = ::geteuid() == 0;

  std::vector<std::string> argv_s{"mirrorfs"};
  if (config.debug) argv_s.emplace_back("-d");
  for (const std::string& o : config.fuse_options) {
    argv_s.emplace_back("-o");
    argv_s.push_back(o);
  }
  std::vector<char*> argv;
  for (std::string& s : argv_s) argv.push_back(s.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
  const fuse_lowlevel_ops ops = make_ops();
  g_fuse_log = c.log;
  fuse_set_log_func(capture_fuse_log);
  impl->se = fuse_session_new(&args, &ops, sizeof ops, &c);
  if (impl->se == nullptr) return fail(EINVAL, g_fuse_message);
  impl->cache.se = impl->se;
  if (fuse_set_signal_handlers(impl->se) != 0) return fail(EIO, "cannot install signal handlers");
  impl->signals = true;
  if (fuse_session_mount(impl->se, config.mountpoint.c_str()) != 0)
    return fail(EIO, "cannot mount on " + quoted(config.mountpoint) + ": " + g_fuse_message);
  impl->mounted = true;
  return std::unique_ptr<Session>(new Session(std::move(impl)));
}

int Session::run() {
  fuse_loop_config* cfg = fuse_loop_cfg_create();
  fuse_loop_cfg_set_clone_fd(cfg, 1);
  fuse_loop_cfg_set_max_threads(cfg, impl_->context.tuning.max_threads);
  // Idle workers stay: with a low idle limit libfuse creates and destroys a
  // thread for nearly every request under load.
  fuse_loop_cfg_set_idle_threads(cfg, impl_->context.tuning.max_threads);
  const int rc = fuse_session_loop_mt(impl_->se, cfg);
  fuse_loop_cfg_destroy(cfg);
  impl_->context.log->info("FUSE loop ended ({}), {} inodes known", rc,
                           impl_->context.inodes.size());
  return rc < 0 ? 1 : 0;
}

Result<void> daemonize() {
  if (fuse_daemonize(0) != 0) return fail(errno ? errno : EIO, "cannot daemonize");
  return {};
}

}  // namespace mirrorfs::fs
