// Replicator: engine logic against a fake in-memory Transport (requeue on a
// broken session, backoff, per-request retry, drain), then end to end through
// connect() with a Local target (the real receiver on a temp dir), comparing
// the trees byte for byte. Changes are recorded by hand, as fs/ would.
#include "replicate/replicator.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <mutex>

#include "tests/support/temp_dir.hpp"
#include "tests/support/tree_compare.hpp"

namespace mirrorfs::replicate {
namespace {

using namespace std::chrono_literals;

std::shared_ptr<spdlog::logger> null_log(const char* name) {
  return std::make_shared<spdlog::logger>(name, std::make_shared<spdlog::sinks::null_sink_mt>());
}

Fd open_dir(const std::string& p) { return Fd(::open(p.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)); }

void write_file(const std::string& p, const std::string& data, off_t off = 0, bool trunc = true) {
  const int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | (trunc ? O_TRUNC : 0), 0644);
  ASSERT_GE(fd, 0) << p;
  ASSERT_EQ(::pwrite(fd, data.data(), data.size(), off), static_cast<ssize_t>(data.size()));
  ::close(fd);
}

Change ch(ChangeKind k, std::string p, std::string to = {}, std::uint64_t off = 0, std::uint64_t len = 0) {
  return {k, std::move(p), std::move(to), off, len, 0};
}

// ---- fake transport -------------------------------------------------------

struct FakeState {
  std::mutex mu;
  std::vector<Request> seen;
  int connects = 0;
  int fail_connects = 0;   // connect() fails this many more times
  int fail_exchanges = 0;  // exchange() breaks this many more times
  Op fail_op = Op::Hello;  // reply err EIO once to the first request with this op
};

class FakeTransport final : public Transport {
 public:
  explicit FakeTransport(std::shared_ptr<FakeState> s) : s_(std::move(s)) {}
  Result<std::vector<Reply>> exchange(std::span<const Request> reqs) override {
    std::lock_guard lk(s_->mu);
    if (s_->fail_exchanges > 0) {
      --s_->fail_exchanges;
      return fail(ECONNRESET, "fake: session broke");
    }
    std::vector<Reply> out(reqs.size());
    for (std::size_t i = 0; i < reqs.size(); ++i) {
      s_->seen.push_back(reqs[i]);
      sent_ += reqs[i].data.size() + reqs[i].path.size();
      if (reqs[i].op == Op::List) out[i].data = encode_listing({});  // an empty target
      if (reqs[i].op == s_->fail_op) {
        out[i].err = EIO;
        out[i].message = "fake: injected";
        s_->fail_op = Op::Hello;
      }
    }
    return out;
  }
  std::uint64_t bytes_sent() const noexcept override { return sent_; }
  std::uint64_t bytes_received() const noexcept override { return 0; }

 private:
  std::shared_ptr<FakeState> s_;
  std::uint64_t sent_ = 0;
};

TransportFactory fake_factory(std::shared_ptr<FakeState> s) {
  return [s](const TargetSpec&) -> Result<std::unique_ptr<Transport>> {
    std::lock_guard lk(s->mu);
    ++s->connects;
    if (s->fail_connects > 0) {
      --s->fail_connects;
      return fail(ECONNREFUSED, "fake: connect refused");
    }
    return std::unique_ptr<Transport>(std::make_unique<FakeTransport>(s));
  };
}

std::size_t count_ops(FakeState& s, Op op, const std::string& path) {
  std::lock_guard lk(s.mu);
  std::size_t n = 0;
  for (const Request& r : s.seen) n += r.op == op && r.path == path;
  return n;
}

struct FakeRig {
  test::TempDir src{"mfs-repl-src"};
  Fd root = open_dir(src.path());
  Journal journal{JournalLimits{}, null_log("journal")};
  std::shared_ptr<FakeState> state = std::make_shared<FakeState>();
  ReplicatorOptions opt = [] {
    ReplicatorOptions o;
    o.backoff_min = 20ms;
    o.backoff_max = 200ms;
    return o;
  }();
  Replicator repl{journal, TargetSpec{}, root, opt, null_log("repl"), fake_factory(state)};
};

TEST(ReplicatorEngine, BrokenSessionRequeuesAndReconnects) {
  FakeRig r;
  r.state->fail_exchanges = 2;
  write_file(r.src.sub("f"), "hello");
  r.journal.record(ch(ChangeKind::Created, "f"));
  r.repl.start();
  ASSERT_TRUE(r.repl.drain(5s));
  EXPECT_EQ(count_ops(*r.state, Op::CommitFile, "f"), 1u);
  EXPECT_GE(r.state->connects, 3);
  const ReplicatorStatus s = r.repl.status();
  EXPECT_TRUE(s.connected);
  EXPECT_EQ(s.pending, 0u);
  EXPECT_NE(s.last_error.find("ECONNRESET"), std::string::npos) << s.last_error;
  EXPECT_EQ(s.files_sent, 1u);
  EXPECT_EQ(s.acked_seq, s.last_seq);
}

TEST(ReplicatorEngine, ConnectBacksOffExponentially) {
  FakeRig r;
  r.state->fail_connects = 3;  // 20 + 40 + 80 ms
  const auto t0 = Clock::now();
  r.journal.record(ch(ChangeKind::Meta, "absent"));
  r.repl.start();
  ASSERT_TRUE(r.repl.drain(5s));
  EXPECT_GE(Clock::now() - t0, 140ms);
  EXPECT_EQ(r.state->connects, 4);
}

TEST(ReplicatorEngine, FailedRequestIsRetriedInFull) {
  FakeRig r;
  r.state->fail_op = Op::Mkdir;
  ASSERT_EQ(::mkdir(r.src.sub("d").c_str(), 0755), 0);
  r.journal.record(ch(ChangeKind::Created, "d"));
  r.repl.start();
  ASSERT_TRUE(r.repl.drain(5s));
  EXPECT_EQ(count_ops(*r.state, Op::Mkdir, "d"), 2u);
  EXPECT_EQ(count_ops(*r.state, Op::Remove, "d"), 1u);  // replace before the retry
}

// A hard link whose Link request fails is shipped as a full copy next,
// never linked again from a name the target may lack: the retry makes
// progress and the queue drains.
TEST(ReplicatorEngine, FailedLinkIsShippedWholeNextTime) {
  FakeRig r;
  r.state->fail_op = Op::Link;
  write_file(r.src.sub("a"), "shared inode");
  ASSERT_EQ(::link(r.src.sub("a").c_str(), r.src.sub("b").c_str()), 0);
  r.journal.record(ch(ChangeKind::Created, "a"));
  r.journal.record(ch(ChangeKind::Created, "b"));
  r.repl.start();
  ASSERT_TRUE(r.repl.drain(5s));
  EXPECT_EQ(count_ops(*r.state, Op::BeginFile, "a"), 1u);
  EXPECT_EQ(count_ops(*r.state, Op::BeginFile, "b"), 1u);  // the retry: a copy, not a link
  EXPECT_GE(count_ops(*r.state, Op::Link, "b"), 1u);       // then "a" is linked to it again
}

TEST(ReplicatorEngine, DrainTimesOutWhileDisconnected) {
  FakeRig r;
  r.state->fail_connects = 1000;
  r.journal.record(ch(ChangeKind::Meta, "x"));
  r.repl.start();
  EXPECT_FALSE(r.repl.drain(100ms));
  EXPECT_FALSE(r.repl.status().connected);
  r.repl.stop();  // must not hang in backoff
}

// ---- end to end through connect(): the real receiver on a temp dir ---------

struct LocalRig {
  test::TempDir src{"mfs-repl-src"};
  test::TempDir dst{"mfs-repl-dst"};
  Fd root = open_dir(src.path());
  Journal journal{JournalLimits{}, null_log("journal")};
  std::unique_ptr<Replicator> repl;

  explicit LocalRig(std::uint64_t in_place_min = 1 << 20,
                    std::chrono::milliseconds delay = std::chrono::milliseconds(2)) {
    ReplicatorOptions opt;
    opt.in_place_min = in_place_min;
    opt.delay = delay;
    Result<TargetSpec> spec = parse_target(dst.path());
    EXPECT_TRUE(spec.has_value());
    repl = std::make_unique<Replicator>(journal, *spec, root, opt, null_log("repl"));
    repl->start();
  }
  void rec(Change c) { journal.record(c); }
  std::string diff() {
    test::CompareOptions o;
    o.dir_mtime = false;  // directory mtimes move as the target creates children
    o.root_meta = false;
    return test::join_lines(test::compare_trees(src.path(), dst.path(), o));
  }
};

TEST(ReplicatorLocal, ShipsATreeByteForByte) {
  LocalRig r;
  ASSERT_EQ(::mkdir(r.src.sub("d").c_str(), 0750), 0);
  r.rec(ch(ChangeKind::Created, "d"));
  write_file(r.src.sub("d/small"), "small file");
  r.rec(ch(ChangeKind::Created, "d/small"));
  std::string big(3 << 20, 'x');
  for (std::size_t i = 0; i < big.size(); i += 4096) big[i] = static_cast<char>('a' + i % 26);
  write_file(r.src.sub("big"), big);
  r.rec(ch(ChangeKind::Created, "big"));
  write_file(r.src.sub("sparse"), "tail", 5 << 20);
  r.rec(ch(ChangeKind::Created, "sparse"));
  ASSERT_EQ(::symlink("d/small", r.src.sub("link").c_str()), 0);
  r.rec(ch(ChangeKind::Created, "link"));
  ASSERT_EQ(::mkfifo(r.src.sub("fifo").c_str(), 0600), 0);
  r.rec(ch(ChangeKind::Created, "fifo"));
  ASSERT_EQ(::setxattr(r.src.sub("d/small").c_str(), "user.k", "v", 1, 0), 0);
  r.rec(ch(ChangeKind::Meta, "d/small"));
  ASSERT_TRUE(r.repl->drain(10s));
  EXPECT_EQ(r.diff(), "");
  struct stat st {};
  ASSERT_EQ(::stat(r.dst.sub("big").c_str(), &st), 0);  // the comparison saw real files
  EXPECT_EQ(st.st_size, 3 << 20);

  // In place: a range of a large file, then a rename, a hard link, removal.
  write_file(r.src.sub("big"), "PATCH", 1 << 20, false);
  r.rec(ch(ChangeKind::Data, "big", {}, 1 << 20, 5));
  ASSERT_EQ(::rename(r.src.sub("d").c_str(), r.src.sub("e").c_str()), 0);
  r.rec(ch(ChangeKind::Renamed, "d", "e"));
  ASSERT_EQ(::link(r.src.sub("e/small").c_str(), r.src.sub("hard").c_str()), 0);
  r.rec(ch(ChangeKind::Linked, "e/small", "hard"));
  ASSERT_EQ(::unlink(r.src.sub("fifo").c_str()), 0);
  r.rec(ch(ChangeKind::Removed, "fifo"));
  ASSERT_TRUE(r.repl->drain(10s));
  EXPECT_EQ(r.diff(), "");
  ASSERT_EQ(::stat(r.dst.sub("hard").c_str(), &st), 0);
  EXPECT_EQ(st.st_nlink, 2u);
  const ReplicatorStatus s = r.repl->status();
  EXPECT_TRUE(s.connected);
  EXPECT_GT(s.bytes_sent, 0u);
  EXPECT_EQ(s.pending, 0u);
}

TEST(ReplicatorLocal, LargeFileRewriteGoesThroughDelta) {
  // A batching window longer than the save below takes, so the temp's
  // creation and its rename reach the same batch (with the default 2 ms a
  // slow machine shipped f.tmp whole before the rename was recorded).
  LocalRig r(64 << 10, 500ms);
  std::string data(1 << 20, 'q');
  write_file(r.src.sub("f"), data);
  r.rec(ch(ChangeKind::Created, "f"));
  ASSERT_TRUE(r.repl->drain(10s));
  data.replace(1000, 3, "NEW");
  write_file(r.src.sub("f.tmp"), data);  // atomic save over the old file
  r.rec(ch(ChangeKind::Created, "f.tmp"));
  ASSERT_EQ(::rename(r.src.sub("f.tmp").c_str(), r.src.sub("f").c_str()), 0);
  r.rec(ch(ChangeKind::Renamed, "f.tmp", "f"));
  const std::uint64_t before = r.repl->status().bytes_sent;
  ASSERT_TRUE(r.repl->drain(10s));
  EXPECT_EQ(r.diff(), "");
  EXPECT_LT(r.repl->status().bytes_sent - before, 256u << 10);  // a delta, not the whole MiB
}

// The signature of a large file is asked for after the batch's earlier
// rename has landed: a delta computed against the pre-rename file would be
// patched onto the renamed one (corrupt content, or EIO forever).
TEST(ReplicatorLocal, SignatureFollowsTheBatchRename) {
  LocalRig r(64 << 10);
  std::string f(256 << 10, 'f'), g(256 << 10, '\0');
  for (std::size_t i = 0; i < g.size(); ++i) g[i] = static_cast<char>('a' + (i * 7) % 26);
  write_file(r.src.sub("f"), f);
  r.rec(ch(ChangeKind::Created, "f"));
  write_file(r.src.sub("g"), g);
  r.rec(ch(ChangeKind::Created, "g"));
  ASSERT_TRUE(r.repl->drain(10s));
  for (int round = 0; round < 20; ++round) {
    ASSERT_EQ(::rename(r.src.sub("f").c_str(), r.src.sub("g").c_str()), 0);  // g's inode is gone
    r.rec(ch(ChangeKind::Renamed, "f", "g"));
    g.replace(static_cast<std::size_t>(round) * 1000, 4, "EDIT");
    write_file(r.src.sub("g"), g);  // a full rewrite: shipped by signature + delta
    r.rec(ch(ChangeKind::Created, "g"));
    write_file(r.src.sub("f"), f);
    r.rec(ch(ChangeKind::Created, "f"));
    ASSERT_TRUE(r.repl->drain(10s));
    ASSERT_EQ(r.diff(), "") << "round " << round;
    EXPECT_EQ(r.repl->status().last_error, "") << "round " << round;
  }
}

// A range over a hole of the source (truncated short, then extended) is
// punched on the target: holes stay holes.
TEST(ReplicatorLocal, RangesOverSourceHolesStayHoles) {
  LocalRig r(64 << 10);
  write_file(r.src.sub("f"), std::string(1 << 20, 'x'));
  r.rec(ch(ChangeKind::Created, "f"));
  ASSERT_TRUE(r.repl->drain(10s));
  ASSERT_EQ(::truncate(r.src.sub("f").c_str(), 10000), 0);
  r.rec(ch(ChangeKind::Data, "f", {}, 10000, Change::kToEnd));
  ASSERT_EQ(::truncate(r.src.sub("f").c_str(), 1 << 20), 0);
  r.rec(ch(ChangeKind::Data, "f", {}, 10000, Change::kToEnd));
  write_file(r.src.sub("f"), "tail", (1 << 20) - 4, false);
  r.rec(ch(ChangeKind::Data, "f", {}, (1 << 20) - 4, 4));
  ASSERT_TRUE(r.repl->drain(10s));
  test::CompareOptions o;
  o.dir_mtime = false;
  o.root_meta = false;
  o.holes = true;
  EXPECT_EQ(test::join_lines(test::compare_trees(r.src.path(), r.dst.path(), o)), "");
  Fd fd(::open(r.dst.sub("f").c_str(), O_RDONLY | O_CLOEXEC));
  EXPECT_EQ(::lseek(fd.get(), 0, SEEK_HOLE), 12288);
}

// A path taken for shipping while a concurrent rename moves it: the rename
// lands in the journal after the take, and the file must not be lost.
TEST(ReplicatorLocal, RenameRacingTheShipIsNotLost) {
  LocalRig r;
  for (int round = 0; round < 50; ++round) {
    const std::string a = "dir" + std::to_string(round), b = a + "-moved";
    ASSERT_EQ(::mkdir(r.src.sub(a).c_str(), 0755), 0);
    r.rec(ch(ChangeKind::Created, a));
    write_file(r.src.sub(a + "/f"), "payload " + std::to_string(round));
    r.rec(ch(ChangeKind::Created, a + "/f"));
    std::this_thread::sleep_for(std::chrono::microseconds(500 * (round % 8)));
    ASSERT_EQ(::rename(r.src.sub(a).c_str(), r.src.sub(b).c_str()), 0);
    r.rec(ch(ChangeKind::Renamed, a, b));
  }
  ASSERT_TRUE(r.repl->drain(20s));
  EXPECT_EQ(r.diff(), "");
}

}  // namespace
}  // namespace mirrorfs::replicate
