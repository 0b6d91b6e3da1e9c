// More live inodes than RLIMIT_NOFILE allows descriptors (hard limit 20,000
// on our machines, and root cannot raise it): passthrough_hp's one-fd-per-
// inode design fails this with EMFILE. mirrorfs must keep its inode table
// independent of the fd limit, and its fd count must stay small throughout.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include "tests/support/mount_guard.hpp"
#include "tests/support/temp_dir.hpp"

namespace mirrorfs::test {
namespace {

constexpr int kDirs = 5;
constexpr int kFiles = 25'000;
// "Small": far below the 20,000 limit whatever the eviction policy.
constexpr int kMaxDaemonFds = 1024;

std::string name_of(int i) { return "dir" + std::to_string(i % kDirs) + "/file-" + std::to_string(i); }
std::string content_of(int i) { return "content of file " + std::to_string(i) + "\n"; }

TEST(ManyInodes, MoreFilesThanTheFdLimit) {
  rlimit lim{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &lim), 0);
  RecordProperty("rlimit_nofile_hard", std::to_string(lim.rlim_max));
  if (lim.rlim_max != RLIM_INFINITY && lim.rlim_max >= static_cast<rlim_t>(kFiles)) {
    ADD_FAILURE() << "RLIMIT_NOFILE hard limit " << lim.rlim_max << " >= " << kFiles
                  << ": this test no longer exceeds the fd limit; raise kFiles";
  }

  TempDir tmp("mirrorfs-inodes");
  const std::string backing = tmp.mkdir("backing"), mnt = tmp.mkdir("mnt");
  MountGuard m(backing, mnt);
  ASSERT_TRUE(m.ok()) << m.error();
  const auto p = [&](const std::string& rel) { return mnt + "/" + rel; };

  int max_fds = m.daemon_fds();
  const auto sample = [&] { max_fds = std::max(max_fds, m.daemon_fds()); };

  for (int d = 0; d < kDirs; ++d) {
    ASSERT_EQ(::mkdir(p("dir" + std::to_string(d)).c_str(), 0755), 0) << std::strerror(errno);
  }
  for (int i = 0; i < kFiles; ++i) {
    const int fd = ::open(p(name_of(i)).c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0) << "create " << name_of(i) << ": " << std::strerror(errno);
    const std::string c = content_of(i);
    ASSERT_EQ(::write(fd, c.data(), c.size()), static_cast<ssize_t>(c.size()))
        << name_of(i) << ": " << std::strerror(errno);
    ASSERT_EQ(::close(fd), 0) << name_of(i) << ": " << std::strerror(errno);
    if (i % 1000 == 0) sample();
  }
  sample();

  // Every entry is listed and stats right (keeps all 25,000 inodes alive in the kernel).
  for (int d = 0; d < kDirs; ++d) {
    DIR* dir = ::opendir(p("dir" + std::to_string(d)).c_str());
    ASSERT_NE(dir, nullptr) << std::strerror(errno);
    int n = 0;
    while (const dirent* e = ::readdir(dir)) n += e->d_name[0] != '.';
    ::closedir(dir);
    EXPECT_EQ(n, kFiles / kDirs) << "dir" << d;
  }
  for (int i = 0; i < kFiles; ++i) {
    struct stat st {};
    ASSERT_EQ(::stat(p(name_of(i)).c_str(), &st), 0) << name_of(i) << ": " << std::strerror(errno);
    ASSERT_EQ(st.st_size, static_cast<off_t>(content_of(i).size())) << name_of(i);
    if (i % 1000 == 0) sample();
  }
  // Reopen and read a spread of them, oldest first (likely evicted, if anything is).
  for (int i = 0; i < kFiles; i += 97) {
    const int fd = ::open(p(name_of(i)).c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0) << "reopen " << name_of(i) << ": " << std::strerror(errno);
    char buf[128];
    const ssize_t n = ::read(fd, buf, sizeof buf);
    ::close(fd);
    ASSERT_EQ(std::string(buf, static_cast<std::size_t>(std::max<ssize_t>(n, 0))), content_of(i))
        << name_of(i);
  }
  sample();
  // The backing directory got every file.
  for (int i = 0; i < kFiles; i += 499) {
    struct stat st {};
    EXPECT_EQ(::stat((backing + "/" + name_of(i)).c_str(), &st), 0) << name_of(i);
  }
  for (int i = 0; i < kFiles; ++i) {
    ASSERT_EQ(::unlink(p(name_of(i)).c_str()), 0) << name_of(i) << ": " << std::strerror(errno);
    if (i % 1000 == 0) sample();
  }
  for (int d = 0; d < kDirs; ++d) {
    EXPECT_EQ(::rmdir(p("dir" + std::to_string(d)).c_str()), 0) << std::strerror(errno);
  }
  sample();
  EXPECT_LE(max_fds, kMaxDaemonFds) << "the daemon's fd count grew with the number of inodes";
  RecordProperty("max_daemon_fds", std::to_string(max_fds));
  const std::string log = m.log();
  EXPECT_EQ(log.find("EMFILE"), std::string::npos) << log;
  EXPECT_EQ(log.find("Too many open files"), std::string::npos) << log;
  EXPECT_TRUE(m.unmount());
}

}  // namespace
}  // namespace mirrorfs::test
