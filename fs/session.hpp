// Session: one FUSE mount of a backing directory, from mount to unmount.
//
// Lifecycle: mount() creates the FUSE session and mounts it (errors come
// back as one clear Error, nothing is left mounted); daemonize() optionally
// detaches; run() serves requests on a multithreaded loop until the mount is
// unmounted (umount, fusermount3 -u) or SIGINT/SIGTERM/SIGHUP arrives;
// the destructor unmounts (if still mounted) and frees the session.
// This header is free of FUSE types so main.cpp needs no FUSE include.
#pragma once

#include <spdlog/logger.h>

#include <memory>
#include <string>
#include <vector>

#include "fs/api/change_sink.hpp"
#include "fs/api/fd.hpp"
#include "fs/api/result.hpp"
#include "fs/api/source_cache.hpp"

namespace mirrorfs::fs {

struct SessionConfig {
  std::string mountpoint;
  std::vector<std::string> fuse_options;  // each passed to libfuse as "-o X"
  double attr_timeout = 1.0;
  double entry_timeout = 1.0;
  bool writeback_cache = true;
  unsigned max_threads = 16;
  bool debug = false;  // libfuse's per-request trace (-d)
  bool stamps = false;  // stamp every change for a scanner's self-filter
};

class Session {
 public:
  // root: the backing directory, opened (O_DIRECTORY) before the mount; it
  // may be the mountpoint itself. sink receives every change; it must
  // outlive the Session.
  [[nodiscard]] static Result<std::unique_ptr<Session>> mount(
      Fd root, ChangeSink& sink, SessionConfig config, std::shared_ptr<spdlog::logger> log);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Serves until unmounted or signalled. Returns 0 on a clean stop.
  int run();
  // The backing directory's descriptor (for replication and scanning).
  [[nodiscard]] const Fd& root() const noexcept;
  // The kernel's caches of this mount, for the scanner (see SourceCache's
  // contract: never from a FUSE handler). Valid while the Session lives.
  [[nodiscard]] SourceCache& cache() noexcept;

 private:
  struct Impl;
  explicit Session(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Detaches from the terminal (fork, setsid, stdio to /dev/null); the parent
// exits 0. Call after mount() succeeded and before any thread is started.
[[nodiscard]] Result<void> daemonize();

}  // namespace mirrorfs::fs
