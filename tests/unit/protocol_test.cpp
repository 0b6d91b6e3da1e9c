// Protocol codec: round trips of every Op, and random, mutated and truncated
// input fed to every decoder, which must return an Error and never crash
// (run under ASan+UBSan). MIRRORFS_SEED=<n> replays a run.
#include "replicate/protocol.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <random>

namespace mirrorfs::replicate {
namespace {

std::uint64_t test_seed() {
  if (const char* s = std::getenv("MIRRORFS_SEED")) return std::strtoull(s, nullptr, 10);
  return std::random_device{}();
}

std::string random_bytes(std::mt19937_64& rng, std::size_t max) {
  std::string s(rng() % (max + 1), '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

Request random_request(std::mt19937_64& rng, Op op) {
  Request r;
  r.op = op;
  r.path = "dir/file\n" + random_bytes(rng, 20);
  r.path2 = random_bytes(rng, 30);
  r.offset = rng();
  r.flags = static_cast<std::uint32_t>(rng());
  r.meta.mode = static_cast<std::uint32_t>(rng());
  r.meta.uid = static_cast<std::uint32_t>(rng());
  r.meta.gid = static_cast<std::uint32_t>(rng());
  r.meta.mtime_sec = static_cast<std::int64_t>(rng());
  r.meta.mtime_nsec = static_cast<std::uint32_t>(rng() % 1'000'000'000u);
  r.meta.with_owner = (rng() & 1) != 0;
  r.meta.with_xattrs = (rng() & 1) != 0;
  for (std::uint64_t i = rng() % 4; i > 0; --i)
    r.meta.xattrs.push_back({"user." + random_bytes(rng, 8), random_bytes(rng, 40)});
  r.data = random_bytes(rng, 300);
  return r;
}

std::string_view payload(const std::string& frame) {
  return std::string_view(frame).substr(kFrameHeader);
}

TEST(Protocol, EveryOpRoundTrips) {
  std::mt19937_64 rng(1);
  for (int op = static_cast<int>(Op::Hello); op <= static_cast<int>(Op::List); ++op) {
    const Request r = random_request(rng, static_cast<Op>(op));
    std::string frame;
    encode_request(r, frame);
    ASSERT_EQ(frame.size(), request_frame_size(r));
    Result<std::size_t> len = frame_length(frame);
    ASSERT_TRUE(len);
    ASSERT_EQ(*len, frame.size());
    EXPECT_EQ(static_cast<std::uint8_t>(frame[4]), kFrameRequest);
    Result<Request> back = decode_request(payload(frame));
    ASSERT_TRUE(back) << back.error().what;
    EXPECT_EQ(*back, r) << "op " << op;
  }
}

TEST(Protocol, RepliesStatAndChecksumRoundTrip) {
  const Reply r{ENOSPC, "write \"a\" failed", std::string("\0\1\2", 3)};
  std::string frame;
  encode_reply(r, frame);
  ASSERT_EQ(frame.size(), reply_frame_size(r));
  Result<Reply> back = decode_reply(payload(frame));
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, r);

  StatInfo s;
  s.type = FileType::Symlink;
  s.size = 12;
  s.nlink = 3;
  s.meta = {0120777, 1, 2, -5, 999'999'999, true, true, {{"user.a", "x"}}};
  s.symlink = "../target";
  Result<StatInfo> sb = decode_stat(encode_stat(s));
  ASSERT_TRUE(sb);
  EXPECT_EQ(*sb, s);
  Result<std::uint64_t> u = decode_u64(encode_u64(0x0123456789abcdefULL));
  ASSERT_TRUE(u);
  EXPECT_EQ(*u, 0x0123456789abcdefULL);
}

std::vector<ListEntry> sample_listing() {
  ListEntry f;
  f.name = "file\nwith newline \xff";
  f.size = 1234;
  f.mode = 0100644;
  f.uid = 1000;
  f.gid = 1000;
  f.mtime_sec = -3;
  f.mtime_nsec = 999'999'999;
  f.nlink = 2;
  f.has_checksum = true;
  f.checksum = 0xfeedfacecafebeefULL;
  ListEntry d;
  d.name = "dir";
  d.type = FileType::Directory;
  d.mode = 040755;
  d.nlink = 3;
  ListEntry l;
  l.name = std::string(255, 'l');
  l.type = FileType::Symlink;
  l.mode = 0120777;
  l.symlink = "../../x";
  return {f, d, l};
}

TEST(Protocol, ListingRoundTrips) {
  const std::vector<ListEntry> entries = sample_listing();
  const std::string data = encode_listing(entries);
  std::size_t size = 4;
  for (const ListEntry& e : entries) size += list_entry_size(e);
  EXPECT_EQ(data.size(), size);
  Result<std::vector<ListEntry>> back = decode_listing(data);
  ASSERT_TRUE(back) << back.error().what;
  EXPECT_EQ(*back, entries);
  Result<std::vector<ListEntry>> empty = decode_listing(encode_listing({}));
  ASSERT_TRUE(empty);
  EXPECT_TRUE(empty->empty());
}

TEST(Protocol, HostileListingsAreErrors) {
  // Names that would address something outside the listed directory.
  for (const std::string& bad : {std::string(), std::string("."), std::string(".."), std::string("a/b"),
                                 std::string("a\0b", 3), std::string(256, 'n')}) {
    std::vector<ListEntry> e = sample_listing();
    e[1].name = bad;
    Result<std::vector<ListEntry>> r = decode_listing(encode_listing(e));
    ASSERT_FALSE(r) << quoted(bad);
    EXPECT_EQ(r.error().code, EPROTO);
  }
  std::vector<ListEntry> e = sample_listing();
  std::string data = encode_listing(e);
  for (std::size_t cut = 0; cut < data.size(); ++cut) EXPECT_FALSE(decode_listing(data.substr(0, cut)));
  EXPECT_FALSE(decode_listing(data + '\0'));
  // A count of 2^32-1 entries with nothing behind it must not allocate.
  EXPECT_FALSE(decode_listing(std::string("\xff\xff\xff\xff", 4)));
  // Bad type, bad nsec, bad checksum flag.
  e[2].type = static_cast<FileType>(9);
  EXPECT_FALSE(decode_listing(encode_listing(e)));
  e = sample_listing();
  e[0].mtime_nsec = 1'000'000'000;
  EXPECT_FALSE(decode_listing(encode_listing(e)));
  data = encode_listing({sample_listing()[1]});
  data[data.size() - 1] = 2;  // has_checksum byte
  EXPECT_FALSE(decode_listing(data));
}

TEST(Protocol, TwoFramesInOneBuffer) {
  std::string buf;
  Request a;
  a.op = Op::Mkdir;
  a.path = "a";
  encode_request(a, buf);
  const std::size_t first = buf.size();
  encode_reply({}, buf);
  EXPECT_EQ(*frame_length(buf), first);
  EXPECT_EQ(*frame_length(std::string_view(buf).substr(0, first - 1)), 0u);  // need more
  EXPECT_EQ(*frame_length(std::string_view(buf).substr(0, 3)), 0u);
  EXPECT_EQ(*frame_length(std::string_view(buf).substr(first)), buf.size() - first);
}

TEST(Protocol, BadHeadersAreErrors) {
  std::string h = {'\x10', 0, 0, 0, '\x09'};  // unknown frame type
  EXPECT_FALSE(frame_length(h));
  h = {'\xff', '\xff', '\xff', '\xff', 1};  // 4 GiB frame
  Result<std::size_t> len = frame_length(h);
  ASSERT_FALSE(len);
  EXPECT_EQ(len.error().code, EPROTO);
}

TEST(Protocol, HostileLengthsDoNotAllocate) {
  // op, then a path length of 4 GiB with nothing behind it.
  const std::string p = {1, '\xff', '\xff', '\xff', '\xff'};
  Result<Request> r = decode_request(p);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EPROTO);
  // A valid request whose xattr count claims 2^32-1 entries.
  Request q;
  q.op = Op::SetMeta;
  std::string frame;
  encode_request(q, frame);
  std::string body(payload(frame));
  const std::size_t count_at = 1 + 4 + 4 + 8 + 4 + 4 + 4 + 4 + 8 + 4 + 1;
  for (std::size_t i = 0; i < 4; ++i) body[count_at + i] = '\xff';
  EXPECT_FALSE(decode_request(body));
  EXPECT_FALSE(decode_request(std::string(1, '\0')));    // op 0
  EXPECT_FALSE(decode_request(std::string(1, '\x7f')));  // op out of range
  EXPECT_FALSE(decode_reply({}));
  EXPECT_FALSE(decode_stat({}));
  EXPECT_FALSE(decode_u64("1234567"));
}

TEST(ProtocolFuzz, RandomMutatedAndTruncatedInputNeverCrashes) {
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(testing::Message() << "MIRRORFS_SEED=" << seed);
  std::printf("protocol fuzz: MIRRORFS_SEED=%llu\n", static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);
  int accepted = 0;
  for (int i = 0; i < 4000; ++i) {
    const std::string junk = random_bytes(rng, 200);
    accepted += decode_request(junk).has_value() + decode_reply(junk).has_value() +
                decode_stat(junk).has_value();
    (void)frame_length(junk);
    (void)decode_listing(junk);
    {  // mutated listings: an Error or entries with valid names, never a crash
      std::string l = encode_listing(sample_listing());
      for (std::uint64_t k = 1 + rng() % 4; k > 0; --k) l[rng() % l.size()] = static_cast<char>(rng());
      if (Result<std::vector<ListEntry>> d = decode_listing(l); d) {
        for (const ListEntry& e : *d) {
          ASSERT_FALSE(e.name.empty());
          ASSERT_EQ(e.name.find('/'), std::string::npos);
        }
      }
    }

    const auto op = static_cast<Op>(1 + rng() % static_cast<int>(Op::List));
    const Request r = random_request(rng, op);
    std::string frame;
    encode_request(r, frame);
    const std::string body(payload(frame));
    // Every strict prefix of a valid payload is an error.
    const std::size_t cut = rng() % body.size();
    ASSERT_FALSE(decode_request(body.substr(0, cut))) << "cut at " << cut;
    ASSERT_FALSE(decode_request(body + '\0'));  // trailing garbage
    // Mutations: either an Error or a well-formed request, never a crash.
    std::string m = body;
    for (std::uint64_t k = 1 + rng() % 4; k > 0; --k) m[rng() % m.size()] = static_cast<char>(rng());
    if (Result<Request> d = decode_request(m); d) {
      std::string again;
      encode_request(*d, again);
      ASSERT_EQ(payload(again), m);  // what decodes re-encodes to the same bytes
    }
    std::string rep;
    encode_reply({static_cast<std::int32_t>(rng() % 200), random_bytes(rng, 20), random_bytes(rng, 50)}, rep);
    const std::string rbody(payload(rep));
    ASSERT_FALSE(decode_reply(std::string_view(rbody).substr(0, rng() % rbody.size())));
    std::string rm = rbody;
    rm[rng() % rm.size()] = static_cast<char>(rng());
    (void)decode_reply(rm);
  }
  EXPECT_LT(accepted, 4000 * 3);
}

}  // namespace
}  // namespace mirrorfs::replicate
