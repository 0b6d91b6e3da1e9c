// Helpers for replication scenarios: read a mount's status through the real
// `mirrorfs status --json`, and wait (with a deadline) until every target
// has landed every change. Drain by status, never by sleeping.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace mirrorfs::test {

struct TargetState {
  bool connected = false;
  std::uint64_t pending = 0, acked_seq = 0, last_seq = 0, bytes_sent = 0, files_sent = 0;
  std::string last_error;
};

// Parses `mirrorfs status MNT --json`; empty on failure (with a message in err).
[[nodiscard]] std::vector<TargetState> read_status(const std::string& mountpoint,
                                                   std::string* err = nullptr);

// True once every target is connected, has nothing pending and has
// acknowledged the last recorded change, twice in a row.
[[nodiscard]] bool wait_drained(const std::string& mountpoint, std::chrono::milliseconds timeout,
                                std::string* why = nullptr);

// Sum of bytes_sent over all targets (the transport's own count).
[[nodiscard]] std::uint64_t bytes_sent(const std::string& mountpoint);

}  // namespace mirrorfs::test
