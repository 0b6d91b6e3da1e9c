// `mirrorfs status`: what an operator sees for a live mount, and a clear
// answer for a path that is not one.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <fstream>

#include "tests/support/mount_guard.hpp"
#include "tests/support/process.hpp"
#include "tests/support/replication.hpp"
#include "tests/support/temp_dir.hpp"

namespace mirrorfs::test {
namespace {

using namespace std::chrono_literals;

TEST(Status, ReportsEachTargetAsTextAndJson) {
  TempDir t;
  const std::string src = t.mkdir("src"), mnt = t.mkdir("mnt"), rep = t.mkdir("rep");
  MountGuard m(src, mnt, {.options = {"target=" + rep}});
  ASSERT_TRUE(m.ok()) << m.error();
  std::ofstream(mnt + "/f") << "data";
  std::string why;
  ASSERT_TRUE(wait_drained(mnt, 20s, &why)) << why;

  auto text = run_command({MIRRORFS_BIN, "status", mnt});
  ASSERT_TRUE(text.ok()) << text.output;
  EXPECT_NE(text.output.find("target 1: " + rep), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("state:      connected"), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("last error: none"), std::string::npos) << text.output;

  const auto st = read_status(mnt);
  ASSERT_EQ(st.size(), 1u);
  EXPECT_TRUE(st[0].connected);
  EXPECT_EQ(st[0].pending, 0u);
  EXPECT_GE(st[0].files_sent, 1u);
  EXPECT_GT(st[0].bytes_sent, 4u);
  EXPECT_EQ(st[0].acked_seq, st[0].last_seq);
}

TEST(Status, NotAMirrorfsMountExitsTwoWithOneLine) {
  TempDir t;
  auto r = run_command({MIRRORFS_BIN, "status", t.path()});
  ASSERT_TRUE(WIFEXITED(r.status));
  EXPECT_EQ(WEXITSTATUS(r.status), 2);
  EXPECT_NE(r.output.find("is not a mirrorfs mount"), std::string::npos) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1);
}

TEST(Status, UnreachableTargetAtMountTimeMountsNothing) {
  TempDir t;
  const std::string src = t.mkdir("src"), mnt = t.mkdir("mnt");
  auto r = run_command({MIRRORFS_BIN, src, mnt, "-o",
                        "target=ssh://root@127.0.0.1:1/x,ssh=ssh -o ConnectTimeout=2 -o BatchMode=yes"},
                       30s);
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.output.find("unreachable"), std::string::npos) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  auto s = run_command({MIRRORFS_BIN, "status", mnt});
  EXPECT_EQ(WEXITSTATUS(s.status), 2) << "something is mounted: " << s.output;
}

}  // namespace
}  // namespace mirrorfs::test
