// MountGuard: one real mirrorfs mount for the lifetime of a test scope.
//
// Lifecycle (libfuse's and gocryptfs' test harnesses are the model):
//  - ctor: spawns `MIRRORFS_BIN SOURCE MNT -f [-o opts]` with stdout+stderr
//    captured to a log file, then polls /proc/self/mountinfo until MNT shows
//    fstype fuse.mirrorfs (deadline), failing early if the daemon died. On
//    failure the test fails (never skips) and ok() is false: callers do
//    `ASSERT_TRUE(m.ok()) << m.error();`. Once mounted, the daemon's fd count
//    is taken as the baseline.
//  - unmount()/dtor: waits (deadline) for the daemon's fd count to settle to
//    baseline + slack (FUSE RELEASE is asynchronous), fails the test on a
//    leak (gocryptfs), then `fusermount3 -u` (retries, then -z), reaps the
//    daemon with a deadline (SIGKILL by pid after it) and fails the test if
//    it exited non-zero or its log holds an "[error]" / "[critical]" line.
// Close every file on the mount before unmounting.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

namespace mirrorfs::test {

struct MountConfig {
  std::vector<std::string> options;  // joined by ',' after -o
  std::chrono::milliseconds ready_timeout{10'000};
  std::chrono::milliseconds exit_timeout{10'000};
  int fd_slack = 4;                  // allowed growth of the daemon's fd count
  bool check_fd_leak = true;
  bool fail_on_error_log = true;
};

class MountGuard {
 public:
  MountGuard(std::string source, std::string mountpoint, MountConfig cfg = {});
  ~MountGuard();
  MountGuard(const MountGuard&) = delete;
  MountGuard& operator=(const MountGuard&) = delete;

  [[nodiscard]] bool ok() const noexcept { return mounted_; }
  [[nodiscard]] const std::string& error() const noexcept { return error_; }
  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  [[nodiscard]] const std::string& mountpoint() const noexcept { return mountpoint_; }
  [[nodiscard]] const std::string& source() const noexcept { return source_; }
  [[nodiscard]] int baseline_fds() const noexcept { return baseline_fds_; }
  [[nodiscard]] int daemon_fds() const;  // current /proc/PID/fd count
  [[nodiscard]] std::string log() const;  // what the daemon wrote so far (all of it after unmount())

  // Idempotent. Returns true if the mount went away cleanly and every check
  // passed; failures are also reported with ADD_FAILURE.
  bool unmount();

  // Fault injection: kill -9 of the daemon (by pid) and reap it; the mount
  // is left dead (calls on it fail ENOTCONN) until detach(), which runs
  // `fusermount3 -u -z` on it. No fd/log checks: the test asked for a crash.
  // The destructor detaches a crashed mount.
  void crash();
  void detach();

 private:
  void start();
  bool wait_ready();
  void kill_daemon();
  bool check_fds();
  bool fusermount_unmount();

  std::string source_, mountpoint_;
  MountConfig cfg_;
  std::string log_path_;
  std::string error_;
  std::string final_log_;  // the whole log, kept by unmount()
  pid_t pid_ = -1;
  bool mounted_ = false;
  bool done_ = false;
  bool crashed_ = false;
  int baseline_fds_ = -1;
};

}  // namespace mirrorfs::test
