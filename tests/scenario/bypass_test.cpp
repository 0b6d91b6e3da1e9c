// Writes that bypass the mount (straight to the backing directory), end to
// end: the real daemon with its scanner, a local target, an exact tree
// comparison once everything has landed. Also the scanner's lost-event paths
// (a queue overflow, a watch limit lower than the tree) and its cost: bytes
// on the wire for a workload written only through the mount, scan=yes
// against scan=no.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/mount_guard.hpp"
#include "tests/support/process.hpp"
#include "tests/support/replication.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/tree_compare.hpp"

namespace mirrorfs::test {
namespace {

using namespace std::chrono_literals;

// Bypass changes reach the journal a little after they happen (the scanner
// handles events after a short delay), so "drained" alone does not mean
// "level": wait for drained AND equal, to a deadline.
void expect_converges(const std::string& src, const std::string& rep, const std::string& mnt,
                      std::chrono::seconds timeout = 60s) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  std::vector<std::string> diffs;
  std::string why;
  while (std::chrono::steady_clock::now() < end) {
    if (wait_drained(mnt, 30s, &why)) {
      diffs = compare_trees(src, rep);
      if (diffs.empty()) return;
    }
    std::this_thread::sleep_for(200ms);
  }
  ADD_FAILURE() << "not level after " << timeout.count() << "s (" << why << "), "
                << diffs.size() << " differences:\n"
                << join_lines(diffs);
}

// Sets a sysctl for the scope of a test and puts the old value back.
class SysctlGuard {
 public:
  SysctlGuard(std::string path, const std::string& value) : path_(std::move(path)) {
    std::ifstream in(path_);
    in >> old_;
    std::ofstream(path_) << value;
    std::ifstream check(path_);
    std::string now;
    check >> now;
    ok_ = !old_.empty() && now == value;
  }
  ~SysctlGuard() {
    if (!old_.empty()) std::ofstream(path_) << old_;
  }
  SysctlGuard(const SysctlGuard&) = delete;
  SysctlGuard& operator=(const SysctlGuard&) = delete;
  [[nodiscard]] bool ok() const { return ok_; }

 private:
  std::string path_, old_;
  bool ok_ = false;
};

void put(const std::string& p, const std::string& data, int flags = O_TRUNC) {
  const int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | flags, 0644);
  if (fd < 0) return;  // races with renames/removals are part of the workload
  (void)!::write(fd, data.data(), data.size());
  ::close(fd);
}

void pwrite_at(const std::string& p, const std::string& data, off_t off) {
  const int fd = ::open(p.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return;
  (void)!::pwrite(fd, data.data(), data.size(), off);
  ::close(fd);
}

std::string bytes(std::mt19937_64& rng, std::size_t n) {
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>('a' + rng() % 26);
  return s;
}

// One writer's random ops on a small shared namespace under `root`.
void random_mix(const std::string& root, std::uint64_t seed, int ops, bool move_dirs) {
  std::mt19937_64 rng(seed);
  const char* dirs[] = {"", "d0/", "d1/", "d0/e/"};
  auto name = [&] {
    return root + "/" + dirs[rng() % 4] + "f" + std::to_string(rng() % 6);
  };
  for (int i = 0; i < ops; ++i) {
    switch (rng() % 10) {
      case 0: case 1: case 2:
        pwrite_at(name(), bytes(rng, 1 + rng() % 5000), static_cast<off_t>(rng() % 20000));
        break;
      case 3: put(name(), bytes(rng, rng() % 3000), O_APPEND); break;
      case 4: put(name(), bytes(rng, rng() % 9000)); break;
      case 5: (void)::truncate(name().c_str(), static_cast<off_t>(rng() % 10000)); break;
      case 6: (void)::unlink(name().c_str()); break;
      case 7: (void)::rename(name().c_str(), name().c_str()); break;
      case 8: (void)::chmod(name().c_str(), (rng() % 2) ? 0600 : 0644); break;
      case 9: {
        const std::string d = root + "/" + dirs[1 + rng() % 3];
        if (move_dirs && rng() % 3 == 0) {
          (void)::rename((root + "/d1").c_str(), (root + "/d0/x" + std::to_string(rng() % 2)).c_str());
          (void)::mkdir((root + "/d1").c_str(), 0755);
        } else {
          (void)::mkdir(d.c_str(), 0755);
        }
        break;
      }
    }
  }
}

void interleaved(bool move_dirs) {
  for (int round = 0; round < 3; ++round) {
    const std::uint64_t s = seed() + static_cast<std::uint64_t>(round);
    SCOPED_TRACE(testing::Message() << "MIRRORFS_SEED=" << s);
    std::printf("MIRRORFS_SEED=%llu\n", static_cast<unsigned long long>(s));
    TempDir t;
    const std::string src = t.mkdir("src"), mnt = t.mkdir("mnt"), rep = t.mkdir("rep");
    t.mkdir("src/d0");
    t.mkdir("src/d0/e");
    t.mkdir("src/d1");
    std::vector<std::string> opts{"target=" + rep, "delay=1ms"};
    if (std::getenv("MIRRORFS_TEST_DEBUG") != nullptr) opts.emplace_back("log_level=debug");
    MountGuard m(src, mnt, {.options = opts});
    ASSERT_TRUE(m.ok()) << m.error();
    // One writer behind the mount, one through it, on the same names.
    std::thread bypass([&] { random_mix(src, s * 2, 1000, move_dirs); });
    std::thread own([&] { random_mix(mnt, s * 2 + 1, 1000, move_dirs); });
    bypass.join();
    own.join();
    // And sequentially interleaved, the same file both ways in turn.
    std::mt19937_64 rng(s);
    for (int i = 0; i < 100; ++i) {
      const std::string& base = (i % 2) ? src : mnt;
      pwrite_at(base + "/f0", bytes(rng, 100), static_cast<off_t>(rng() % 4000));
      if (::access((base + "/f0").c_str(), F_OK) != 0) put(base + "/f0", "x");
    }
    expect_converges(src, rep, mnt);
    if (testing::Test::HasFailure()) std::printf("%s\n", m.log().c_str());
    EXPECT_TRUE(m.unmount());
    if (testing::Test::HasFailure()) break;
  }
}

TEST(Bypass, InterleavedWithMountWritesConverges) { interleaved(false); }

// KNOWN FAILURE (about 1 run in 2 at 3 rounds, issue 4): directories renamed on both
// sides at once. A rename behind the mount reaches the journal after the
// scanner sees it, so a rename through the mount on the same names may be
// replayed on the target before it, on a state that never existed there;
// what it then moves is not re-shipped. Needs the journal to take a
// late namespace change as "state unknown under these names" (its retry()
// path) and the mount's own renames of directories to be checked too.
TEST(Bypass, DISABLED_InterleavedWithDirectoryRenamesConverges) { interleaved(true); }

TEST(Bypass, QueueOverflowRescansAndConverges) {
  // The queue length is taken when the daemon's inotify instance is made.
  SysctlGuard q("/proc/sys/fs/inotify/max_queued_events", "64");
  ASSERT_TRUE(q.ok()) << "cannot set fs.inotify.max_queued_events";
  TempDir t;
  const std::string src = t.mkdir("src"), mnt = t.mkdir("mnt"), rep = t.mkdir("rep");
  for (int d = 0; d < 4; ++d) {
    t.mkdir("src/d" + std::to_string(d));
    for (int f = 0; f < 20; ++f) put(src + "/d" + std::to_string(d) + "/old" + std::to_string(f), "old");
  }
  MountGuard m(src, mnt, {.options = {"target=" + rep, "delay=1ms"}});
  ASSERT_TRUE(m.ok()) << m.error();
  ASSERT_TRUE(wait_drained(mnt, 60s));
  std::mt19937_64 rng(seed());
  // The daemon is stopped during the burst, so nothing reads its inotify
  // queue: 64 slots overflow for certain, whatever the machine's speed.
  ASSERT_EQ(::kill(m.pid(), SIGSTOP), 0);
  for (int d = 0; d < 4; ++d) {  // a burst far larger than 64 events
    const std::string dir = src + "/d" + std::to_string(d);
    for (int f = 0; f < 400; ++f) put(dir + "/new" + std::to_string(f), bytes(rng, 100));
    for (int f = 0; f < 20; f += 2) put(dir + "/old" + std::to_string(f), "changed", O_APPEND);
    for (int f = 1; f < 20; f += 4) (void)::unlink((dir + "/old" + std::to_string(f)).c_str());
    (void)::rename((dir + "/old3").c_str(), (dir + "/renamed3").c_str());
  }
  (void)::mkdir((src + "/d0/newdir").c_str(), 0755);
  put(src + "/d0/newdir/inside", "inside");
  ASSERT_EQ(::kill(m.pid(), SIGCONT), 0);
  put(mnt + "/through-the-mount", "own");
  expect_converges(src, rep, mnt);
  EXPECT_NE(m.log().find("inotify queue overflowed"), std::string::npos) << m.log();
  EXPECT_TRUE(m.unmount());
}

// Watches in use by every process of this user (inotify fdinfo "wd:" lines).
int watches_in_use() {
  int n = 0;
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return 0;
  while (dirent* p = ::readdir(proc)) {
    if (p->d_name[0] < '0' || p->d_name[0] > '9') continue;
    const std::string fdinfo = std::string("/proc/") + p->d_name + "/fdinfo";
    DIR* fds = ::opendir(fdinfo.c_str());
    if (fds == nullptr) continue;
    while (dirent* f = ::readdir(fds)) {
      if (f->d_name[0] == '.') continue;
      std::ifstream in(fdinfo + "/" + f->d_name);
      std::string line;
      while (std::getline(in, line))
        if (line.rfind("inotify wd:", 0) == 0) ++n;
    }
    ::closedir(fds);
  }
  ::closedir(proc);
  return n;
}

TEST(Bypass, TreeLargerThanTheWatchLimitConverges) {
  TempDir t;
  const std::string src = t.mkdir("src"), mnt = t.mkdir("mnt"), rep = t.mkdir("rep");
  for (int a = 0; a < 6; ++a) {
    t.mkdir("src/a" + std::to_string(a));
    for (int b = 0; b < 6; ++b) {
      t.mkdir("src/a" + std::to_string(a) + "/b" + std::to_string(b));
      put(src + "/a" + std::to_string(a) + "/b" + std::to_string(b) + "/f", "old");
    }
  }
  // 43 directories; room for about 10 more watches than are in use now.
  SysctlGuard w("/proc/sys/fs/inotify/max_user_watches", std::to_string(watches_in_use() + 10));
  ASSERT_TRUE(w.ok()) << "cannot set fs.inotify.max_user_watches";
  MountGuard m(src, mnt, {.options = {"target=" + rep, "delay=1ms"}});
  ASSERT_TRUE(m.ok()) << m.error();
  ASSERT_TRUE(wait_drained(mnt, 60s));
  std::mt19937_64 rng(seed());
  for (int a = 0; a < 6; ++a) {
    for (int b = 0; b < 6; ++b) {
      const std::string d = src + "/a" + std::to_string(a) + "/b" + std::to_string(b);
      put(d + "/f", bytes(rng, 50), O_APPEND);
      put(d + "/g", bytes(rng, 50));
      if (b == 5) (void)::unlink((d + "/f").c_str());
    }
    (void)::mkdir((src + "/a" + std::to_string(a) + "/new").c_str(), 0755);
    put(src + "/a" + std::to_string(a) + "/new/h", "h");
  }
  (void)::rename((src + "/a5/b0").c_str(), (src + "/a5/b0-renamed").c_str());
  expect_converges(src, rep, mnt);
  const std::string log = m.log();
  EXPECT_NE(log.find("inotify watch limit reached"), std::string::npos) << log;
  EXPECT_TRUE(m.unmount());
}

// A deterministic workload through the mount only. Phase 1 writes new files
// in chunks; phase 2 edits them: random in-place writes, appends, truncates,
// chmods, renames (shipped as ranges and ops, where a scanner re-shipping the
// mount's own writes would show most).
void measured_workload(const std::string& mnt, int phase) {
  std::mt19937_64 rng(42 + static_cast<std::uint64_t>(phase));
  std::vector<std::string> files;
  for (int i = 0; i < 40; ++i) files.push_back(mnt + "/d" + std::to_string(i % 4) + "/f" + std::to_string(i));
  if (phase == 1) {
    for (int d = 0; d < 4; ++d) ::mkdir((mnt + "/d" + std::to_string(d)).c_str(), 0755);
    for (const std::string& f : files) {
      const int fd = ::open(f.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      for (int c = 0; c < 16; ++c) {
        const std::string chunk = bytes(rng, 16384);
        (void)!::write(fd, chunk.data(), chunk.size());
      }
      ::close(fd);
    }
    return;
  }
  for (int i = 0; i < 300; ++i)
    pwrite_at(files[rng() % files.size()], bytes(rng, 4096), static_cast<off_t>(rng() % (255 * 1024)));
  for (int i = 0; i < 40; ++i) put(files[rng() % files.size()], bytes(rng, 1000), O_APPEND);
  for (int i = 0; i < 10; ++i) (void)::truncate(files[rng() % files.size()].c_str(), 100000);
  for (int i = 0; i < 10; ++i) (void)::chmod(files[rng() % files.size()].c_str(), 0600);
  for (int i = 0; i < 10; ++i) (void)::rename(files[i].c_str(), (files[i] + ".moved").c_str());
  (void)::rename((mnt + "/d3").c_str(), (mnt + "/d3-moved").c_str());
}

struct Wire {
  std::uint64_t total = 0, edits = 0;
  std::string scan_line;
};

// delay=3s: each phase ships as one batch, so the byte counts do not depend
// on how batches happen to be cut.
Wire wire_bytes(bool scan, bool writeback) {
  Wire w;
  TempDir t;
  const std::string src = t.mkdir("src"), mnt = t.mkdir("mnt"), rep = t.mkdir("rep");
  MountGuard m(src, mnt, {.options = {"target=" + rep, "delay=3s",
                                      std::string("scan=") + (scan ? "yes" : "no"),
                                      std::string("writeback=") + (writeback ? "yes" : "no")}});
  EXPECT_TRUE(m.ok()) << m.error();
  if (!m.ok()) return w;
  measured_workload(mnt, 1);
  expect_converges(src, rep, mnt);
  const std::uint64_t after_create = bytes_sent(mnt);
  measured_workload(mnt, 2);
  expect_converges(src, rep, mnt);
  w.total = bytes_sent(mnt);
  w.edits = w.total - after_create;
  EXPECT_TRUE(m.unmount());
  const std::string log = m.log();
  if (const auto at = log.find("scan: stopped"); at != std::string::npos)
    w.scan_line = log.substr(at, log.find('\n', at) - at);
  return w;
}

double pct(std::uint64_t with, std::uint64_t without) {
  return without ? 100.0 * (static_cast<double>(with) - static_cast<double>(without)) /
                       static_cast<double>(without)
                 : 0.0;
}

void five_percent(bool writeback) {
  const Wire without = wire_bytes(false, writeback);
  const Wire with = wire_bytes(true, writeback);
  std::printf("bytes on the wire, workload through the mount only (writeback=%s):\n"
              "  total: scan=no %llu, scan=yes %llu (%+.2f%%)\n"
              "  edits: scan=no %llu, scan=yes %llu (%+.2f%%)\n  %s\n",
              writeback ? "yes" : "no", static_cast<unsigned long long>(without.total),
              static_cast<unsigned long long>(with.total), pct(with.total, without.total),
              static_cast<unsigned long long>(without.edits),
              static_cast<unsigned long long>(with.edits), pct(with.edits, without.edits),
              with.scan_line.c_str());
  ASSERT_GT(without.total, 0u);
  EXPECT_LE(static_cast<double>(with.total), 1.05 * static_cast<double>(without.total));
  EXPECT_LE(static_cast<double>(with.edits), 1.05 * static_cast<double>(without.edits));
}

TEST(Bypass, ScannerCostsAtMostFivePercentOnTheWire) { five_percent(false); }

TEST(Bypass, ScannerCostsAtMostFivePercentWithWritebackCache) { five_percent(true); }

}  // namespace
}  // namespace mirrorfs::test
