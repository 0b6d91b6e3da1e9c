// The scanner's bookkeeping (ScanBook, pure) and the Scanner itself on a
// plain temporary directory (inotify needs no mount and no root): bypass
// changes are reported, the "mount's own" changes (fed to record() with
// their stamps, as the FUSE layer does) are not.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <mutex>
#include <thread>
#include <vector>

#include "replicate/scan_book.hpp"
#include "replicate/scanner.hpp"
#include "tests/support/temp_dir.hpp"

namespace mirrorfs::replicate {
namespace {

using namespace std::chrono_literals;

Change stamped(ChangeKind k, std::string path, std::uint64_t ino, std::int64_t before,
               std::int64_t after) {
  Change c{k, std::move(path)};
  c.stamp = Stamp{ino, before, after};
  return c;
}

TEST(ScanBook, LearnedCtimeIsKnownAndOthersAreSuspects) {
  ScanBook b;
  const auto now = ScanClock::now();
  b.learn(7, 100);
  EXPECT_TRUE(b.known(7, 100));
  EXPECT_FALSE(b.suspect(7, 100, "f", true, now));  // own: nothing to do
  EXPECT_TRUE(b.suspect(7, 200, "f", true, now));
  EXPECT_TRUE(b.take_expired(now).empty());  // still within the grace period
  auto out = b.take_expired(now + 1s);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].path, "f");
  EXPECT_TRUE(out[0].content);
  EXPECT_FALSE(out[0].unsure);
  EXPECT_TRUE(b.known(7, 200));  // shipped: accounted from now on
}

TEST(ScanBook, ARecordInTimeResolvesTheSuspect) {
  ScanBook b;
  const auto now = ScanClock::now();
  b.learn(7, 100);
  EXPECT_TRUE(b.suspect(7, 200, "f", true, now));  // the event came before the record
  b.on_record(stamped(ChangeKind::Data, "f", 7, 100, 200), now);
  EXPECT_TRUE(b.take_expired(now + 1s).empty());
}

TEST(ScanBook, AnUnaccountedPreCtimeIsABypassBeforeTheOp) {
  ScanBook b;
  const auto now = ScanClock::now();
  b.learn(7, 100);
  b.on_record(stamped(ChangeKind::Data, "f", 7, 150, 200), now);  // something changed 100 -> 150
  auto out = b.take_expired(now + 1s);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].ctime, 150);
  EXPECT_EQ(out[0].path, "f");
}

TEST(ScanBook, ConcurrentOwnOpsDoNotLookLikeBypasses) {
  ScanBook b;
  const auto now = ScanClock::now();
  b.learn(7, 100);
  // Op B (pre 150) reports before op A (100 -> 150).
  b.on_record(stamped(ChangeKind::Data, "f", 7, 150, 200), now);
  b.on_record(stamped(ChangeKind::Data, "f", 7, 100, 150), now);
  EXPECT_TRUE(b.take_expired(now + 1s).empty());
}

TEST(ScanBook, UnknownInodeHasNoBaselineToCheck) {
  ScanBook b;
  const auto now = ScanClock::now();
  b.on_record(stamped(ChangeKind::Data, "new", 9, 150, 200), now);
  EXPECT_TRUE(b.take_expired(now + 1s).empty());
  EXPECT_TRUE(b.known(9, 200));
}

TEST(ScanBook, OwnNamespaceChangesAreConsumedOnce) {
  ScanBook b;
  const auto now = ScanClock::now();
  b.on_record(Change{ChangeKind::Created, "a"}, now);
  b.on_record(Change{ChangeKind::Removed, "b"}, now);
  b.on_record(Change{ChangeKind::Renamed, "c", "d"}, now);
  b.on_record(Change{ChangeKind::Renamed, "x", "y", 0, 0, 2}, now);  // RENAME_EXCHANGE
  b.on_record(Change{ChangeKind::Linked, "a", "l"}, now);
  EXPECT_TRUE(b.consume_own(OwnKind::Create, "a"));
  EXPECT_FALSE(b.consume_own(OwnKind::Create, "a"));
  EXPECT_TRUE(b.consume_own(OwnKind::Remove, "b"));
  EXPECT_FALSE(b.consume_own(OwnKind::Move, "d", "c"));
  EXPECT_TRUE(b.consume_own(OwnKind::Move, "c", "d"));
  EXPECT_TRUE(b.consume_own(OwnKind::Move, "x", "y"));
  EXPECT_TRUE(b.consume_own(OwnKind::Move, "y", "x"));
  EXPECT_TRUE(b.consume_own(OwnKind::Create, "l"));
  EXPECT_EQ(b.own_count(), 0u);
}

TEST(ScanBook, OwnNamespaceChangesExpire) {
  ScanBook b(ScanBookLimits{50ms, 100ms, 1 << 20});
  const auto now = ScanClock::now();
  b.on_record(Change{ChangeKind::Created, "a"}, now);
  b.on_record(Change{ChangeKind::Created, "a"}, now + 80ms);
  b.expire_own(now + 150ms);  // the first one is past its ttl
  EXPECT_TRUE(b.consume_own(OwnKind::Create, "a"));
  EXPECT_FALSE(b.consume_own(OwnKind::Create, "a"));
}

// ---- Scanner on a plain directory -------------------------------------------

class Capture final : public ChangeSink {
 public:
  void record(const Change& c) noexcept override {
    std::lock_guard lk(mu_);
    got_.push_back(c);
  }
  std::vector<Change> snapshot() {
    std::lock_guard lk(mu_);
    return got_;
  }
  // Waits (bounded) until a change of kind k at path shows up.
  bool wait_for(ChangeKind k, const std::string& path, std::chrono::milliseconds timeout = 3s) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
      for (const Change& c : snapshot())
        if (c.kind == k && c.path == path) return true;
      std::this_thread::sleep_for(5ms);
    }
    return false;
  }

 private:
  std::mutex mu_;
  std::vector<Change> got_;
};

std::int64_t ctime_of(const std::string& p) {
  struct stat st {};
  EXPECT_EQ(::lstat(p.c_str(), &st), 0) << p;
  return static_cast<std::int64_t>(st.st_ctim.tv_sec) * 1'000'000'000 + st.st_ctim.tv_nsec;
}

std::uint64_t ino_of(const std::string& p) {
  struct stat st {};
  EXPECT_EQ(::lstat(p.c_str(), &st), 0) << p;
  return st.st_ino;
}

void write_file(const std::string& p, const std::string& data, int flags = O_TRUNC) {
  const int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | flags, 0644);
  ASSERT_GE(fd, 0) << p;
  ASSERT_EQ(::write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
  ::close(fd);
}

struct Fixture {
  test::TempDir dir{"mirrorfs-scan"};
  Capture out;
  Fd root;
  std::unique_ptr<Scanner> scanner;
  void start() {
    root.reset(::open(dir.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    ASSERT_TRUE(root.valid());
    auto log = std::make_shared<spdlog::logger>("scan", std::make_shared<spdlog::sinks::null_sink_mt>());
    scanner = std::make_unique<Scanner>(out, ScannerOptions{}, log);
    ASSERT_TRUE(scanner->start(root, nullptr));
    std::stop_source never;
    ASSERT_TRUE(scanner->wait_ready(never.get_token()));
  }
  ~Fixture() {
    if (scanner) scanner->stop();
  }
};

TEST(Scanner, ReportsABypassWriteAsContent) {
  Fixture f;
  write_file(f.dir.sub("a"), "one");
  f.start();
  write_file(f.dir.sub("a"), "two", O_APPEND);
  EXPECT_TRUE(f.out.wait_for(ChangeKind::Content, "a"));
}

TEST(Scanner, LeavesTheMountsOwnWriteAlone) {
  Fixture f;
  const std::string p = f.dir.sub("a");
  write_file(p, "one");
  f.start();
  const std::int64_t before = ctime_of(p);
  write_file(p, "two", O_APPEND);  // as the FUSE layer would, then report it stamped
  f.scanner->record(stamped(ChangeKind::Data, "a", ino_of(p), before, ctime_of(p)));
  write_file(f.dir.sub("marker"), "m");  // a bypass change after it: once seen, all is seen
  ASSERT_TRUE(f.out.wait_for(ChangeKind::Created, "marker"));
  std::this_thread::sleep_for(200ms);  // past event delay + grace: a late report would show
  for (const Change& c : f.out.snapshot())
    EXPECT_FALSE(c.path == "a" && c.kind != ChangeKind::Data) << "own write shipped again";
  EXPECT_EQ(f.scanner->stats().bypass, 1u);
}

TEST(Scanner, ANewDirectoryIsScannedAtOnce) {
  Fixture f;
  f.start();
  // Files created in a new directory before its watch exists must be reported.
  ASSERT_EQ(::mkdir(f.dir.sub("d").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(f.dir.sub("d/e").c_str(), 0755), 0);
  write_file(f.dir.sub("d/e/f"), "x");
  EXPECT_TRUE(f.out.wait_for(ChangeKind::Created, "d"));
  EXPECT_TRUE(f.out.wait_for(ChangeKind::Created, "d/e"));
  EXPECT_TRUE(f.out.wait_for(ChangeKind::Created, "d/e/f"));
  // ... and the new directory is watched: a later write in it is seen too.
  write_file(f.dir.sub("d/e/g"), "y");
  EXPECT_TRUE(f.out.wait_for(ChangeKind::Created, "d/e/g"));
}

TEST(Scanner, RenamesInsideMoveOutAndMoveIn) {
  Fixture f;
  test::TempDir outside{"mirrorfs-scan-out"};
  ASSERT_EQ(::mkdir(f.dir.sub("d").c_str(), 0755), 0);
  write_file(f.dir.sub("d/f"), "x");
  write_file(f.dir.sub("g"), "x");
  write_file(outside.sub("h"), "x");
  f.start();
  ASSERT_EQ(::rename(f.dir.sub("d").c_str(), f.dir.sub("d2").c_str()), 0);
  ASSERT_TRUE(f.out.wait_for(ChangeKind::Renamed, "d"));
  // The watch follows the renamed directory.
  write_file(f.dir.sub("d2/f"), "yy", O_APPEND);
  EXPECT_TRUE(f.out.wait_for(ChangeKind::Content, "d2/f"));
  ASSERT_EQ(::rename(f.dir.sub("g").c_str(), outside.sub("g").c_str()), 0);
  EXPECT_TRUE(f.out.wait_for(ChangeKind::Created, "g"));  // "its state changed": gone
  ASSERT_EQ(::rename(outside.sub("h").c_str(), f.dir.sub("h").c_str()), 0);
  EXPECT_TRUE(f.out.wait_for(ChangeKind::Created, "h"));
  for (const Change& c : f.out.snapshot()) {
    if (c.kind == ChangeKind::Renamed) {
      EXPECT_EQ(c.to_path, "d2");
    }
  }
}

TEST(Scanner, OwnNamespaceChangesAreNotReported) {
  Fixture f;
  write_file(f.dir.sub("old"), "x");
  f.start();
  write_file(f.dir.sub("new"), "x");
  f.scanner->record(stamped(ChangeKind::Created, "new", ino_of(f.dir.sub("new")), 0,
                            ctime_of(f.dir.sub("new"))));
  ASSERT_EQ(::rename(f.dir.sub("old").c_str(), f.dir.sub("old2").c_str()), 0);
  f.scanner->record(Change{ChangeKind::Renamed, "old", "old2"});
  ASSERT_EQ(::unlink(f.dir.sub("new").c_str()), 0);
  f.scanner->record(Change{ChangeKind::Removed, "new"});
  write_file(f.dir.sub("marker"), "m");
  ASSERT_TRUE(f.out.wait_for(ChangeKind::Created, "marker"));
  std::this_thread::sleep_for(200ms);
  // The three own changes record() passed on, and the marker: nothing more.
  const auto got = f.out.snapshot();
  std::string seen;
  for (const Change& c : got) seen += std::to_string(static_cast<int>(c.kind)) + " " + c.path + "\n";
  EXPECT_EQ(got.size(), 4u) << seen;
  EXPECT_EQ(f.scanner->stats().bypass, 1u);
}

}  // namespace
}  // namespace mirrorfs::replicate
