// Workloads that scenario tests run through a mount: a scripted one that
// touches every kind of change the replica must reproduce, and a seeded
// random concurrent one. Both act only through the given root directory.
#pragma once

#include <cstdint>
#include <string>

namespace mirrorfs::test {

// Every item of the replication contract once: small/large/sparse files,
// appends, in-place overwrites, truncates, dirs, renames (files, trees, onto
// existing names, RENAME_EXCHANGE), hard links, symlinks, fifos, modes incl.
// setuid/sticky, owners, ns mtimes, user.* xattrs, deletions, odd names
// (space, newline, leading dash, invalid UTF-8, 255 bytes, ~4000-byte path).
// Returns "" or a description of the first syscall that failed.
[[nodiscard]] std::string run_scripted_workload(const std::string& root);

struct RandomWorkload {
  std::uint64_t seed = 1;
  int threads = 4;
  int ops_per_thread = 400;
};
// Writers race on a small shared namespace (so renames hit open files, dirs
// move under writers, names get replaced). Errors such as ENOENT from races
// are expected and ignored; only the final state matters.
void run_random_workload(const std::string& root, const RandomWorkload& w);

}  // namespace mirrorfs::test
