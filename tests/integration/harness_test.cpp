// Tests of the test harness itself: MountGuard's readiness and failure
// reporting (a daemon that dies, an fd leak), and compare_trees, which the
// scenario tests rely on to declare two trees equal.
#include <fcntl.h>
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <chrono>
#include <string>

#include "tests/support/mount_guard.hpp"
#include "tests/support/mountinfo.hpp"
#include "tests/support/posix_script.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/tree_compare.hpp"

namespace mirrorfs::test {
namespace {

TEST(MountGuardTest, MountsServesAndUnmountsCleanly) {
  TempDir tmp("mirrorfs-harness");
  const std::string backing = tmp.mkdir("backing"), mnt = tmp.mkdir("mnt");
  {
    Ctx b(backing);
    ASSERT_EQ(b.put("hello", "world").ret, 0);
  }
  MountGuard m(backing, mnt);
  ASSERT_TRUE(m.ok()) << m.error();
  EXPECT_EQ(fstype_at(mnt), "fuse.mirrorfs");
  EXPECT_GT(m.baseline_fds(), 0);
  {
    Ctx x(mnt);
    EXPECT_EQ(x.slurp("hello").extra, "world");
  }
  EXPECT_TRUE(m.unmount());
  EXPECT_FALSE(m.ok());
  EXPECT_EQ(fstype_at(mnt), "");
}

TEST(MountGuardTest, DaemonThatCannotMountFailsFastWithItsLog) {
  TempDir tmp("mirrorfs-harness");
  const std::string mnt = tmp.mkdir("mnt");
  const auto start = std::chrono::steady_clock::now();
  EXPECT_NONFATAL_FAILURE(
      {
        MountGuard m(tmp.sub("does-not-exist"), mnt);
        EXPECT_FALSE(m.ok());
      },
      "before mounting");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(8))
      << "MountGuard should notice the dead daemon, not wait for its deadline";
  EXPECT_EQ(fstype_at(mnt), "");
}

TEST(MountGuardTest, FdLeakCheckFires) {
  TempDir tmp("mirrorfs-harness");
  const std::string backing = tmp.mkdir("backing"), mnt = tmp.mkdir("mnt");
  MountConfig cfg;
  cfg.fd_slack = -1000;  // any fd count is "a leak": the check must say so
  EXPECT_NONFATAL_FAILURE(
      {
        MountGuard m(backing, mnt, cfg);
        EXPECT_TRUE(m.ok());
      },
      "fd leak");
  EXPECT_EQ(fstype_at(mnt), "");
}

TEST(MountGuardTest, OpenFileIsSeenAsDaemonFd) {
  TempDir tmp("mirrorfs-harness");
  const std::string backing = tmp.mkdir("backing"), mnt = tmp.mkdir("mnt");
  MountGuard m(backing, mnt);
  ASSERT_TRUE(m.ok()) << m.error();
  const int before = m.daemon_fds();
  std::vector<int> fds;
  for (int i = 0; i < 8; ++i) {
    fds.push_back(::open((mnt + "/f" + std::to_string(i)).c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644));
    ASSERT_GE(fds.back(), 0);
  }
  EXPECT_GT(m.daemon_fds(), before) << "open files should hold daemon descriptors";
  for (int fd : fds) ::close(fd);
}

class TreeCompareTest : public ::testing::Test {
 protected:
  void SetUp() override {
    a_ = tmp_.mkdir("a");
    b_ = tmp_.mkdir("b");
    for (const std::string& root : {a_, b_}) {
      Ctx x(root);
      ASSERT_EQ(x.put("f", "content"), Outcome{});
      ASSERT_EQ(::mkdir(x.p("d").c_str(), 0750), 0);
      ASSERT_EQ(x.put("d/g", "g"), Outcome{});
      ASSERT_EQ(::link(x.p("f").c_str(), x.p("d/hard").c_str()), 0);
      ASSERT_EQ(::symlink("f", x.p("sl").c_str()), 0);
      ASSERT_EQ(::setxattr(x.p("f").c_str(), "user.k", "v", 1, 0), 0);
      ASSERT_EQ(::mkfifo(x.p("fifo").c_str(), 0600), 0);
      const timespec ts[2] = {{1, 2}, {3, 4}};
      for (const char* rel : {"f", "d/g", "d", "fifo", "sl", ""}) {
        ASSERT_EQ(::utimensat(AT_FDCWD, x.p(rel).c_str(), ts, AT_SYMLINK_NOFOLLOW), 0) << rel;
      }
    }
  }
  std::string diffs() { return join_lines(compare_trees(a_, b_)); }
  void touch_b(const char* rel, long nsec) {
    const timespec ts[2] = {{1, 2}, {3, nsec}};
    ASSERT_EQ(::utimensat(AT_FDCWD, (b_ + "/" + rel).c_str(), ts, AT_SYMLINK_NOFOLLOW), 0);
  }
  TempDir tmp_{"mirrorfs-cmptree"};
  std::string a_, b_;
};

TEST_F(TreeCompareTest, IdenticalTreesHaveNoDifferences) { EXPECT_EQ(diffs(), ""); }

TEST_F(TreeCompareTest, SeesContentOfSameSize) {
  Ctx x(b_);
  ASSERT_EQ(::unlink(x.p("d/g").c_str()), 0);
  ASSERT_EQ(x.put("d/g", "G"), Outcome{});
  touch_b("d/g", 4);
  touch_b("d", 4);
  EXPECT_NE(diffs().find("\"d/g\": content differs at offset 0"), std::string::npos) << diffs();
}

TEST_F(TreeCompareTest, SeesModeOwnerMtimeXattrSymlinkAndLinks) {
  ASSERT_EQ(::chmod((b_ + "/d").c_str(), 0755), 0);
  ASSERT_EQ(::lchown((b_ + "/sl").c_str(), 5, 6), 0);
  ASSERT_EQ(::setxattr((b_ + "/f").c_str(), "user.k", "w", 1, 0), 0);
  touch_b("fifo", 5);
  // Break the hard link in b: same content, separate inode.
  ASSERT_EQ(::unlink((b_ + "/d/hard").c_str()), 0);
  {
    Ctx x(b_);
    ASSERT_EQ(x.put("d/hard", "content"), Outcome{});
  }
  touch_b("d/hard", 4);
  touch_b("d", 4);
  touch_b("f", 4);
  const std::string d = diffs();
  EXPECT_NE(d.find("\"d\": mode 750 vs 755"), std::string::npos) << d;
  EXPECT_NE(d.find("\"sl\": owner 0:0 vs 5:6"), std::string::npos) << d;
  EXPECT_NE(d.find("\"f\": xattrs differ"), std::string::npos) << d;
  EXPECT_NE(d.find("\"fifo\": mtime 3.000000004 vs 3.000000005"), std::string::npos) << d;
  EXPECT_NE(d.find("\"d/hard\": hard-link group"), std::string::npos) << d;
}

TEST_F(TreeCompareTest, SeesMissingEntriesAndTypeChanges) {
  ASSERT_EQ(::unlink((b_ + "/fifo").c_str()), 0);
  ASSERT_EQ(::mkdir((b_ + "/fifo").c_str(), 0600), 0);
  ASSERT_EQ(::unlink((b_ + "/sl").c_str()), 0);
  const std::string d = diffs();
  EXPECT_NE(d.find("\"fifo\": type fifo vs dir"), std::string::npos) << d;
  EXPECT_NE(d.find("\"sl\": only in"), std::string::npos) << d;
}

}  // namespace
}  // namespace mirrorfs::test
