// Faults while replicating: the SSH session cut, the target's sshd down for a
// while, the target filesystem full. Each scenario ends with an exact
// comparison of source and target after draining: nothing may be lost.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

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

// Live children of `parent` whose command name is `comm` (/proc/PID/stat).
std::vector<pid_t> children_named(pid_t parent, const std::string& comm) {
  std::vector<pid_t> out;
  DIR* d = ::opendir("/proc");
  if (d == nullptr) return out;
  while (const dirent* e = ::readdir(d)) {
    const pid_t pid = static_cast<pid_t>(std::atoi(e->d_name));
    if (pid <= 0) continue;
    const std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
    const auto open = stat.find('('), close = stat.rfind(')');
    if (open == std::string::npos || close == std::string::npos || close + 4 > stat.size()) continue;
    const std::string name = stat.substr(open + 1, close - open - 1);
    const pid_t ppid = static_cast<pid_t>(std::atoi(stat.c_str() + close + 4));
    const bool zombie = stat[close + 2] == 'Z';  // killed already, not reaped yet
    if (ppid == parent && name == comm && !zombie) out.push_back(pid);
  }
  ::closedir(d);
  return out;
}

bool log_has(const MountGuard& m, const std::string& needle) {
  return m.log().find(needle) != std::string::npos;
}

// The ssh client carrying the session is killed twice mid-workload; the
// sender reconnects and nothing is lost.
TEST(Faults, SshSessionKilledMidWorkload) {
  SshdServer sshd;
  ASSERT_TRUE(sshd.ok()) << sshd.error();
  const std::uint64_t s = seed();
  SCOPED_TRACE(testing::Message() << "MIRRORFS_SEED=" << s);
  TempDir t;
  const std::string src = t.mkdir("src"), mnt = t.mkdir("mnt"), rep = t.mkdir("rep");
  MountGuard m(src, mnt, {.options = ssh_target(sshd, rep), .fail_on_error_log = false});
  ASSERT_TRUE(m.ok()) << m.error();
  std::string why;
  ASSERT_TRUE(wait_drained(mnt, 60s, &why)) << why;  // connected: the kills hit live sessions
  std::atomic<bool> stop{false};
  std::thread writer([&] {  // writes go on until both kills are done
    for (std::uint64_t round = 0; !stop; ++round)
      run_random_workload(mnt, {.seed = s + round, .threads = 3, .ops_per_thread = 100});
  });
  int kills = 0;
  for (int i = 0; i < 400 && kills < 2; ++i) {
    std::this_thread::sleep_for(50ms);
    const auto st = read_status(mnt);
    if (st.size() != 1 || !st[0].connected) continue;  // wait for the reconnect first
    for (pid_t p : children_named(m.pid(), "ssh")) {
      ::kill(p, SIGKILL);
      ++kills;
    }
  }
  stop = true;
  writer.join();
  EXPECT_EQ(kills, 2) << "no ssh child of the daemon was found to kill";
  expect_level(src, rep, mnt);
  // One "connected to" line per session: the first, then one per kill.
  const std::string log = m.log();
  std::size_t sessions = 0;
  for (auto at = log.find("connected to"); at != std::string::npos; at = log.find("connected to", at + 1))
    ++sessions;
  EXPECT_GE(sessions, 1u + static_cast<std::size_t>(kills)) << log;
}

// sshd goes away (listener and sessions) for several seconds while writes go
// on; the sender retries with backoff and catches up once it is back.
TEST(Faults, SshdDownForAWhile) {
  SshdServer sshd;
  ASSERT_TRUE(sshd.ok()) << sshd.error();
  const std::uint64_t s = seed();
  SCOPED_TRACE(testing::Message() << "MIRRORFS_SEED=" << s);
  TempDir t;
  const std::string src = t.mkdir("src"), mnt = t.mkdir("mnt"), rep = t.mkdir("rep");
  MountGuard m(src, mnt, {.options = ssh_target(sshd, rep), .fail_on_error_log = false});
  ASSERT_TRUE(m.ok()) << m.error();
  std::string why;
  ASSERT_TRUE(wait_drained(mnt, 60s, &why)) << why;
  std::atomic<bool> stop{false};
  std::thread writer([&] {  // writes go on through the whole outage
    for (std::uint64_t round = 0; !stop; ++round)
      run_random_workload(mnt, {.seed = s + round, .threads = 2, .ops_per_thread = 100});
  });
  std::this_thread::sleep_for(200ms);
  sshd.stop();
  for (pid_t p : children_named(m.pid(), "ssh")) ::kill(p, SIGKILL);
  std::this_thread::sleep_for(8s);
  const auto st = read_status(mnt);
  if (st.size() != 1u) stop = true;
  ASSERT_EQ(st.size(), 1u);
  EXPECT_FALSE(st[0].connected) << "status should say the target is down";
  EXPECT_FALSE(st[0].last_error.empty());
  EXPECT_GT(st[0].pending, 0u);
  const bool restarted = sshd.start();
  std::this_thread::sleep_for(1s);
  stop = true;
  writer.join();
  ASSERT_TRUE(restarted) << sshd.error();
  expect_level(src, rep, mnt);
}

// A target on a tiny tmpfs fills up: the sender logs ENOSPC and keeps the
// changes; once the target has room again it converges. The source is never
// harmed.
TEST(Faults, TargetFilesystemFull) {
  TempDir t;
  const std::string src = t.mkdir("src"), mnt = t.mkdir("mnt"), rep = t.mkdir("rep");
  ASSERT_EQ(::mount("mirrorfs-test", rep.c_str(), "tmpfs", 0, "size=2m"), 0) << std::strerror(errno);
  struct Unmount {
    std::string dir;
    ~Unmount() { ::umount2(dir.c_str(), MNT_DETACH); }
  } unmount_rep{rep};
  {
    MountGuard m(src, mnt, {.options = {"target=" + rep}, .fail_on_error_log = false});
    ASSERT_TRUE(m.ok()) << m.error();
    std::string block(256 << 10, 'x');
    for (int i = 0; i < 24; ++i) {  // 6 MiB into a 2 MiB target
      block[0] = static_cast<char>('a' + i);
      std::ofstream(mnt + "/f" + std::to_string(i), std::ios::binary) << block;
    }
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (!log_has(m, "ENOSPC") && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(100ms);
    ASSERT_TRUE(log_has(m, "ENOSPC")) << m.log();
    const auto st = read_status(mnt);
    ASSERT_EQ(st.size(), 1u);
    EXPECT_GT(st[0].pending, 0u) << "the changes that did not fit must stay queued";
    for (int i = 0; i < 24; ++i)  // the source holds everything
      EXPECT_EQ(read_file(src + "/f" + std::to_string(i)).size(), block.size());
    ASSERT_EQ(::mount("mirrorfs-test", rep.c_str(), "tmpfs", MS_REMOUNT, "size=64m"), 0)
        << std::strerror(errno);
    expect_level(src, rep, mnt);
  }
}

}  // namespace
}  // namespace mirrorfs::test

namespace mirrorfs::test {
namespace {

// The source filesystem fills up: writes through the mount fail with ENOSPC
// as on the backing filesystem, the daemon stays up, and once space is freed
// the target converges.
TEST(Faults, SourceFilesystemFull) {
  TempDir t;
  const std::string src = t.mkdir("src"), mnt = t.mkdir("mnt"), rep = t.mkdir("rep");
  ASSERT_EQ(::mount("mirrorfs-test", src.c_str(), "tmpfs", 0, "size=4m"), 0) << std::strerror(errno);
  struct Unmount {
    std::string dir;
    ~Unmount() { ::umount2(dir.c_str(), MNT_DETACH); }
  } unmount_src{src};
  {
    MountGuard m(src, mnt, {.options = {"target=" + rep}});
    ASSERT_TRUE(m.ok()) << m.error();
    const std::string block = pattern(64 << 10, 1);
    int err = 0, files = 0;
    for (int i = 0; i < 200 && err == 0; ++i) {
      const int fd = ::open((mnt + "/f" + std::to_string(i)).c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ASSERT_GE(fd, 0) << std::strerror(errno);
      if (::write(fd, block.data(), block.size()) != static_cast<ssize_t>(block.size())) err = errno;
      if (::close(fd) != 0 && err == 0) err = errno;
      ++files;
    }
    EXPECT_EQ(err, ENOSPC) << "after " << files << " files";
    for (int i = 0; i < files; i += 2) ::unlink((mnt + "/f" + std::to_string(i)).c_str());
    std::ofstream(mnt + "/after") << "written once space was back";
    expect_level(src, rep, mnt);
    EXPECT_EQ(read_file(rep + "/after"), "written once space was back");
  }
}

// A large file rewritten and truncated over and over while it ships: the
// target ends with the final content, never a mix.
TEST(Faults, FileChangedWhileShipped) {
  TempDir t;
  const std::string src = t.mkdir("src"), mnt = t.mkdir("mnt"), rep = t.mkdir("rep");
  MountGuard m(src, mnt, {.options = {"target=" + rep, "delay=0"}});
  ASSERT_TRUE(m.ok()) << m.error();
  const std::string path = mnt + "/moving.bin";
  for (std::uint32_t round = 0; round < 12; ++round) {
    const std::string data = pattern((round % 3 + 1) * (3u << 20), round);
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | (round % 4 == 0 ? O_TRUNC : 0), 0644);
    ASSERT_GE(fd, 0);
    for (std::size_t off = 0; off < data.size(); off += 1 << 20)
      ASSERT_EQ(::pwrite(fd, data.data() + off, 1 << 20, static_cast<off_t>(off)), 1 << 20);
    ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(data.size() - round * 4096)), 0);
    ::close(fd);
    std::this_thread::sleep_for(std::chrono::milliseconds(round * 7 % 40));
  }
  expect_level(src, rep, mnt);
}

// Kills the agents (by their command line) the first time a staged temp
// shows in dir; while polling, a file at `watch` must be either absent or
// of `full_size` (0: not checked). Returns how many times it killed.
int kill_agent_when_staging(const std::string& dir, const std::string& watch, std::size_t full_size) {
  int kills = 0;
  for (int i = 0; i < 400 && kills == 0; ++i) {
    DIR* d = ::opendir(dir.c_str());
    bool staging = false;
    while (d != nullptr) {
      const dirent* e = ::readdir(d);
      if (e == nullptr) break;
      staging |= std::string(e->d_name).starts_with(".mirrorfs.tmp.");
    }
    if (d != nullptr) ::closedir(d);
    if (staging) {
      const auto r = run_command({"pkill", "-KILL", "-f", std::string("^") + MIRRORFS_BIN + " agent"});
      kills += r.ok() ? 1 : 0;
    }
    struct stat st {};
    if (full_size != 0 && ::stat(watch.c_str(), &st) == 0) {
      EXPECT_EQ(static_cast<std::size_t>(st.st_size), full_size) << "torn file under its final name";
      if (static_cast<std::size_t>(st.st_size) != full_size) break;
    }
    std::this_thread::sleep_for(5ms);
  }
  return kills;
}

// The agent is killed in the middle of shipping a new 128 MiB file (the
// startup pass copies it): the target never shows a torn file under the final
// name, and once the sender reconnects the file lands whole, with no temp
// left behind.
TEST(Faults, AgentKilledMidTransferLeavesNoTornFile) {
  SshdServer sshd;
  ASSERT_TRUE(sshd.ok()) << sshd.error();
  TempDir t;
  const std::string src = t.mkdir("src"), mnt = t.mkdir("mnt"), rep = t.mkdir("rep");
  const std::string data = pattern(128u << 20, 9);
  {
    std::ofstream f(src + "/big.bin", std::ios::binary);
    f.write(data.data(), static_cast<std::streamsize>(data.size()));
  }
  MountGuard m(src, mnt, {.options = ssh_target(sshd, rep), .fail_on_error_log = false});
  ASSERT_TRUE(m.ok()) << m.error();
  const int kills = kill_agent_when_staging(rep, rep + "/big.bin", data.size());
  EXPECT_EQ(kills, 1) << "the transfer was never seen staging";
  expect_level(src, rep, mnt);
}

// The same during journal shipping: a 64 MiB file written through the mount
// is being copied when the agent dies. After the reconnect the sender
// sweeps the directories of the broken batch for stale temps: the temp
// goes, the file lands whole.
TEST(Faults, AgentKilledDuringJournalShippingLeavesNoTemp) {
  SshdServer sshd;
  ASSERT_TRUE(sshd.ok()) << sshd.error();
  TempDir t;
  const std::string src = t.mkdir("src"), mnt = t.mkdir("mnt"), rep = t.mkdir("rep");
  MountGuard m(src, mnt, {.options = ssh_target(sshd, rep), .fail_on_error_log = false});
  ASSERT_TRUE(m.ok()) << m.error();
  std::string why;
  ASSERT_TRUE(wait_drained(mnt, 60s, &why)) << why;
  ASSERT_EQ(::mkdir((mnt + "/d").c_str(), 0755), 0);
  const std::string data = pattern(64u << 20, 11);
  std::thread writer([&] {
    const int fd = ::open((mnt + "/d/big.bin").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    for (std::size_t off = 0; fd >= 0 && off < data.size(); off += 256 << 10)
      (void)::pwrite(fd, data.data() + off, 256 << 10, static_cast<off_t>(off));
    if (fd >= 0) ::close(fd);
  });
  const int kills = kill_agent_when_staging(rep + "/d", "", 0);
  writer.join();
  EXPECT_EQ(kills, 1) << "the transfer was never seen staging";
  expect_level(src, rep, mnt);
  EXPECT_NE(m.log().find("stale temp(s) removed"), std::string::npos) << m.log();
}

}  // namespace
}  // namespace mirrorfs::test
