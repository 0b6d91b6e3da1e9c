// Shared pieces of the scenario tests: mount options for an ssh target,
// "drain, then compare exactly", and deterministic file contents.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "tests/support/sshd_server.hpp"
#include "tests/support/tree_compare.hpp"

namespace mirrorfs::test {

// Mount options for a target served by sshd, with this build's agent.
[[nodiscard]] std::vector<std::string> ssh_target(const SshdServer& sshd, const std::string& rep);

// Everything tree_compare checks, holes included.
[[nodiscard]] CompareOptions exact();

// Waits (bounded) until the mount's targets drained, then compares src with
// rep; gtest failures name every difference. Call it at the test's top level
// (it uses ASSERT_*).
void expect_level(const std::string& src, const std::string& rep, const std::string& mnt,
                  CompareOptions opt = exact(),
                  std::chrono::milliseconds timeout = std::chrono::seconds(90));

// size pseudo-random bytes (xorshift64), the same for the same salt.
[[nodiscard]] std::string pattern(std::size_t size, std::uint32_t salt);

}  // namespace mirrorfs::test
