// The FUSE layer's change reports, end to end: a scripted sequence runs on a
// real mount started with -o change_log=FILE, and after each syscall returns
// the records it produced must already be in the file (they are flushed
// before the FUSE reply) and be exactly the expected ones.
//
// Data ranges: the writeback cache may coarsen writes to whole pages and
// deliver them at fsync/close, so for writes we require that the reported
// Data ranges of a step COVER what the step wrote and stay inside the pages
// it touched, and we finish such steps with close() or fsync(). Writeback may
// also flush the kernel's mtime with a SETATTR: extra Meta records for the
// written path are tolerated in those steps (and only there).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/falloc.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "fs/api/result.hpp"
#include "tests/support/change_log.hpp"
#include "tests/support/mount_guard.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/tree_compare.hpp"

namespace mirrorfs::test {
namespace {

constexpr std::uint64_t kPage = 4096;
constexpr std::uint64_t kToEnd = ChangeRecord::kToEnd;

ChangeRecord rec(std::string kind, std::string path, std::string to = {}, std::uint64_t off = 0,
                 std::uint64_t len = 0, std::uint32_t flags = 0) {
  return {std::move(kind), std::move(path), std::move(to), off, len, flags};
}

struct Span {
  std::string path;
  std::uint64_t off, len;
};

struct Expect {
  std::vector<ChangeRecord> exact;  // in this order; Data here must match exactly
  std::vector<Span> data;           // Data records must cover these, within their pages
  // A truncate's Data record: [offset <= max_off, EOF).
  std::vector<std::pair<std::string, std::uint64_t>> truncated;
  // Data within these pages (and Meta for these paths) is tolerated, not required.
  std::vector<Span> may{};
  // More paths whose inode the step changed (another hard link's name).
  std::vector<std::string> also{};
};

std::string dump(const std::vector<ChangeRecord>& recs) {
  std::string s;
  for (const auto& r : recs) s += "  " + to_string(r) + "\n";
  return s.empty() ? "  (none)\n" : s;
}

// Checks the records of one step; returns "" if they are as expected.
std::string check_step(const std::vector<ChangeRecord>& got, const Expect& want) {
  std::set<std::string> written;
  for (const Span& s : want.data) written.insert(s.path);
  for (const Span& s : want.may) written.insert(s.path);
  // Meta for an entry the step changed is tolerated: with the writeback
  // cache the kernel stamps ctime itself on rename/link/unlink/setxattr/
  // truncate and flushes it with a SETATTR(mtime, ctime) right away.
  std::set<std::string> touched(written.begin(), written.end());
  for (const ChangeRecord& r : want.exact) {
    touched.insert(r.path);
    if (!r.to_path.empty()) touched.insert(r.to_path);
  }
  for (const auto& t : want.truncated) touched.insert(t.first);
  touched.insert(want.also.begin(), want.also.end());
  std::vector<Span> windows = want.data;
  windows.insert(windows.end(), want.may.begin(), want.may.end());
  std::map<std::string, std::vector<std::pair<std::uint64_t, std::uint64_t>>> ranges;
  std::vector<ChangeRecord> rest;
  std::vector<bool> trunc_seen(want.truncated.size(), false);
  std::string err;
  for (const ChangeRecord& r : got) {
    if (r.kind == "Data" && r.length == kToEnd) {
      bool matched = false;
      for (std::size_t i = 0; i < want.truncated.size(); ++i) {
        if (want.truncated[i].first == r.path && r.offset <= want.truncated[i].second) {
          trunc_seen[i] = matched = true;
        }
      }
      if (!matched) rest.push_back(r);
    } else if (r.kind == "Data" && written.count(r.path)) {
      ranges[r.path].emplace_back(r.offset, r.offset + r.length);
    } else {
      rest.push_back(r);
    }
  }
  for (std::size_t i = 0; i < want.truncated.size(); ++i) {
    if (!trunc_seen[i]) {
      err += "missing Data " + mirrorfs::quoted(want.truncated[i].first) + " [<=" +
             std::to_string(want.truncated[i].second) + ", EOF)\n";
    }
  }
  // Coverage and page bounds of the written spans.
  for (const auto& [path, rs] : ranges) {
    for (const auto& [b, e] : rs) {
      bool inside = false;
      for (const Span& s : windows) {
        if (s.path != path) continue;
        const std::uint64_t lo = s.off / kPage * kPage;
        const std::uint64_t hi = (s.off + s.len + kPage - 1) / kPage * kPage;
        inside |= b >= lo && e <= hi;
      }
      if (!inside) {
        err += "Data " + mirrorfs::quoted(path) + " [" + std::to_string(b) + ", " + std::to_string(e) +
               ") lies outside the pages written\n";
      }
    }
  }
  for (const Span& s : want.data) {
    auto rs = ranges[s.path];
    std::sort(rs.begin(), rs.end());
    std::uint64_t covered = s.off;
    for (const auto& [b, e] : rs) {
      if (b <= covered && e > covered) covered = e;
    }
    if (covered < s.off + s.len) {
      err += "Data for " + mirrorfs::quoted(s.path) + " does not cover [" + std::to_string(s.off) + ", " +
             std::to_string(s.off + s.len) + "): covered up to " + std::to_string(covered) + "\n";
    }
  }
  // want.exact must appear in order; anything else must be a tolerated Meta.
  std::size_t j = 0;
  std::vector<ChangeRecord> unexpected;
  for (const ChangeRecord& r : rest) {
    if (j < want.exact.size() && r == want.exact[j]) {
      ++j;
    } else if (!(r.kind == "Meta" && touched.count(r.path))) {
      unexpected.push_back(r);
    }
  }
  if (j != want.exact.size() || !unexpected.empty()) {
    err += "records (besides data ranges) differ; expected, in order:\n" + dump(want.exact) +
           "got:\n" + dump(rest) + "unexpected:\n" + dump(unexpected);
  }
  return err;
}

class ChangeReport : public ::testing::Test {
 protected:
  void SetUp() override {
    backing_ = tmp_.mkdir("backing");
    mnt_ = tmp_.mkdir("mnt");
    log_path_ = tmp_.sub("changes.log");
    mount_ = std::make_unique<MountGuard>(backing_, mnt_, MountConfig{{"change_log=" + log_path_}});
    ASSERT_TRUE(mount_->ok()) << mount_->error();
    reader_ = std::make_unique<ChangeLogReader>(log_path_);
    (void)reader_->take_new();  // whatever mounting itself reported
  }
  void TearDown() override {
    if (mount_ && mount_->ok()) {
      const auto d = compare_trees(backing_, mnt_);
      EXPECT_TRUE(d.empty()) << "backing vs mount:\n" << join_lines(d);
    }
    mount_.reset();
  }

  std::string p(const std::string& rel) const { return mnt_ + "/" + rel; }

  // Compares what the step reported with `want`.
  void expect(const std::string& step, const Expect& want) {
    const std::vector<ChangeRecord> got = reader_->take_new();
    const std::string err = check_step(got, want);
    EXPECT_EQ(err, "") << "step: " << step << "\nall records of the step:\n" << dump(got);
  }
  void expect_exact(const std::string& step, std::vector<ChangeRecord> recs) {
    expect(step, Expect{std::move(recs), {}, {}, {}, {}});
  }

  int open_or_fail(const std::string& rel, int flags, mode_t mode = 0644) {
    const int fd = ::open(p(rel).c_str(), flags | O_CLOEXEC, mode);
    EXPECT_GE(fd, 0) << "open " << rel << ": " << std::strerror(errno);
    return fd;
  }
  void pwrite_or_fail(int fd, std::size_t len, off_t off, char c = 'w') {
    const std::string buf(len, c);
    EXPECT_EQ(::pwrite(fd, buf.data(), len, off), static_cast<ssize_t>(len)) << std::strerror(errno);
  }

  TempDir tmp_{"mirrorfs-changes"};
  std::string backing_, mnt_, log_path_;
  std::unique_ptr<MountGuard> mount_;
  std::unique_ptr<ChangeLogReader> reader_;
};

TEST_F(ChangeReport, ScriptedSequenceReportsExactChanges) {
  // create
  int fd = open_or_fail("a", O_CREAT | O_EXCL | O_WRONLY, 0644);
  expect_exact("create a", {rec("Created", "a")});

  // write, reported by the time close() returns
  pwrite_or_fail(fd, 100, 0);
  EXPECT_EQ(::close(fd), 0);
  expect("write a [0,100) + close", {{}, {{"a", 0, 100}}, {}});

  fd = open_or_fail("a", O_WRONLY);
  expect_exact("open a O_WRONLY (no change)", {});
  pwrite_or_fail(fd, 50, 10000);
  EXPECT_EQ(::close(fd), 0);
  expect("pwrite a [10000,10050) + close", {{}, {{"a", 10000, 50}}, {}});

  fd = open_or_fail("a", O_WRONLY | O_APPEND);
  EXPECT_EQ(::write(fd, "tail", 4), 4);
  EXPECT_EQ(::fsync(fd), 0);
  expect("append 4 bytes + fsync", {{}, {{"a", 10050, 4}}, {}});
  EXPECT_EQ(::close(fd), 0);
  expect("close after fsync", {{}, {}, {}, {{"a", 10050, 4}}});  // nothing more is required

  // metadata
  EXPECT_EQ(::chmod(p("a").c_str(), 0600), 0);
  expect_exact("chmod a", {rec("Meta", "a")});
  const timespec ts[2] = {{100, 1}, {200, 2}};
  EXPECT_EQ(::utimensat(AT_FDCWD, p("a").c_str(), ts, 0), 0);
  expect_exact("utimensat a", {rec("Meta", "a")});
  EXPECT_EQ(::setxattr(p("a").c_str(), "user.k", "v", 1, 0), 0);
  expect_exact("setxattr a", {rec("Meta", "a")});
  EXPECT_EQ(::removexattr(p("a").c_str(), "user.k"), 0);
  expect_exact("removexattr a", {rec("Meta", "a")});
  EXPECT_EQ(::chown(p("a").c_str(), 1234, 5678), 0);
  expect_exact("chown a", {rec("Meta", "a")});
  EXPECT_EQ(::chmod(mnt_.c_str(), 0751), 0);
  expect_exact("chmod root", {rec("Meta", "")});

  // mkdir, files held open across a directory rename
  EXPECT_EQ(::mkdir(p("d").c_str(), 0755), 0);
  expect_exact("mkdir d", {rec("Created", "d")});
  const int f1 = open_or_fail("d/f1", O_CREAT | O_EXCL | O_RDWR);
  const int f2 = open_or_fail("d/f2", O_CREAT | O_EXCL | O_RDWR);
  expect_exact("create d/f1 d/f2", {rec("Created", "d/f1"), rec("Created", "d/f2")});
  EXPECT_EQ(::rename(p("d").c_str(), p("e").c_str()), 0);
  expect_exact("rename d -> e", {rec("Renamed", "d", "e")});
  pwrite_or_fail(f1, 10, 0);
  pwrite_or_fail(f2, 20, 5000);
  EXPECT_EQ(::fsync(f1), 0);
  EXPECT_EQ(::fsync(f2), 0);
  expect("writes through fds opened before the dir rename", {{}, {{"e/f1", 0, 10}, {"e/f2", 5000, 20}}, {}});
  EXPECT_EQ(::close(f1), 0);
  EXPECT_EQ(::close(f2), 0);
  expect("close f1 f2", {{}, {}, {}, {{"e/f1", 0, 10}, {"e/f2", 5000, 20}}});

  // link / unlink
  EXPECT_EQ(::link(p("e/f1").c_str(), p("e/h").c_str()), 0);
  expect_exact("link e/f1 e/h", {rec("Linked", "e/f1", "e/h")});
  EXPECT_EQ(::unlink(p("e/h").c_str()), 0);
  expect("unlink e/h", {{rec("Removed", "e/h")}, {}, {}, {}, {"e/f1"}});

  // truncate
  EXPECT_EQ(::truncate(p("a").c_str(), 5), 0);
  expect("truncate a 5", {{}, {}, {{"a", 5}}});
  fd = open_or_fail("a", O_RDWR);
  EXPECT_EQ(::ftruncate(fd, 3 * static_cast<off_t>(kPage)), 0);
  expect("ftruncate a 12288 (grow)", {{}, {}, {{"a", 3 * kPage}}});

  // mmap MAP_SHARED + msync
  void* m = ::mmap(nullptr, 3 * kPage, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ASSERT_NE(m, MAP_FAILED) << std::strerror(errno);
  std::memset(static_cast<char*>(m) + 4100, 'm', 10);
  EXPECT_EQ(::msync(m, 3 * kPage, MS_SYNC), 0);
  expect("mmap write [4100,4110) + msync", {{}, {{"a", 4100, 10}}, {}});
  EXPECT_EQ(::munmap(m, 3 * kPage), 0);

  // punch hole and copy_file_range change data too
  EXPECT_EQ(::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, static_cast<off_t>(kPage)), 0);
  expect("punch hole a [0,4096)", {{}, {{"a", 0, kPage}}, {}});
  {
    const int dst = open_or_fail("e/f1", O_RDWR);
    loff_t in = 0, out = 100;
    EXPECT_EQ(::copy_file_range(fd, &in, dst, &out, 2000, 0), 2000) << std::strerror(errno);
    EXPECT_EQ(::close(dst), 0);
    expect("copy_file_range a -> e/f1 [100,2100)", {{}, {{"e/f1", 100, 2000}}, {}});
  }
  EXPECT_EQ(::close(fd), 0);
  expect_exact("close a", {});

  // RENAME_EXCHANGE file <-> dir
  EXPECT_EQ(::renameat2(AT_FDCWD, p("a").c_str(), AT_FDCWD, p("e").c_str(), RENAME_EXCHANGE), 0);
  expect_exact("RENAME_EXCHANGE a <-> e", {rec("Renamed", "a", "e", 0, 0, RENAME_EXCHANGE)});

  // RENAME_NOREPLACE and rename over an existing file
  fd = open_or_fail("x", O_CREAT | O_EXCL | O_WRONLY);
  EXPECT_EQ(::close(fd), 0);
  fd = open_or_fail("y", O_CREAT | O_EXCL | O_WRONLY);
  EXPECT_EQ(::close(fd), 0);
  expect_exact("create x y", {rec("Created", "x"), rec("Created", "y")});
  EXPECT_EQ(::rename(p("x").c_str(), p("y").c_str()), 0);
  expect_exact("rename x over y", {rec("Renamed", "x", "y")});
  EXPECT_EQ(::renameat2(AT_FDCWD, p("y").c_str(), AT_FDCWD, p("z").c_str(), RENAME_NOREPLACE), 0);
  expect_exact("RENAME_NOREPLACE y -> z", {rec("Renamed", "y", "z", 0, 0, RENAME_NOREPLACE)});
  EXPECT_EQ(::renameat2(AT_FDCWD, p("z").c_str(), AT_FDCWD, p("e").c_str(), RENAME_NOREPLACE), -1);
  expect_exact("failed RENAME_NOREPLACE reports nothing", {});

  // symlink, mknod
  EXPECT_EQ(::symlink("target", p("s").c_str()), 0);
  expect_exact("symlink s", {rec("Created", "s")});
  EXPECT_EQ(::mkfifo(p("fifo").c_str(), 0644), 0);
  expect_exact("mkfifo", {rec("Created", "fifo")});
  EXPECT_EQ(::mknod(p("sock").c_str(), S_IFSOCK | 0600, 0), 0);
  expect_exact("mknod socket", {rec("Created", "sock")});
  EXPECT_EQ(::lchown(p("s").c_str(), 7, 7), 0);
  expect_exact("lchown symlink", {rec("Meta", "s")});

  // names are raw bytes; nested paths are relative to the root
  const std::string odd = "we ird\nname[*]?\\\xff";
  fd = open_or_fail(odd, O_CREAT | O_EXCL | O_WRONLY);
  EXPECT_EQ(::close(fd), 0);
  expect_exact("create odd name", {rec("Created", odd)});
  EXPECT_EQ(::mkdir(p("n1").c_str(), 0755), 0);
  EXPECT_EQ(::mkdir(p("n1/n2").c_str(), 0755), 0);
  fd = open_or_fail("n1/n2/deep", O_CREAT | O_EXCL | O_WRONLY);
  pwrite_or_fail(fd, 1, 0);
  EXPECT_EQ(::close(fd), 0);
  expect("nested create + write",
         {{rec("Created", "n1"), rec("Created", "n1/n2"), rec("Created", "n1/n2/deep")},
          {{"n1/n2/deep", 0, 1}},
          {}});
  EXPECT_EQ(::rename(p("n1/n2/deep").c_str(), p(odd).c_str()), 0);
  expect_exact("rename nested over odd", {rec("Renamed", "n1/n2/deep", odd)});

  // failures report nothing
  EXPECT_EQ(::mkdir(p("n1").c_str(), 0755), -1);
  EXPECT_EQ(::unlink(p("missing").c_str()), -1);
  EXPECT_EQ(::rmdir(p("n1").c_str()), -1);  // holds n2
  EXPECT_EQ(errno, ENOTEMPTY);
  EXPECT_EQ(::chmod(p("missing").c_str(), 0644), -1);
  expect_exact("failed mkdir/unlink/rmdir/chmod report nothing", {});
}

// Kept separate so a failure above does not hide these.
TEST_F(ChangeReport, RemovalsAreReported) {
  ASSERT_EQ(::mkdir(p("dir").c_str(), 0755), 0);
  int fd = open_or_fail("dir/f", O_CREAT | O_EXCL | O_WRONLY);
  EXPECT_EQ(::close(fd), 0);
  fd = open_or_fail("g", O_CREAT | O_EXCL | O_WRONLY);
  EXPECT_EQ(::close(fd), 0);
  expect_exact("setup", {rec("Created", "dir"), rec("Created", "dir/f"), rec("Created", "g")});
  EXPECT_EQ(::rmdir(p("dir").c_str()), -1);
  EXPECT_EQ(errno, ENOTEMPTY);
  expect_exact("rmdir non-empty fails, reports nothing", {});
  EXPECT_EQ(::unlink(p("dir/f").c_str()), 0);
  expect_exact("unlink dir/f", {rec("Removed", "dir/f")});
  EXPECT_EQ(::rmdir(p("dir").c_str()), 0);
  expect_exact("rmdir dir", {rec("Removed", "dir")});
  EXPECT_EQ(::unlink(p("g").c_str()), 0);
  expect_exact("unlink g", {rec("Removed", "g")});
  // An open file unlinked, then written: the data goes nowhere worth reporting
  // by name, but the unlink must be reported when it happens.
  fd = open_or_fail("h", O_CREAT | O_EXCL | O_RDWR);
  expect_exact("create h", {rec("Created", "h")});
  EXPECT_EQ(::unlink(p("h").c_str()), 0);
  expect_exact("unlink open h", {rec("Removed", "h")});
  EXPECT_EQ(::close(fd), 0);
}

}  // namespace
}  // namespace mirrorfs::test
