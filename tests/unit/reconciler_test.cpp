// Reconciler against the real receiver on a temp dir (a Local transport,
// wrapped to count round trips): what it marks for each kind of difference,
// that listings travel in bulk (not one round trip per file), the E2BIG /
// failed-List fallback, and the Replicator's ready gate.
#include "replicate/reconcile.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <fstream>
#include <map>

#include "replicate/replicator.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/tree_compare.hpp"

namespace mirrorfs::replicate {
namespace {

using namespace std::chrono_literals;

std::shared_ptr<spdlog::logger> null_log(const char* name) {
  return std::make_shared<spdlog::logger>(name, std::make_shared<spdlog::sinks::null_sink_mt>());
}

Fd open_dir(const std::string& p) { return Fd(::open(p.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)); }

void put(const std::string& p, const std::string& data) { std::ofstream(p, std::ios::binary) << data; }

class Counting final : public Transport {
 public:
  explicit Counting(std::unique_ptr<Transport> t) : t_(std::move(t)) {}
  Result<std::vector<Reply>> exchange(std::span<const Request> reqs) override {
    ++exchanges;
    for (const Request& r : reqs) ++ops[r.op];
    return t_->exchange(reqs);
  }
  std::uint64_t bytes_sent() const noexcept override { return t_->bytes_sent(); }
  std::uint64_t bytes_received() const noexcept override { return t_->bytes_received(); }
  int exchanges = 0;
  std::map<Op, int> ops;

 private:
  std::unique_ptr<Transport> t_;
};

struct Rig {
  test::TempDir src{"mfs-rc-src"}, dst{"mfs-rc-dst"};
  Fd root = open_dir(src.path());
  std::unique_ptr<Counting> t;
  Rig() {
    TargetSpec spec;
    spec.path = dst.path();
    auto c = connect(spec);
    EXPECT_TRUE(c) << c.error().what;
    t = std::make_unique<Counting>(std::move(*c));
  }
  // Runs a whole pass; marks by path (the root "" included).
  std::map<std::string, Entry> run(ReconcileOptions opt, ReconcileCounters* counters = nullptr) {
    Reconciler rc(root, std::move(opt));
    std::map<std::string, Entry> marks;
    for (int guard = 0; !rc.done() && guard < 10000; ++guard) {
      Result<Batch> b = rc.step(*t);
      EXPECT_TRUE(b) << b.error().what;
      if (!b) break;
      for (Entry& e : b->entries) marks[e.path] = e;
    }
    EXPECT_TRUE(rc.done());
    if (counters) *counters = rc.counters();
    return marks;
  }
};

TEST(Reconciler, MarksEachKindOfDifference) {
  Rig r;
  for (const std::string& d : {r.src.path(), r.dst.path()}) {
    ::mkdir((d + "/same").c_str(), 0755);
    put(d + "/same/f", "equal");
    put(d + "/size", d == r.src.path() ? "longer content" : "short");
    put(d + "/meta", "m");
    ::chmod((d + "/meta").c_str(), d == r.src.path() ? 0600 : 0644);
    ::symlink(d == r.src.path() ? "new" : "old", (d + "/link").c_str());
    put(d + "/typechange", "x");
  }
  // Same mtime everywhere, so only the intended differences count.
  const timespec ts[2] = {{0, UTIME_OMIT}, {1'600'000'000, 5}};
  for (const std::string& d : {r.src.path(), r.dst.path()})
    for (const char* p : {"/same/f", "/size", "/meta", "/typechange", "/same", ""})
      ::utimensat(AT_FDCWD, (d + p).c_str(), ts, AT_SYMLINK_NOFOLLOW);
  ::mkdir(r.src.sub("newdir").c_str(), 0755);
  put(r.src.sub("newdir/inner"), "i");
  put(r.dst.sub("extra"), "only on the target");
  put(r.dst.sub(".mirrorfs.tmp.abc"), "stale");
  ::unlink(r.dst.sub("typechange").c_str());
  ::mkdir(r.dst.sub("typechange").c_str(), 0755);
  for (const std::string& d : {r.src.path(), r.dst.path()})  // the removals above moved these
    for (const char* p : {"/typechange", ""}) ::utimensat(AT_FDCWD, (d + p).c_str(), ts, AT_SYMLINK_NOFOLLOW);

  ReconcileCounters c;
  auto m = r.run({}, &c);
  EXPECT_EQ(m.count("same"), 0u);
  EXPECT_EQ(m.count("same/f"), 0u);
  ASSERT_EQ(m.count("size"), 1u);
  EXPECT_TRUE(m["size"].exist);
  ASSERT_EQ(m.count("meta"), 1u);
  EXPECT_FALSE(m["meta"].exist);
  EXPECT_TRUE(m["meta"].meta);
  EXPECT_TRUE(m["link"].exist);
  EXPECT_TRUE(m["typechange"].exist && m["typechange"].replace);
  EXPECT_TRUE(m["newdir"].exist);
  EXPECT_TRUE(m["newdir/inner"].exist);
  EXPECT_TRUE(m["extra"].exist && m["extra"].replace);
  EXPECT_TRUE(m[".mirrorfs.tmp.abc"].replace);
  EXPECT_EQ(m.count(""), 1u);  // the root's own metadata
  EXPECT_EQ(c.checksums, 0u);

  // delete=no keeps the extra, never the stale temp.
  ReconcileOptions keep;
  keep.delete_missing = false;
  m = r.run(keep);
  EXPECT_EQ(m.count("extra"), 0u);
  EXPECT_EQ(m.count(".mirrorfs.tmp.abc"), 1u);
}

TEST(Reconciler, ChecksumModeAndSuspectsCompareContent) {
  Rig r;
  put(r.src.sub("f"), "AAAA");
  put(r.dst.sub("f"), "BBBB");
  const timespec ts[2] = {{0, UTIME_OMIT}, {1'600'000'000, 5}};
  ::utimensat(AT_FDCWD, r.src.sub("f").c_str(), ts, 0);
  ::utimensat(AT_FDCWD, r.dst.sub("f").c_str(), ts, 0);
  EXPECT_EQ(r.run({}).count("f"), 0u);  // quick cannot tell
  ReconcileOptions sum;
  sum.mode = SyncMode::Checksum;
  ReconcileCounters c;
  auto m = r.run(sum, &c);
  ASSERT_EQ(m.count("f"), 1u);
  EXPECT_TRUE(m["f"].exist);
  EXPECT_EQ(c.checksums, 1u);
  ReconcileOptions suspects;  // quick, but a crash left "f" pending
  suspects.suspects = {"f"};
  m = r.run(suspects);
  ASSERT_EQ(m.count("f"), 1u);
  EXPECT_TRUE(m["f"].exist);
  EXPECT_GE(r.t->ops[Op::Checksum], 1);
}

TEST(Reconciler, ListsDirectoriesInBulk) {
  Rig r;
  constexpr int kDirs = 300, kFiles = 4;
  for (const std::string& d : {r.src.path(), r.dst.path()}) {
    for (int i = 0; i < kDirs; ++i) {
      const std::string dir = d + "/d" + std::to_string(i);
      ::mkdir(dir.c_str(), 0755);
      for (int k = 0; k < kFiles; ++k) put(dir + "/f" + std::to_string(k), "same");
    }
  }
  // Equalize every mtime (source and target were written at different times).
  const timespec ts[2] = {{0, UTIME_OMIT}, {1'600'000'000, 5}};
  for (const std::string& d : {r.src.path(), r.dst.path()})
    for (int i = 0; i < kDirs; ++i) {
      const std::string dir = d + "/d" + std::to_string(i);
      for (int k = 0; k < kFiles; ++k) ::utimensat(AT_FDCWD, (dir + "/f" + std::to_string(k)).c_str(), ts, 0);
      ::utimensat(AT_FDCWD, dir.c_str(), ts, 0);
    }
  ReconcileOptions opt;
  opt.dirs_per_exchange = 256;
  ReconcileCounters c;
  auto m = r.run(opt, &c);
  EXPECT_EQ(m.size(), 1u) << "only the root's metadata: the trees are equal";
  EXPECT_EQ(c.scanned, static_cast<std::uint64_t>(kDirs * (kFiles + 1)));
  EXPECT_EQ(r.t->ops[Op::List], kDirs + 1);
  EXPECT_LE(r.t->exchanges, 3) << "one round trip per directory or per file";
}

TEST(Reconciler, FailedListShipsTheDirectoryInFull) {
  Rig r;
  ::mkdir(r.src.sub("d").c_str(), 0755);
  put(r.src.sub("d/f"), "x");
  ::mkdir(r.dst.sub("d").c_str(), 0755);
  ::chmod(r.dst.sub("d").c_str(), 0755);
  // The target's d is swapped for a file between the root's listing and
  // d's: simulate with a wrapper that fails List "d" the way E2BIG does.
  class FailList final : public Transport {
   public:
    explicit FailList(Transport& t) : t_(t) {}
    Result<std::vector<Reply>> exchange(std::span<const Request> reqs) override {
      Result<std::vector<Reply>> r = t_.exchange(reqs);
      if (r)
        for (std::size_t i = 0; i < reqs.size(); ++i)
          if (reqs[i].op == Op::List && reqs[i].path == "d") (*r)[i] = Reply{E2BIG, "too big", {}};
      return r;
    }
    std::uint64_t bytes_sent() const noexcept override { return 0; }
    std::uint64_t bytes_received() const noexcept override { return 0; }

   private:
    Transport& t_;
  } fail_list(*r.t);
  Reconciler rc(r.root, {});
  std::map<std::string, Entry> m;
  while (!rc.done()) {
    Result<Batch> b = rc.step(fail_list);
    ASSERT_TRUE(b);
    for (Entry& e : b->entries) m[e.path] = e;
  }
  EXPECT_TRUE(m["d"].exist && m["d"].replace);
  EXPECT_TRUE(m["d/f"].exist);
  EXPECT_EQ(rc.counters().list_errors, 1u);
}

TEST(ReplicatorReconcile, WaitsForTheReadyGateThenLevelsTheTarget) {
  test::TempDir src{"mfs-rg-src"}, dst{"mfs-rg-dst"};
  Fd root = open_dir(src.path());
  put(src.sub("a"), "before the mount");
  put(dst.sub("stale"), "extra");
  Journal journal(JournalLimits{}, null_log("journal"));
  std::atomic<bool> ready{false};
  std::atomic<int> asked{0};
  ReplicatorOptions opt;
  opt.initial_sync = SyncMode::Quick;
  opt.ready_gate = [&](std::stop_token) {
    ++asked;
    return ready.load();
  };
  TargetSpec spec;
  spec.url = dst.path();
  spec.path = dst.path();
  Replicator repl(journal, spec, root, opt, null_log("repl"));
  repl.start();
  EXPECT_FALSE(repl.drain(300ms)) << "the reconcile ran before the gate opened";
  EXPECT_GE(asked.load(), 2);
  EXPECT_FALSE(repl.status().initial_sync_done);
  ready = true;
  ASSERT_TRUE(repl.drain(10s));
  const ReplicatorStatus s = repl.status();
  EXPECT_TRUE(s.initial_sync_done);
  EXPECT_EQ(s.initial_mode, "quick");
  EXPECT_GE(s.initial_scanned, 1u);
  test::CompareOptions o;
  o.dir_mtime = false;
  o.root_meta = false;
  EXPECT_EQ(test::join_lines(test::compare_trees(src.path(), dst.path(), o)), "");
}

}  // namespace
}  // namespace mirrorfs::replicate
