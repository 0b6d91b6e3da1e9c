#include "tests/support/scenario.hpp"

#include <gtest/gtest.h>

#include "tests/support/replication.hpp"

namespace mirrorfs::test {

std::vector<std::string> ssh_target(const SshdServer& sshd, const std::string& rep) {
  return {"target=" + sshd.url(rep), "ssh=" + sshd.ssh_command(),
          std::string("agent=") + MIRRORFS_BIN};
}

CompareOptions exact() {
  CompareOptions o;
  o.holes = true;
  return o;
}

void expect_level(const std::string& src, const std::string& rep, const std::string& mnt,
                  CompareOptions opt, std::chrono::milliseconds timeout) {
  std::string why;
  ASSERT_TRUE(wait_drained(mnt, timeout, &why)) << why;
  const auto diffs = compare_trees(src, rep, opt);
  EXPECT_TRUE(diffs.empty()) << diffs.size() << " differences:\n" << join_lines(diffs);
}

std::string pattern(std::size_t size, std::uint32_t salt) {
  std::string data(size, '\0');
  std::uint64_t x = 0x9e3779b97f4a7c15ull ^ salt;
  for (auto& c : data) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    c = static_cast<char>(x);
  }
  return data;
}

}  // namespace mirrorfs::test
