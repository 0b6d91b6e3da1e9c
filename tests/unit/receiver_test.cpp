// Receiver: every op against a temp dir, hostile paths, and a directory
// swapped for a symlink to the outside between two requests. Nothing
// outside the root may ever change.
#include "replicate/receiver.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <xxhash.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <spdlog/sinks/null_sink.h>

namespace mirrorfs::replicate {
namespace {

namespace stdfs = std::filesystem;

std::string slurp(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void spit(const std::string& p, std::string_view s) {
  std::ofstream(p, std::ios::binary) << s;
}

// Names, types, sizes, modes and contents of a tree (symlinks not followed).
std::string snapshot(const std::string& dir) {
  std::string out;
  for (const auto& e : stdfs::recursive_directory_iterator(dir)) {
    struct stat st {};
    ::lstat(e.path().c_str(), &st);
    out += e.path().string() + " " + std::to_string(st.st_mode) + " " + std::to_string(st.st_size) +
           " " + std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec);
    if (S_ISREG(st.st_mode)) out += " " + slurp(e.path());
    out += "\n";
  }
  return out;
}

class ReceiverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/mirrorfs-rx-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    base_ = tmpl;
    root_ = base_ + "/root";
    outside_ = base_ + "/outside";
    stdfs::create_directory(root_);
    stdfs::create_directory(outside_);
    spit(outside_ + "/secret", "do not touch");
    stdfs::create_directory(outside_ + "/sub");
    outside_before_ = snapshot(outside_);
    auto log = std::make_shared<spdlog::logger>("agent", std::make_shared<spdlog::sinks::null_sink_mt>());
    rx_ = std::make_unique<Receiver>(Fd(::open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)), log);
  }
  void TearDown() override {
    rx_.reset();
    EXPECT_EQ(snapshot(outside_), outside_before_) << "something outside the root changed";
    std::error_code ec;
    stdfs::remove_all(base_, ec);
  }
  Reply call(Op op, std::string path, std::string path2 = {}, std::string data = {},
             std::uint64_t offset = 0, std::uint32_t flags = 0, Meta meta = {}) {
    Request r;
    r.op = op;
    r.path = std::move(path);
    r.path2 = std::move(path2);
    r.data = std::move(data);
    r.offset = offset;
    r.flags = flags;
    r.meta = std::move(meta);
    return rx_->handle(r);
  }
  void ok(const Reply& r) { EXPECT_EQ(r.err, 0) << r.message; }
  std::string at(const std::string& rel) const { return root_ + "/" + rel; }
  void put_file(const std::string& rel, const std::string& content) {
    ok(call(Op::BeginFile, rel));
    ok(call(Op::Write, rel, {}, content));
    ok(call(Op::CommitFile, rel));
  }
  std::vector<std::string> temps() const {
    std::vector<std::string> t;
    for (const auto& e : stdfs::recursive_directory_iterator(root_))
      if (e.path().filename().string().starts_with(kTempPrefix)) t.push_back(e.path());
    return t;
  }

  std::string base_, root_, outside_, outside_before_;
  std::unique_ptr<Receiver> rx_;
};

Meta meta_of(std::uint32_t mode, std::int64_t sec, std::uint32_t nsec) {
  Meta m;
  m.mode = mode;
  m.uid = ::geteuid();
  m.gid = ::getegid();
  m.mtime_sec = sec;
  m.mtime_nsec = nsec;
  return m;
}

TEST_F(ReceiverTest, HelloChecksTheVersion) {
  Reply r = call(Op::Hello, {}, {}, {}, kProtocolVersion);
  ok(r);
  EXPECT_TRUE(r.data.starts_with("mirrorfs-agent"));
  r = call(Op::Hello, {}, {}, {}, kProtocolVersion + 1);
  EXPECT_EQ(r.err, EPROTONOSUPPORT);
}

TEST_F(ReceiverTest, MkdirSetMetaAndStat) {
  ok(call(Op::Mkdir, "d", {}, {}, 0, 0, meta_of(S_IFDIR | 0751, 1000, 123456789)));
  ok(call(Op::Mkdir, "d", {}, {}, 0, 0, meta_of(S_IFDIR | 0755, 2000, 5)));  // exists: ok
  ok(call(Op::Mkdir, "d/e"));
  Meta m = meta_of(S_IFDIR | 0700, 1234, 987654321);
  m.with_xattrs = true;
  m.xattrs = {{"user.a", "1"}, {"user.b", std::string("\0bin", 4)}};
  ASSERT_EQ(::lsetxattr(at("d").c_str(), "user.stale", "x", 1, 0), 0);
  ok(call(Op::SetMeta, "d", {}, {}, 0, 0, m));
  Reply st = call(Op::Stat, "d");
  ok(st);
  Result<StatInfo> s = decode_stat(st.data);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->type, FileType::Directory);
  EXPECT_EQ(s->meta.mode, S_IFDIR | 0700u);
  EXPECT_EQ(s->meta.mtime_sec, 1234);
  EXPECT_EQ(s->meta.mtime_nsec, 987654321u);
  EXPECT_EQ(s->meta.xattrs, m.xattrs);  // user.stale removed
  ok(call(Op::SetMeta, "", {}, {}, 0, 0, meta_of(S_IFDIR | 0750, 77, 7)));  // the root itself
  struct stat rst {};
  ASSERT_EQ(::stat(root_.c_str(), &rst), 0);
  EXPECT_EQ(rst.st_mtim.tv_sec, 77);
  EXPECT_EQ(rst.st_mtim.tv_nsec, 7);
  EXPECT_EQ(call(Op::Stat, "absent").err, ENOENT);
}

TEST_F(ReceiverTest, StagedFileIsAtomicAndCarriesMeta) {
  spit(at("f"), "old");
  ok(call(Op::BeginFile, "f"));
  ok(call(Op::Write, "f", {}, "hello world", 0));
  ok(call(Op::Write, "f", {}, "tail", 1u << 20));  // leaves a hole
  EXPECT_EQ(slurp(at("f")), "old");                // not visible before commit
  EXPECT_EQ(temps().size(), 1u);
  ok(call(Op::CommitFile, "f", {}, {}, 0, 0, meta_of(S_IFREG | 0640, 1500000000, 42)));
  EXPECT_TRUE(temps().empty());
  struct stat st {};
  ASSERT_EQ(::stat(at("f").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, (1 << 20) + 4);
  EXPECT_LT(st.st_blocks * 512, 256 * 1024) << "the gap was materialised";
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  EXPECT_EQ(st.st_mtim.tv_nsec, 42);
  ok(call(Op::BeginFile, "g"));
  ok(call(Op::Truncate, "g", {}, {}, 10));
  ok(call(Op::CommitFile, "g"));
  EXPECT_EQ(slurp(at("g")), std::string(10, '\0'));
  EXPECT_EQ(call(Op::CommitFile, "g").err, EINVAL);  // nothing staged
  ok(call(Op::Barrier, {}));
}

TEST_F(ReceiverTest, InPlaceWritesAndTruncate) {
  spit(at("f"), "0123456789");
  ok(call(Op::Write, "f", {}, "AB", 2));
  EXPECT_EQ(slurp(at("f")), "01AB456789");
  ok(call(Op::Truncate, "f", {}, {}, 4));
  EXPECT_EQ(slurp(at("f")), "01AB");
  ok(call(Op::Truncate, "f", {}, {}, 8u << 20));  // extends with a hole
  struct stat st {};
  ASSERT_EQ(::stat(at("f").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 8 << 20);
  EXPECT_LT(st.st_blocks * 512, 64 * 1024);
  EXPECT_EQ(call(Op::Write, "absent", {}, "x").err, ENOENT);
  ASSERT_EQ(::symlink((outside_ + "/secret").c_str(), at("link").c_str()), 0);
  EXPECT_NE(call(Op::Write, "link", {}, "pwned").err, 0);
  EXPECT_NE(call(Op::Truncate, "link", {}, {}, 0).err, 0);
  ASSERT_EQ(::mkfifo(at("fifo").c_str(), 0600), 0);
  EXPECT_NE(call(Op::Write, "fifo", {}, "x").err, 0);  // refused, and did not block
  ok(call(Op::Barrier, {}));
}

TEST_F(ReceiverTest, SignatureDeltaAndChecksum) {
  std::string old_content(200'000, 'a'), new_content;
  for (std::size_t i = 0; i < old_content.size(); ++i) old_content[i] = static_cast<char>('a' + i % 23);
  new_content = old_content.substr(0, 50'000) + "inserted" + old_content.substr(50'000);
  spit(at("f"), old_content);
  Reply sig = call(Op::Signature, "f");
  ok(sig);
  const std::string src = base_ + "/src";
  spit(src, new_content);
  Fd sfd(::open(src.c_str(), O_RDONLY | O_CLOEXEC));
  Result<std::string> delta = delta_of(sig.data, sfd);
  ASSERT_TRUE(delta);
  const std::size_t half = delta->size() / 2;
  ok(call(Op::Delta, "f", {}, delta->substr(0, half)));
  EXPECT_EQ(slurp(at("f")), old_content);
  ok(call(Op::Delta, "f", {}, delta->substr(half), 0, kLast, meta_of(S_IFREG | 0600, 9, 9)));
  EXPECT_TRUE(slurp(at("f")) == new_content);
  EXPECT_TRUE(temps().empty());
  // No basis: empty signature, all-literal delta.
  Reply none = call(Op::Signature, "new");
  ok(none);
  EXPECT_TRUE(none.data.empty());
  ok(call(Op::Delta, "new", {}, *delta_of(none.data, sfd), 0, kLast));
  EXPECT_TRUE(slurp(at("new")) == new_content);
  Reply sum = call(Op::Checksum, "new");
  ok(sum);
  EXPECT_EQ(*decode_u64(sum.data), XXH64(new_content.data(), new_content.size(), 0));
  EXPECT_NE(call(Op::Delta, "bad", {}, "garbage", 0, kLast).err, 0);
  EXPECT_TRUE(temps().empty());
}

// A namespace op between a Signature and its Delta changed the basis: the
// delta must not be patched onto the other file (that corrupts it, or fails
// as EIO); it fails ESTALE and leaves the file alone.
TEST_F(ReceiverTest, DeltaAgainstAChangedBasisFailsStale) {
  const std::string old_content(100'000, 'o'), other(120'000, 'z');
  std::string new_content = old_content;
  new_content.replace(5000, 3, "NEW");
  spit(at("f"), old_content);
  spit(at("g"), other);
  const std::string src = base_ + "/src";
  spit(src, new_content);
  Fd sfd(::open(src.c_str(), O_RDONLY | O_CLOEXEC));
  Reply sig = call(Op::Signature, "f");
  ok(sig);
  ok(call(Op::Rename, "g", "f"));
  Result<std::string> delta = delta_of(sig.data, sfd);
  ASSERT_TRUE(delta);
  EXPECT_EQ(call(Op::Delta, "f", {}, *delta, 0, kLast).err, ESTALE);
  EXPECT_TRUE(slurp(at("f")) == other);
  EXPECT_TRUE(temps().empty());
  // Changed in place (same inode) after the signature: stale too.
  sig = call(Op::Signature, "f");
  spit(at("f"), old_content);
  EXPECT_EQ(call(Op::Delta, "f", {}, *delta_of(sig.data, sfd), 0, kLast).err, ESTALE);
  // Without any signature, a delta onto an existing file is refused.
  EXPECT_EQ(call(Op::Delta, "f", {}, *delta, 0, kLast).err, ESTALE);
  // Signed again, unchanged: it applies.
  sig = call(Op::Signature, "f");
  ok(call(Op::Delta, "f", {}, *delta_of(sig.data, sfd), 0, kLast));
  EXPECT_TRUE(slurp(at("f")) == new_content);
  EXPECT_TRUE(temps().empty());
}

// Punch makes a hole in place (size kept); a patched file keeps zero blocks
// as holes.
TEST_F(ReceiverTest, PunchAndDeltaKeepHoles) {
  spit(at("f"), std::string(64 << 10, 'd'));
  ok(call(Op::Punch, "f", {}, encode_u64(16 << 10), 8 << 10));
  std::string want(64 << 10, 'd');
  want.replace(8 << 10, 16 << 10, std::string(16 << 10, '\0'));
  EXPECT_TRUE(slurp(at("f")) == want);
  Fd f(::open(at("f").c_str(), O_RDONLY | O_CLOEXEC));
  EXPECT_EQ(::lseek(f.get(), 0, SEEK_HOLE), 8 << 10);
  EXPECT_EQ(::lseek(f.get(), 8 << 10, SEEK_DATA), 24 << 10);
  EXPECT_NE(call(Op::Punch, "f", {}, "short", 0).err, 0);  // malformed length

  const std::string sparse = std::string(40 << 10, 'a') + std::string(200 << 10, '\0') + "end";
  const std::string src = base_ + "/src";
  spit(src, sparse);
  Fd sfd(::open(src.c_str(), O_RDONLY | O_CLOEXEC));
  Reply sig = call(Op::Signature, "f");
  ok(sig);
  ok(call(Op::Delta, "f", {}, *delta_of(sig.data, sfd), 0, kLast));
  EXPECT_TRUE(slurp(at("f")) == sparse);
  Fd g(::open(at("f").c_str(), O_RDONLY | O_CLOEXEC));
  EXPECT_EQ(::lseek(g.get(), 0, SEEK_HOLE), 40 << 10);
  EXPECT_EQ(::lseek(g.get(), 40 << 10, SEEK_DATA), 240 << 10);
}

TEST_F(ReceiverTest, SymlinkLinkMknod) {
  spit(at("f"), "x");
  ok(call(Op::Symlink, "f", "/etc/passwd"));  // replaces the file; the text is data
  EXPECT_EQ(stdfs::read_symlink(at("f")), "/etc/passwd");
  ok(call(Op::Symlink, "f", "../elsewhere", {}, 0, 0, meta_of(S_IFLNK | 0777, 5, 6)));
  Result<StatInfo> s = decode_stat(call(Op::Stat, "f").data);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->type, FileType::Symlink);
  EXPECT_EQ(s->symlink, "../elsewhere");
  EXPECT_EQ(s->meta.mtime_nsec, 6u);
  spit(at("a"), "content");
  spit(at("b"), "other");
  ok(call(Op::Link, "a", "b"));  // replaces b
  ok(call(Op::Link, "a", "b"));  // already the same inode
  EXPECT_EQ(slurp(at("b")), "content");
  EXPECT_EQ(stdfs::hard_link_count(at("a")), 2u);
  Meta fifo = meta_of(S_IFIFO | 0644, 1, 1);
  ok(call(Op::Mknod, "p", {}, {}, 0, 0, fifo));
  EXPECT_TRUE(stdfs::is_fifo(at("p")));
  fifo.mode = S_IFREG | 0644;
  EXPECT_EQ(call(Op::Mknod, "q", {}, {}, 0, 0, fifo).err, EINVAL);
  EXPECT_TRUE(temps().empty());
}

TEST_F(ReceiverTest, RenameAndRemove) {
  ok(call(Op::Mkdir, "d"));
  spit(at("d/f"), "1");
  spit(at("g"), "2");
  ok(call(Op::Rename, "d/f", "h"));
  EXPECT_EQ(slurp(at("h")), "1");
  ok(call(Op::Rename, "h", "g", {}, 0, RENAME_EXCHANGE));
  EXPECT_EQ(slurp(at("h")), "2");
  EXPECT_EQ(call(Op::Rename, "h", "g", {}, 0, RENAME_NOREPLACE).err, EEXIST);
  EXPECT_EQ(call(Op::Rename, "h", "g", {}, 0, 8 /* RENAME_WHITEOUT */).err, EINVAL);
  // A staged file follows a rename of its path, or of a parent directory.
  spit(at("s"), "old");
  ok(call(Op::BeginFile, "s"));
  ok(call(Op::Write, "s", {}, "staged"));
  ok(call(Op::Rename, "s", "s3"));
  ok(call(Op::CommitFile, "s3"));
  EXPECT_EQ(slurp(at("s3")), "staged");
  EXPECT_FALSE(stdfs::exists(at("s")));
  ok(call(Op::BeginFile, "d/in"));
  ok(call(Op::Write, "d/in", {}, "moved"));
  ok(call(Op::Rename, "d", "d2"));
  ok(call(Op::CommitFile, "d2/in"));
  EXPECT_EQ(slurp(at("d2/in")), "moved");
  // Rename over a stale non-empty directory: the source's rename succeeded.
  ok(call(Op::Mkdir, "full"));
  spit(at("full/x"), "stale");
  ok(call(Op::Mkdir, "e"));
  ok(call(Op::Rename, "e", "full"));
  EXPECT_FALSE(stdfs::exists(at("full/x")));
  EXPECT_EQ(call(Op::Rename, "absent", "y").err, ENOENT);
  EXPECT_TRUE(temps().empty());
}

TEST_F(ReceiverTest, RemoveTreesWithoutFollowing) {
  ok(call(Op::Mkdir, "t"));
  ok(call(Op::Mkdir, "t/u"));
  spit(at("t/u/f"), "x");
  ASSERT_EQ(::symlink(outside_.c_str(), at("t/out").c_str()), 0);
  ASSERT_EQ(::symlink((outside_ + "/secret").c_str(), at("t/u/sec").c_str()), 0);
  ok(call(Op::Remove, "t"));
  EXPECT_FALSE(stdfs::exists(at("t")));
  ok(call(Op::Remove, "t"));        // absent
  ok(call(Op::Remove, "no/such"));  // parent absent
  ok(call(Op::BeginFile, "z"));
  ok(call(Op::Remove, "z"));
  EXPECT_TRUE(temps().empty());
  EXPECT_EQ(call(Op::CommitFile, "z").err, EINVAL);
}

TEST_F(ReceiverTest, ListDescribesEveryEntry) {
  ok(call(Op::Mkdir, "d", {}, {}, 0, 0, meta_of(S_IFDIR | 0750, 7, 8)));
  put_file("d/f", "content");
  ok(call(Op::SetMeta, "d/f", {}, {}, 0, 0, meta_of(S_IFREG | 0640, 100, 200)));
  ok(call(Op::Symlink, "d/l", "../outside"));
  ok(call(Op::Link, "d/f", "d/g"));
  ok(call(Op::Mkdir, "d/sub"));
  auto find = [](const std::vector<ListEntry>& v, const std::string& n) -> const ListEntry* {
    for (const ListEntry& e : v)
      if (e.name == n) return &e;
    return nullptr;
  };
  Reply r = call(Op::List, "d");
  ok(r);
  Result<std::vector<ListEntry>> l = decode_listing(r.data);
  ASSERT_TRUE(l) << l.error().what;
  ASSERT_EQ(l->size(), 4u);
  const ListEntry* f = find(*l, "f");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->type, FileType::Regular);
  EXPECT_EQ(f->size, 7u);
  EXPECT_EQ(f->mode, S_IFREG | 0640u);
  EXPECT_EQ(f->mtime_sec, 100);
  EXPECT_EQ(f->mtime_nsec, 200u);
  EXPECT_EQ(f->nlink, 2u);
  EXPECT_FALSE(f->has_checksum);
  ASSERT_NE(find(*l, "l"), nullptr);
  EXPECT_EQ(find(*l, "l")->type, FileType::Symlink);
  EXPECT_EQ(find(*l, "l")->symlink, "../outside");
  EXPECT_EQ(find(*l, "sub")->type, FileType::Directory);
  // With checksums: the same xxh64 Op::Checksum gives.
  r = call(Op::List, "d", {}, {}, 0, kListChecksums);
  ok(r);
  l = decode_listing(r.data);
  ASSERT_TRUE(l);
  f = find(*l, "f");
  ASSERT_TRUE(f->has_checksum);
  EXPECT_EQ(f->checksum, XXH64("content", 7, 0));
  EXPECT_FALSE(find(*l, "l")->has_checksum);
  // The root lists too; a file, a missing path and unknown flags do not.
  r = call(Op::List, "");
  ok(r);
  ASSERT_TRUE(decode_listing(r.data));
  EXPECT_EQ(decode_listing(r.data)->size(), 1u);
  EXPECT_EQ(call(Op::List, "d/f").err, ENOTDIR);
  EXPECT_EQ(call(Op::List, "nope").err, ENOENT);
  EXPECT_EQ(call(Op::List, "d", {}, {}, 0, 0x80).err, EINVAL);
  // A symlink to a directory outside is not followed.
  EXPECT_NE(call(Op::List, "d/l").err, 0);
}

TEST_F(ReceiverTest, ChecksumWithLayoutSeesHoles) {
  // Equal bytes: one file has a hole where the other has written zeros.
  const std::string zeros(3 * 4096, '\0');
  ok(call(Op::BeginFile, "dense"));
  ok(call(Op::Write, "dense", {}, zeros + "tail", 0));
  ok(call(Op::CommitFile, "dense"));
  ok(call(Op::BeginFile, "sparse"));
  ok(call(Op::Write, "sparse", {}, "tail", zeros.size()));
  ok(call(Op::CommitFile, "sparse"));
  const Reply a = call(Op::Checksum, "dense"), b = call(Op::Checksum, "sparse");
  ok(a);
  ok(b);
  EXPECT_EQ(a.data, b.data);
  const Reply al = call(Op::Checksum, "dense", {}, {}, 0, kChecksumLayout);
  const Reply bl = call(Op::Checksum, "sparse", {}, {}, 0, kChecksumLayout);
  ok(al);
  ok(bl);
  EXPECT_NE(al.data, bl.data);
}

TEST_F(ReceiverTest, ListTooLargeForAFrameIsE2big) {
  ok(call(Op::Mkdir, "big"));
  for (int i = 0; i < 100; ++i) spit(at("big/" + std::string(200, 'x') + std::to_string(i)), "");
  Fd dir(::open(at("big").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(dir.valid());
  Result<std::string> small = target::list_dir(dir.get(), "big", false, 10'000);
  ASSERT_FALSE(small);
  EXPECT_EQ(small.error().code, E2BIG);
  Result<std::string> fits = target::list_dir(dir.get(), "big", false, 1'000'000);
  ASSERT_TRUE(fits);
  EXPECT_EQ(decode_listing(*fits)->size(), 100u);
}

TEST_F(ReceiverTest, HostilePathsAreRejected) {
  const std::vector<std::string> bad = {"..", "/etc/passwd", "a/../../x", "a//b", "./a", "a/.",
                                        std::string("a\0b", 3), std::string(256, 'n'),
                                        std::string(2100, 'a') + "/" + std::string(2100, 'b'), "a/"};
  ok(call(Op::Mkdir, "a"));
  for (const std::string& p : bad) {
    SCOPED_TRACE(quoted(p));
    for (Op op : {Op::Mkdir, Op::BeginFile, Op::Write, Op::Truncate, Op::Signature, Op::Delta,
                  Op::SetMeta, Op::Symlink, Op::Mknod, Op::Remove, Op::Stat, Op::Checksum,
                  Op::Punch, Op::List}) {
      const Reply r = call(op, p, "t", "data", 0, kLast, meta_of(S_IFIFO | 0777, 0, 0));
      EXPECT_TRUE(r.err == EINVAL || r.err == ENAMETOOLONG) << "op " << int(op) << ": " << r.err;
    }
    for (Op op : {Op::Rename, Op::Link}) {
      EXPECT_NE(call(op, "a", p).err, 0);
      EXPECT_NE(call(op, p, "b").err, 0);
    }
  }
  EXPECT_NE(call(Op::Remove, "").err, 0);  // never the root itself
  EXPECT_NE(call(Op::Rename, "", "x").err, 0);
  EXPECT_TRUE(stdfs::is_directory(at("a")));
}

TEST_F(ReceiverTest, DirectorySwappedForSymlinkCannotEscape) {
  ok(call(Op::Mkdir, "d"));
  spit(at("d/f"), "inside");
  ok(call(Op::BeginFile, "d/staged"));
  ok(call(Op::Write, "d/staged", {}, "x"));
  // Between two requests, d becomes a symlink to a directory outside the root.
  stdfs::rename(at("d"), at("d.old"));
  ASSERT_EQ(::symlink(outside_.c_str(), at("d").c_str()), 0);
  const Meta m = meta_of(S_IFREG | 0777, 1, 1);
  for (Op op : {Op::Mkdir, Op::BeginFile, Op::Write, Op::Truncate, Op::CommitFile, Op::Delta,
                Op::SetMeta, Op::Symlink, Op::Mknod, Op::Remove, Op::Stat, Op::Checksum,
                Op::Signature, Op::Punch, Op::List}) {
    for (const char* p : {"d/secret", "d/sub/x", "d/staged", "d/sub"}) {
      const Reply r = call(op, p, "t", "pwned", 0, kLast, m);
      // Write/Truncate to a staged path go to its temp, which stays inside
      // the root (in d.old): allowed. Everything else must fail.
      const bool staged = std::string_view(p) == "d/staged" && (op == Op::Write || op == Op::Truncate);
      if (!staged) {
        EXPECT_NE(r.err, 0) << "op " << int(op) << " " << p << ": " << r.err << " " << r.message;
      }
    }
  }
  EXPECT_NE(call(Op::Rename, "d.old/f", "d/secret").err, 0);
  EXPECT_NE(call(Op::Rename, "d/secret", "stolen").err, 0);
  EXPECT_NE(call(Op::Link, "d/secret", "stolen").err, 0);
  EXPECT_NE(call(Op::Link, "d.old/f", "d/sub/f").err, 0);
  EXPECT_FALSE(stdfs::exists(at("stolen")));
  // The symlink itself is an ordinary entry: metadata and removal act on it.
  ok(call(Op::SetMeta, "d", {}, {}, 0, 0, meta_of(S_IFLNK | 0777, 3, 3)));
  ok(call(Op::Remove, "d"));
  EXPECT_FALSE(stdfs::exists(at("d")));
}

}  // namespace
}  // namespace mirrorfs::replicate
