// Persistent state: file codec round trips and hostile contents, atomic
// save/load, state_dir preparation, the clean/dirty/carry lifecycle of
// StateKeeper, and Journal::pending_paths.
#include "replicate/state.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

namespace mirrorfs::replicate {
namespace {

namespace stdfs = std::filesystem;

std::shared_ptr<spdlog::logger> null_log() {
  return std::make_shared<spdlog::logger>("state", std::make_shared<spdlog::sinks::null_sink_mt>());
}

class StateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/mirrorfs-state-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    base_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    stdfs::remove_all(base_, ec);
  }
  std::string base_;
};

PersistedState sample() {
  PersistedState s;
  s.source = "/data/src";
  s.target = "ssh://root@h:22/x";
  s.heartbeat_ns = 1'700'000'000'123'456'789;
  s.suspect_since_ns = 1'600'000'000'000'000'000;
  s.overflow = true;
  s.paths = {"a", "dir/with\nnewline", std::string("bad\xff\xfe", 5), "12:34 colon", std::string(300, 'p')};
  return s;
}

TEST(StateCodec, RoundTrips) {
  const PersistedState s = sample();
  Result<PersistedState> back = decode_state(encode_state(s));
  ASSERT_TRUE(back) << back.error().what;
  EXPECT_EQ(*back, s);
  PersistedState clean;
  clean.clean = true;
  back = decode_state(encode_state(clean));
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, clean);
}

TEST(StateCodec, DamagedFilesAreErrors) {
  const std::string data = encode_state(sample());
  for (std::size_t cut = 0; cut < data.size(); ++cut)
    EXPECT_FALSE(decode_state(data.substr(0, cut))) << "cut at " << cut;
  EXPECT_FALSE(decode_state(data + "x"));
  std::string m = data;
  m.replace(m.find("paths 5"), 7, "paths 9");
  EXPECT_FALSE(decode_state(m));
  m = data;
  m.replace(m.find("1:a\n"), 3, "9:a");  // a length running past its line
  EXPECT_FALSE(decode_state(m));
  EXPECT_FALSE(decode_state("mirrorfs-state 2\n"));
  EXPECT_FALSE(decode_state("mirrorfs-state 1\nstate maybe\n"));
}

TEST_F(StateTest, PrepareCreatesThePrivateDirectoryOrSaysWhyNot) {
  const std::string dir = base_ + "/a/b/state";
  ASSERT_TRUE(prepare_state_dir(dir));
  struct stat st {};
  ASSERT_EQ(::stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  ASSERT_TRUE(prepare_state_dir(dir));  // exists already: fine
  std::ofstream(base_ + "/file") << "x";
  Result<void> bad = prepare_state_dir(base_ + "/file/state");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, ENOTDIR);
  EXPECT_NE(bad.error().what.find("file/state"), std::string::npos) << bad.error().what;
  EXPECT_FALSE(prepare_state_dir(base_ + "/file"));
}

TEST_F(StateTest, SaveIsAtomicAndLoadReadsItBack) {
  const std::string path = state_path(base_, "/src", "/rep");
  EXPECT_EQ(path, state_path(base_, "/src", "/rep"));
  EXPECT_NE(path, state_path(base_, "/src", "/rep2"));
  Result<std::optional<PersistedState>> none = load_state(path);
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->has_value());
  ASSERT_TRUE(save_state(path, sample()));
  Result<std::optional<PersistedState>> got = load_state(path);
  ASSERT_TRUE(got && got->has_value());
  EXPECT_EQ(**got, sample());
  EXPECT_FALSE(stdfs::exists(path + ".tmp"));
}

TEST_F(StateTest, KeeperLifecycleCleanDirtyAndCarry) {
  const std::string path = state_path(base_, "/src", "/rep");
  {  // first run: no state; open() writes dirty; a clean finish says clean
    StateKeeper k(path, "/src", "/rep", null_log());
    Result<Recovery> r = k.open();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->previous, Recovery::Previous::None);
    EXPECT_FALSE((*load_state(path))->clean);
    k.finish(true);
    EXPECT_TRUE((*load_state(path))->clean);
  }
  {  // after a clean run; this one "crashes" (never finishes) with paths pending
    StateKeeper k(path, "/src", "/rep", null_log());
    Result<Recovery> r = k.open();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->previous, Recovery::Previous::Clean);
    Journal j(JournalLimits{}, null_log());
    const Journal::TargetId t = j.add_target("rep");
    j.record({ChangeKind::Created, "pending/file"});
    j.record({ChangeKind::Renamed, "x", "y"});
    Journal::PathSnapshot snap = j.pending_paths(t, 100);
    EXPECT_FALSE(snap.overflow);
    EXPECT_NE(std::find(snap.paths.begin(), snap.paths.end(), "pending/file"), snap.paths.end());
    EXPECT_TRUE(j.pending_paths(t, 1).overflow);
    k.start(j, t);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while ((*load_state(path))->paths.empty() && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const PersistedState s = **load_state(path);
    EXPECT_FALSE(s.clean);
    EXPECT_NE(std::find(s.paths.begin(), s.paths.end(), "pending/file"), s.paths.end());
  }  // destroyed without finish(): what a kill -9 leaves
  std::int64_t since = 0;
  {  // the crash is seen; a second crash during the recovery carries its paths
    StateKeeper k(path, "/src", "/rep", null_log());
    Result<Recovery> r = k.open();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->previous, Recovery::Previous::Dirty);
    EXPECT_NE(std::find(r->paths.begin(), r->paths.end(), "pending/file"), r->paths.end());
    EXPECT_GT(r->suspect_since_ns, 0);
    since = r->suspect_since_ns;
    EXPECT_NE(r->describe().find("did not unmount cleanly"), std::string::npos);
  }
  {
    StateKeeper k(path, "/src", "/rep", null_log());
    Result<Recovery> r = k.open();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->previous, Recovery::Previous::Dirty);
    EXPECT_NE(std::find(r->paths.begin(), r->paths.end(), "pending/file"), r->paths.end());
    EXPECT_LE(r->suspect_since_ns, since);
    k.recovered();
    k.finish(false);  // a drain that timed out: still dirty, nothing carried
    const PersistedState s = **load_state(path);
    EXPECT_FALSE(s.clean);
    EXPECT_TRUE(s.paths.empty());
    EXPECT_EQ(s.suspect_since_ns, 0);
  }
}

TEST_F(StateTest, DamagedStateFileCountsAsACrash) {
  const std::string path = state_path(base_, "/src", "/rep");
  std::ofstream(path) << "garbage";
  StateKeeper k(path, "/src", "/rep", null_log());
  Result<Recovery> r = k.open();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->previous, Recovery::Previous::Dirty);
  EXPECT_TRUE(r->overflow);
}

}  // namespace
}  // namespace mirrorfs::replicate
