// The ways a user starts and stops mirrorfs: daemonized `mirrorfs SRC MNT`,
// `mount -t mirrorfs` and an fstab line through /sbin/mount.mirrorfs, mount
// over the data directory in place, `umount` stopping the daemon; and one
// clear error line with nothing mounted for bad input.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>

#include "tests/support/mountinfo.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

namespace mirrorfs::test {
namespace {

using namespace std::chrono_literals;

void write_file(const std::string& path, const std::string& content) {
  std::ofstream(path, std::ios::binary) << content;
}

// pids of running mirrorfs daemons whose command line names `mountpoint`.
std::vector<pid_t> daemons_for(const std::string& mountpoint) {
  std::vector<pid_t> out;
  auto r = run_command({"pgrep", "-f", "-x", std::string(".*mirrorfs .*") + mountpoint + ".*"});
  std::istringstream in(r.output);
  for (pid_t p; in >> p;) out.push_back(p);
  return out;
}

bool wait_until(const std::function<bool()>& cond, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return cond();
}

// Unmounts whatever the test left at mnt, even when an assertion failed.
struct UnmountOnExit {
  std::string mnt;
  ~UnmountOnExit() {
    if (fstype_at(mnt) == "fuse.mirrorfs") run_command({"fusermount3", "-u", "-z", mnt});
  }
};

TEST(MountHelper, DaemonizedMountServesAndUmountStopsTheDaemon) {
  TempDir t;
  const std::string src = t.mkdir("src"), mnt = t.mkdir("mnt");
  UnmountOnExit guard{mnt};
  write_file(src + "/before", "1");
  auto r = run_command({MIRRORFS_BIN, src, mnt});
  ASSERT_TRUE(r.ok()) << r.output;
  EXPECT_EQ(r.output, "");  // daemonized: nothing printed, returned once mounted
  ASSERT_EQ(fstype_at(mnt), "fuse.mirrorfs");  // live when the command returned
  EXPECT_EQ(read_file(mnt + "/before"), "1");
  write_file(mnt + "/through", "2");
  EXPECT_EQ(read_file(src + "/through"), "2");
  ASSERT_EQ(daemons_for(mnt).size(), 1u);

  auto u = run_command({"umount", mnt});
  ASSERT_TRUE(u.ok()) << u.output;
  EXPECT_EQ(fstype_at(mnt), "");
  EXPECT_TRUE(wait_until([&] { return daemons_for(mnt).empty(); }, 10s))
      << "the daemon is still running after umount";
}

TEST(MountHelper, MountOverTheDataDirectoryInPlace) {
  TempDir t;
  const std::string data = t.mkdir("data");
  UnmountOnExit guard{data};
  write_file(data + "/old", "kept");
  auto r = run_command({MIRRORFS_BIN, data, data});
  ASSERT_TRUE(r.ok()) << r.output;
  ASSERT_EQ(fstype_at(data), "fuse.mirrorfs");
  EXPECT_EQ(read_file(data + "/old"), "kept");
  write_file(data + "/new", "through the mount");
  ASSERT_TRUE(run_command({"umount", data}).ok());
  EXPECT_EQ(read_file(data + "/new"), "through the mount");  // landed in the backing dir
}

TEST(MountHelper, MountTypeMirrorfsAndFstabLine) {
  struct stat st {};
  ASSERT_EQ(::stat("/sbin/mount.mirrorfs", &st), 0)
      << "/sbin/mount.mirrorfs is not installed: run `cmake --install build` (scripts/test.sh does)";
  TempDir t;
  const std::string src = t.mkdir("src with space"), mnt = t.mkdir("mnt");
  UnmountOnExit guard{mnt};
  ::setenv("MIRRORFS_BIN", MIRRORFS_BIN, 1);  // mount.mirrorfs runs this build's binary

  auto r = run_command({"mount", "-t", "mirrorfs", src, mnt, "-o", "delay=5ms,_netdev"});
  ASSERT_TRUE(r.ok()) << r.output;
  ASSERT_EQ(fstype_at(mnt), "fuse.mirrorfs");
  write_file(mnt + "/f", "x");
  EXPECT_EQ(read_file(src + "/f"), "x");
  ASSERT_TRUE(run_command({"umount", mnt}).ok());
  ASSERT_TRUE(wait_until([&] { return daemons_for(mnt).empty(); }, 10s));

  // fstab escapes a space in a field as \040.
  std::string src_field;
  for (char ch : src) src_field += ch == ' ' ? std::string("\\040") : std::string(1, ch);
  const std::string fstab = t.sub("fstab");
  write_file(fstab, src_field + " " + mnt +
                        " mirrorfs defaults,_netdev,nofail,noauto,"
                        "x-systemd.requires=network-online.target 0 0\n");
  auto m = run_command({"mount", "-T", fstab, mnt});
  ASSERT_TRUE(m.ok()) << m.output;
  ASSERT_EQ(fstype_at(mnt), "fuse.mirrorfs");
  EXPECT_EQ(read_file(mnt + "/f"), "x");
  ASSERT_TRUE(run_command({"umount", mnt}).ok());
  EXPECT_TRUE(wait_until([&] { return daemons_for(mnt).empty(); }, 10s));
  ::unsetenv("MIRRORFS_BIN");
}

// Each bad input: exit status 1, exactly one line on stderr that names the
// problem, and nothing mounted.
TEST(MountHelper, BadInputGetsOneClearLineAndMountsNothing) {
  TempDir t;
  const std::string src = t.mkdir("src"), mnt = t.mkdir("mnt");
  write_file(src + "/file", "");
  struct Case {
    std::vector<std::string> args;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {{t.sub("missing"), mnt}, "No such file"},
      {{src + "/file", mnt}, "not a directory"},
      {{src, t.sub("nomnt")}, "No such file"},
      {{src, mnt, "-o", "bogus_option"}, "bogus_option"},
      {{src, mnt, "-o", "delay=soon"}, "delay"},
      {{src, mnt, "-o", "delete=perhaps"}, "delete"},
      {{src}, "required"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> argv{MIRRORFS_BIN};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    auto r = run_command(argv);
    EXPECT_TRUE(WIFEXITED(r.status) && WEXITSTATUS(r.status) != 0) << r.output;
    EXPECT_NE(r.output.find(c.expect), std::string::npos) << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
    EXPECT_EQ(fstype_at(mnt), "");
  }
}

TEST(MountHelper, AlreadyMountedMountpointIsRefused) {
  TempDir t;
  const std::string src = t.mkdir("src"), mnt = t.mkdir("mnt");
  UnmountOnExit guard{mnt};
  ASSERT_TRUE(run_command({MIRRORFS_BIN, src, mnt}).ok());
  auto again = run_command({MIRRORFS_BIN, src, mnt});
  EXPECT_FALSE(again.ok());
  EXPECT_NE(again.output.find("already a mirrorfs mount"), std::string::npos) << again.output;
  const auto mounts = read_mountinfo();
  EXPECT_EQ(std::count_if(mounts.begin(), mounts.end(),
                          [&](const MountEntry& e) { return e.mount_point == mnt; }),
            1)
      << "a second mount was stacked";
  ASSERT_TRUE(run_command({"umount", mnt}).ok());
}

}  // namespace
}  // namespace mirrorfs::test
