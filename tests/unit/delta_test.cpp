// librsync wrapper round trips on memory files: signature of the old
// content, delta to the new one, patch old + delta == new.
#include "replicate/delta.hpp"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <cstring>
#include <random>

namespace mirrorfs::replicate {
namespace {

Fd mem_file(std::string_view content) {
  Fd fd(::memfd_create("delta_test", MFD_CLOEXEC));
  EXPECT_TRUE(fd.valid());
  EXPECT_EQ(::pwrite(fd.get(), content.data(), content.size(), 0),
            static_cast<ssize_t>(content.size()));
  return fd;
}

std::string read_all(const Fd& fd) {
  struct stat st {};
  EXPECT_EQ(::fstat(fd.get(), &st), 0);
  std::string s(static_cast<std::size_t>(st.st_size), '\0');
  EXPECT_EQ(::pread(fd.get(), s.data(), s.size(), 0), static_cast<ssize_t>(s.size()));
  return s;
}

std::string random_string(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (std::size_t i = 0; i + 8 <= n; i += 8) {
    const std::uint64_t v = rng();
    std::memcpy(&s[i], &v, 8);
  }
  return s;
}

// Returns the delta size; asserts the round trip.
std::size_t round_trip(const std::string& old_content, const std::string& new_content) {
  const Fd basis = mem_file(old_content);
  const Fd target = mem_file(new_content);
  Result<std::string> sig = signature_of(basis);
  EXPECT_TRUE(sig) << sig.error().what;
  Result<std::string> delta = delta_of(*sig, target);
  EXPECT_TRUE(delta) << delta.error().what;
  const Fd out = mem_file({});
  Result<void> p = patch(basis, *delta, out);
  EXPECT_TRUE(p) << p.error().what;
  EXPECT_TRUE(read_all(out) == new_content);
  return delta->size();
}

TEST(Delta, Identical) {
  const std::string s = random_string(100'000, 1);
  EXPECT_LT(round_trip(s, s), 1000u);
}

TEST(Delta, Appended) {
  const std::string s = random_string(200'000, 2);
  EXPECT_LT(round_trip(s, s + "tail bytes"), 2000u);
}

TEST(Delta, InsertedInTheMiddle) {
  const std::string s = random_string(300'000, 3);
  const std::string t = s.substr(0, 150'001) + "INSERTED" + s.substr(150'001);
  EXPECT_LT(round_trip(s, t), 8000u);
}

TEST(Delta, EmptyOldNewOrBoth) {
  round_trip("", "");
  round_trip("", "brand new content");
  round_trip("old content", "");
}

TEST(Delta, LargeFileWithSmallEdits) {
  const std::string s = random_string(8u << 20, 4);
  std::string t = s;
  for (std::size_t at : {std::size_t{17}, std::size_t{3u << 20}, std::size_t{(8u << 20) - 100}})
    t[at] = static_cast<char>(t[at] ^ 0x5a);
  const std::size_t delta = round_trip(s, t);
  EXPECT_LT(delta, 64u * 1024) << "delta of three byte edits in 8 MiB";
}

TEST(Delta, NoBasisMeansEmptySignature) {
  const Fd target = mem_file("content for a file the target does not have");
  Result<std::string> delta = delta_of("", target);
  ASSERT_TRUE(delta) << delta.error().what;
  const Fd out = mem_file({});
  ASSERT_TRUE(patch(Fd(), *delta, out));  // no basis fd at all
  EXPECT_EQ(read_all(out), read_all(target));
}

TEST(Delta, StreamedInSmallChunks) {
  const std::string s = random_string(500'000, 5);
  std::string t = s;
  t.insert(1000, "xyz");
  const Fd basis = mem_file(s), target = mem_file(t), out = mem_file({});
  Result<std::string> delta = delta_of(*signature_of(basis), target);
  ASSERT_TRUE(delta);
  PatchStream stream(basis, out);
  for (std::size_t i = 0; i < delta->size(); i += 7)
    ASSERT_TRUE(stream.feed(std::string_view(*delta).substr(i, 7)));
  ASSERT_TRUE(stream.finish());
  EXPECT_TRUE(read_all(out) == t);
}

// Zero blocks of the patched output stay holes, trailing ones included (the
// replica must keep the source's holes), and the content is still exact.
TEST(Delta, PatchLeavesZeroBlocksAsHoles) {
  const std::string basis_content = random_string(300'000, 7);
  std::string t = random_string(64 << 10, 8) + std::string(256 << 10, '\0') +
                  random_string(64 << 10, 9) + std::string(100 << 10, '\0');
  t[(64 << 10) + (256 << 10) + 5] = 'x';
  const Fd basis = mem_file(basis_content), target = mem_file(t), out = mem_file({});
  Result<std::string> delta = delta_of(*signature_of(basis), target);
  ASSERT_TRUE(delta);
  ASSERT_TRUE(patch(basis, *delta, out));
  EXPECT_TRUE(read_all(out) == t);
  EXPECT_EQ(::lseek(out.get(), 0, SEEK_HOLE), 64 << 10);
  EXPECT_EQ(::lseek(out.get(), 64 << 10, SEEK_DATA), (64 << 10) + (256 << 10));
  EXPECT_EQ(::lseek(out.get(), (128 << 10) + (256 << 10), SEEK_DATA), -1);  // ENXIO: a hole to EOF
}

TEST(Delta, CorruptOrTruncatedDeltaIsAnError) {
  const std::string s = random_string(50'000, 6);
  const Fd basis = mem_file(s), target = mem_file(s + "x");
  Result<std::string> delta = delta_of(*signature_of(basis), target);
  ASSERT_TRUE(delta);
  const Fd out1 = mem_file({});
  EXPECT_FALSE(patch(basis, delta->substr(0, delta->size() - 1), out1));
  std::string bad = *delta;
  bad[0] = static_cast<char>(bad[0] ^ 0xff);  // magic
  const Fd out2 = mem_file({});
  EXPECT_FALSE(patch(basis, bad, out2));
  EXPECT_FALSE(delta_of("not a signature", target));
}

}  // namespace
}  // namespace mirrorfs::replicate
