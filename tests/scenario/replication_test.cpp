// Replication end to end: the real daemon mounted over a source, shipping to
// a local target and to an ssh target (a real sshd on 127.0.0.1 started by
// the test), then an exact tree comparison after draining by status.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

#include "tests/support/mount_guard.hpp"
#include "tests/support/process.hpp"
#include "tests/support/replication.hpp"
#include "tests/support/scenario.hpp"
#include "tests/support/sshd_server.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/tree_compare.hpp"
#include "tests/support/workload.hpp"

namespace mirrorfs::test {
namespace {

using namespace std::chrono_literals;

TEST(Replication, ScriptedWorkloadToLocalTarget) {
  TempDir t;
  const std::string src = t.mkdir("src"), mnt = t.mkdir("mnt"), rep = t.mkdir("rep");
  MountGuard m(src, mnt, {.options = {"target=" + rep}});
  ASSERT_TRUE(m.ok()) << m.error();
  ASSERT_EQ(run_scripted_workload(mnt), "");
  expect_level(src, rep, mnt);
}

TEST(Replication, ScriptedWorkloadToSshTarget) {
  SshdServer sshd;
  ASSERT_TRUE(sshd.ok()) << sshd.error();
  TempDir t;
  const std::string src = t.mkdir("src"), mnt = t.mkdir("mnt"), rep = t.mkdir("rep");
  MountGuard m(src, mnt, {.options = ssh_target(sshd, rep)});
  ASSERT_TRUE(m.ok()) << m.error();
  ASSERT_EQ(run_scripted_workload(mnt), "");
  expect_level(src, rep, mnt);
}

// What was there before the mount reaches the target too (startup pass).
TEST(Replication, InitialSyncShipsThePreexistingTree) {
  TempDir t;
  const std::string src = t.mkdir("src"), mnt = t.mkdir("mnt"), rep = t.mkdir("rep");
  ASSERT_EQ(run_scripted_workload(src), "");  // straight into the backing directory
  MountGuard m(src, mnt, {.options = {"target=" + rep}});
  ASSERT_TRUE(m.ok()) << m.error();
  expect_level(src, rep, mnt);
  run_random_workload(mnt, {.seed = seed(), .threads = 2, .ops_per_thread = 100});
  expect_level(src, rep, mnt);
}

TEST(Replication, TwoTargetsBothConverge) {
  TempDir t;
  const std::string src = t.mkdir("src"), mnt = t.mkdir("mnt");
  const std::string r1 = t.mkdir("r1"), r2 = t.mkdir("r2");
  MountGuard m(src, mnt, {.options = {"target=" + r1, "target=file://" + r2}});
  ASSERT_TRUE(m.ok()) << m.error();
  ASSERT_EQ(run_scripted_workload(mnt), "");
  expect_level(src, r1, mnt);
  expect_level(src, r2, mnt);
}

// Several writers race on a small namespace while replication ships; after
// they stop and the replicator drains, the replica equals the source.
TEST(Replication, RandomConcurrentWorkloadConverges) {
  for (int round = 0; round < 3; ++round) {
    const std::uint64_t s = seed() + static_cast<std::uint64_t>(round);
    SCOPED_TRACE(testing::Message() << "MIRRORFS_SEED=" << s);
    TempDir t;
    const std::string src = t.mkdir("src"), mnt = t.mkdir("mnt"), rep = t.mkdir("rep");
    MountGuard m(src, mnt, {.options = {"target=" + rep, "delay=1ms"}});
    ASSERT_TRUE(m.ok()) << m.error();
    run_random_workload(mnt, {.seed = s, .threads = 4, .ops_per_thread = 300});
    expect_level(src, rep, mnt);
    if (HasFailure()) break;
  }
}

TEST(Replication, RandomConcurrentWorkloadOverSsh) {
  SshdServer sshd;
  ASSERT_TRUE(sshd.ok()) << sshd.error();
  const std::uint64_t s = seed();
  SCOPED_TRACE(testing::Message() << "MIRRORFS_SEED=" << s);
  TempDir t;
  const std::string src = t.mkdir("src"), mnt = t.mkdir("mnt"), rep = t.mkdir("rep");
  MountGuard m(src, mnt, {.options = ssh_target(sshd, rep)});
  ASSERT_TRUE(m.ok()) << m.error();
  run_random_workload(mnt, {.seed = s, .threads = 4, .ops_per_thread = 300});
  expect_level(src, rep, mnt);
}

void write_random(const std::string& path, std::size_t size, std::uint32_t salt) {
  const std::string data = pattern(size, salt);
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(::write(fd, data.data(), data.size()), static_cast<ssize_t>(size));
  ::close(fd);
}

// A rename is replayed as a rename; a range edit ships just those ranges.
TEST(Replication, BytesOnTheWire) {
  TempDir t;
  const std::string src = t.mkdir("src"), mnt = t.mkdir("mnt"), rep = t.mkdir("rep");
  MountGuard m(src, mnt, {.options = {"target=" + rep}});
  ASSERT_TRUE(m.ok()) << m.error();

  // 100 files of 1 MiB in a directory, then rename the directory.
  ASSERT_EQ(::mkdir((mnt + "/photos").c_str(), 0755), 0);
  for (std::uint32_t i = 0; i < 100; ++i)
    write_random(mnt + "/photos/p" + std::to_string(i), 1 << 20, i);
  std::string why;
  ASSERT_TRUE(wait_drained(mnt, 60s, &why)) << why;
  std::uint64_t before = bytes_sent(mnt);
  ASSERT_EQ(::rename((mnt + "/photos").c_str(), (mnt + "/albums").c_str()), 0);
  ASSERT_TRUE(wait_drained(mnt, 60s, &why)) << why;
  const std::uint64_t rename_bytes = bytes_sent(mnt) - before;
  EXPECT_LT(rename_bytes, 64u << 10) << "renaming a 100 MiB directory sent " << rename_bytes;

  // 16 overwrites of 4 KiB in a 1 GiB file (sparse, so the test stays fast).
  const std::string big = mnt + "/big.img";
  int fd = ::open(big.c_str(), O_RDWR | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, 1l << 30), 0);
  std::string block(4096, 'x');
  ASSERT_EQ(::pwrite(fd, block.data(), block.size(), 12345), 4096);
  ::close(fd);
  ASSERT_TRUE(wait_drained(mnt, 60s, &why)) << why;
  before = bytes_sent(mnt);
  fd = ::open(big.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  for (int i = 0; i < 16; ++i) {
    block.assign(4096, static_cast<char>('a' + i));
    ASSERT_EQ(::pwrite(fd, block.data(), block.size(), static_cast<off_t>(i) * (60l << 20) + 777),
              4096);
  }
  ::close(fd);
  ASSERT_TRUE(wait_drained(mnt, 60s, &why)) << why;
  const std::uint64_t edit_bytes = bytes_sent(mnt) - before;
  EXPECT_LT(edit_bytes, 256u << 10) << "16 x 4 KiB edits of a 1 GiB file sent " << edit_bytes;
  expect_level(src, rep, mnt);
}

}  // namespace
}  // namespace mirrorfs::test
