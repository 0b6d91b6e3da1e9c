// A write that bypasses the mount (straight to the backing directory) must
// not leave readers through the mount with stale pages, sizes or names: the
// scanner invalidates the kernel's caches. The attribute and entry timeouts
// are raised to 60 s here, so only an invalidation can make the new state
// visible within the deadline; open() sets keep_cache, so without one the
// old pages would stay for as long as the inode is cached.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include "tests/support/mount_guard.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

namespace mirrorfs::test {
namespace {

using namespace std::chrono_literals;

void put(const std::string& p, const std::string& data) {
  const int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0) << p;
  ASSERT_EQ(::write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
  ASSERT_EQ(::close(fd), 0);
}

// Reads through an open() + read() (not a cached std::ifstream): what a reader sees.
std::string get(const std::string& p) {
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "<open failed>";
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

// Polls until pred() holds, up to the deadline.
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout = 5s) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return pred();
}

void bypass_write_is_seen(const std::string& writeback) {
  TempDir t;
  // The scanner runs only on a mount with a target (without one there is
  // nothing to catch up), so there is one here, though it is not checked.
  const std::string src = t.mkdir("src"), mnt = t.mkdir("mnt"), rep = t.mkdir("rep");
  MountGuard m(src, mnt,
               {.options = {"target=" + rep, "writeback=" + writeback, "attr_timeout=60",
                            "entry_timeout=60"}});
  ASSERT_TRUE(m.ok()) << m.error();

  put(mnt + "/f", "old contents");
  ASSERT_EQ(get(mnt + "/f"), "old contents");  // pages and attributes now cached
  struct stat st {};
  ASSERT_EQ(::stat((mnt + "/f").c_str(), &st), 0);

  const std::string fresh = "new contents, and longer than before";
  put(src + "/f", fresh);  // behind the mount
  EXPECT_TRUE(eventually([&] {
    struct stat now {};
    return ::stat((mnt + "/f").c_str(), &now) == 0 &&
           now.st_size == static_cast<off_t>(fresh.size());
  })) << "size stays stale";
  EXPECT_EQ(get(mnt + "/f"), fresh);

  // Same size, other bytes: only the page cache can be stale here.
  const std::string same = "NEW CONTENTS, AND LONGER THAN BEFORE";
  put(src + "/f", same);
  EXPECT_TRUE(eventually([&] { return get(mnt + "/f") == same; })) << get(mnt + "/f");

  // A name removed and one renamed behind the mount.
  put(mnt + "/g", "g");
  put(mnt + "/h", "h");
  ASSERT_EQ(::stat((mnt + "/g").c_str(), &st), 0);
  ASSERT_EQ(::stat((mnt + "/h").c_str(), &st), 0);
  ASSERT_EQ(::unlink((src + "/g").c_str()), 0);
  ASSERT_EQ(::rename((src + "/h").c_str(), (src + "/h2").c_str()), 0);
  EXPECT_TRUE(eventually([&] { return ::access((mnt + "/g").c_str(), F_OK) == -1; }))
      << "a removed name stays visible";
  EXPECT_TRUE(eventually([&] { return ::access((mnt + "/h").c_str(), F_OK) == -1; }))
      << "a renamed name stays visible";
  EXPECT_EQ(get(mnt + "/h2"), "h");
  EXPECT_TRUE(m.unmount());
}

TEST(BypassCache, ReaderSeesABypassWrite) { bypass_write_is_seen("no"); }

TEST(BypassCache, ReaderSeesABypassWriteWithWritebackCache) { bypass_write_is_seen("yes"); }

}  // namespace
}  // namespace mirrorfs::test
