// Small process helpers for integration tests. Every wait has a deadline.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace mirrorfs::test {

// MIRRORFS_SEED from the environment, else a random one. Callers print it:
//   SCOPED_TRACE(testing::Message() << "MIRRORFS_SEED=" << seed);
[[nodiscard]] std::uint64_t seed();

struct CommandResult {
  int status = -1;     // raw waitpid status; -1 if it could not be run
  bool timed_out = false;
  std::string output;  // stdout + stderr
  [[nodiscard]] bool ok() const;
};

// Runs argv[0] (searched in PATH) with a deadline; kills it (SIGKILL, by pid)
// when the deadline passes.
CommandResult run_command(const std::vector<std::string>& argv,
                          std::chrono::milliseconds timeout = std::chrono::seconds(20));

// Waits for `pid` until `timeout`; returns its status, or nullopt if it is
// still running at the deadline (it is then NOT reaped).
std::optional<int> wait_pid_for(pid_t pid, std::chrono::milliseconds timeout);

// Number of open descriptors of process `pid` (/proc/PID/fd), -1 on error.
[[nodiscard]] int fd_count(pid_t pid);
// The same, leaving out /dev/fuse clones and pipes: libfuse gives each worker
// thread one of each, so they grow with the thread pool, not with leaks.
[[nodiscard]] int file_fd_count(pid_t pid);

// Whole file as a string ("" if it cannot be read).
[[nodiscard]] std::string read_file(const std::string& path);

// "exited 0", "killed by signal 9"...
[[nodiscard]] std::string describe_status(int status);

}  // namespace mirrorfs::test
