// Wire encoding of requests, replies and Stat data.
//
// Frame:   u32 LE payload length | u8 frame type | payload
// Request: u8 op | str path | str path2 | u64 offset | u32 flags | meta | str data
// Reply:   i32 err | str message | str data
// Meta:    u32 mode | u32 uid | u32 gid | i64 mtime_sec | u32 mtime_nsec |
//          u8 bits (1 with_owner, 2 with_xattrs) | u32 count | count x (str, str)
// Listing: u32 count | count x (str name | u8 type | u64 size | u32 mode | u32 uid |
//          u32 gid | i64 mtime_sec | u32 mtime_nsec | u64 nlink | str symlink |
//          u8 has_checksum | [u64 checksum])
// str:     u32 LE length | bytes.  All integers little-endian.
//
// Decoders read through a bounds-checked cursor: every length is compared
// with what remains before anything is copied, so a hostile frame can make
// them allocate at most its own size.
#include "replicate/protocol.hpp"

#include <cstring>

namespace mirrorfs::replicate {
namespace {

constexpr std::uint8_t kBitOwner = 1, kBitXattrs = 2;
constexpr auto kMaxOp = static_cast<std::uint8_t>(Op::List);

void put_u8(std::string& out, std::uint8_t v) { out.push_back(static_cast<char>(v)); }
void put_u32(std::string& out, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xffu));
}
void put_u64(std::string& out, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xffu));
}
void put_str(std::string& out, std::string_view s) {
  put_u32(out, static_cast<std::uint32_t>(s.size()));
  out.append(s);
}

void put_meta(std::string& out, const Meta& m) {
  put_u32(out, m.mode);
  put_u32(out, m.uid);
  put_u32(out, m.gid);
  put_u64(out, static_cast<std::uint64_t>(m.mtime_sec));
  put_u32(out, m.mtime_nsec);
  put_u8(out, static_cast<std::uint8_t>((m.with_owner ? kBitOwner : 0) |
                                        (m.with_xattrs ? kBitXattrs : 0)));
  put_u32(out, static_cast<std::uint32_t>(m.xattrs.size()));
  for (const Xattr& x : m.xattrs) {
    put_str(out, x.name);
    put_str(out, x.value);
  }
}

std::size_t meta_size(const Meta& m) noexcept {
  std::size_t n = 4 + 4 + 4 + 8 + 4 + 1 + 4;
  for (const Xattr& x : m.xattrs) n += 8 + x.name.size() + x.value.size();
  return n;
}

// Writes the header in front of a payload appended by body().
template <class Body>
void frame(std::string& out, std::uint8_t type, Body&& body) {
  const std::size_t start = out.size();
  out.append(kFrameHeader, '\0');
  body();
  const auto len = static_cast<std::uint32_t>(out.size() - start - kFrameHeader);
  for (std::size_t i = 0; i < 4; ++i)
    out[start + i] = static_cast<char>((len >> (8 * i)) & 0xffu);
  out[start + 4] = static_cast<char>(type);
}

class Cursor {
 public:
  explicit Cursor(std::string_view in) : in_(in) {}
  bool u8(std::uint8_t& v) {
    if (in_.size() < 1) return false;
    v = static_cast<std::uint8_t>(in_[0]);
    in_.remove_prefix(1);
    return true;
  }
  bool u32(std::uint32_t& v) {
    std::uint64_t w = 0;
    if (!le(4, w)) return false;
    v = static_cast<std::uint32_t>(w);
    return true;
  }
  bool u64(std::uint64_t& v) { return le(8, v); }
  bool str(std::string& s) {
    std::uint32_t n = 0;
    if (!u32(n) || n > in_.size()) return false;
    s.assign(in_.data(), n);
    in_.remove_prefix(n);
    return true;
  }
  bool meta(Meta& m);
  [[nodiscard]] bool empty() const { return in_.empty(); }
  [[nodiscard]] std::size_t left() const { return in_.size(); }

 private:
  bool le(std::size_t n, std::uint64_t& v) {
    if (in_.size() < n) return false;
    v = 0;
    for (std::size_t i = 0; i < n; ++i)
      v |= std::uint64_t{static_cast<std::uint8_t>(in_[i])} << (8 * i);
    in_.remove_prefix(n);
    return true;
  }
  std::string_view in_;
};

bool Cursor::meta(Meta& m) {
  std::uint64_t sec = 0;
  std::uint8_t bits = 0;
  std::uint32_t count = 0;
  if (!u32(m.mode) || !u32(m.uid) || !u32(m.gid) || !u64(sec) || !u32(m.mtime_nsec) ||
      !u8(bits) || !u32(count))
    return false;
  if (m.mtime_nsec >= 1'000'000'000u || (bits & ~(kBitOwner | kBitXattrs)) != 0) return false;
  if (count > left() / 8) return false;  // each xattr takes at least 8 bytes
  m.mtime_sec = static_cast<std::int64_t>(sec);
  m.with_owner = (bits & kBitOwner) != 0;
  m.with_xattrs = (bits & kBitXattrs) != 0;
  m.xattrs.clear();
  m.xattrs.reserve(count);
  for (std::uint32_t i = 0; i < count; ++i) {
    Xattr x;
    if (!str(x.name) || !str(x.value)) return false;
    m.xattrs.push_back(std::move(x));
  }
  return true;
}

tl::unexpected<Error> malformed(const char* what) {
  return fail(EPROTO, std::string("malformed ") + what);
}

}  // namespace

void encode_request(const Request& r, std::string& out) {
  frame(out, kFrameRequest, [&] {
    put_u8(out, static_cast<std::uint8_t>(r.op));
    put_str(out, r.path);
    put_str(out, r.path2);
    put_u64(out, r.offset);
    put_u32(out, r.flags);
    put_meta(out, r.meta);
    put_str(out, r.data);
  });
}

void encode_reply(const Reply& r, std::string& out) {
  frame(out, kFrameReply, [&] {
    put_u32(out, static_cast<std::uint32_t>(r.err));
    put_str(out, r.message);
    put_str(out, r.data);
  });
}

std::size_t request_frame_size(const Request& r) noexcept {
  return kFrameHeader + 1 + 4 + r.path.size() + 4 + r.path2.size() + 8 + 4 + meta_size(r.meta) +
         4 + r.data.size();
}

std::size_t reply_frame_size(const Reply& r) noexcept {
  return kFrameHeader + 4 + 4 + r.message.size() + 4 + r.data.size();
}

Result<Request> decode_request(std::string_view payload) {
  if (payload.size() > kMaxFrame) return malformed("request (too large)");
  Cursor c(payload);
  Request r;
  std::uint8_t op = 0;
  if (!c.u8(op) || op < 1 || op > kMaxOp) return malformed("request (op)");
  r.op = static_cast<Op>(op);
  if (!c.str(r.path) || !c.str(r.path2) || !c.u64(r.offset) || !c.u32(r.flags) ||
      !c.meta(r.meta) || !c.str(r.data) || !c.empty())
    return malformed("request");
  return r;
}

Result<Reply> decode_reply(std::string_view payload) {
  if (payload.size() > kMaxFrame) return malformed("reply (too large)");
  Cursor c(payload);
  Reply r;
  std::uint32_t err = 0;
  if (!c.u32(err) || !c.str(r.message) || !c.str(r.data) || !c.empty())
    return malformed("reply");
  r.err = static_cast<std::int32_t>(err);
  if (r.err < 0 || r.err > 4095) return malformed("reply (errno)");
  return r;
}

std::string encode_stat(const StatInfo& s) {
  std::string out;
  put_u8(out, static_cast<std::uint8_t>(s.type));
  put_u64(out, s.size);
  put_u64(out, s.nlink);
  put_u64(out, s.rdev);
  put_meta(out, s.meta);
  put_str(out, s.symlink);
  return out;
}

Result<StatInfo> decode_stat(std::string_view data) {
  Cursor c(data);
  StatInfo s;
  std::uint8_t type = 0;
  if (!c.u8(type) || type < 1 || type > static_cast<std::uint8_t>(FileType::Other))
    return malformed("stat (type)");
  s.type = static_cast<FileType>(type);
  if (!c.u64(s.size) || !c.u64(s.nlink) || !c.u64(s.rdev) || !c.meta(s.meta) ||
      !c.str(s.symlink) || !c.empty())
    return malformed("stat");
  return s;
}

std::string encode_u64(std::uint64_t v) {
  std::string out;
  put_u64(out, v);
  return out;
}

Result<std::uint64_t> decode_u64(std::string_view data) {
  Cursor c(data);
  std::uint64_t v = 0;
  if (!c.u64(v) || !c.empty()) return malformed("u64");
  return v;
}

void encode_list_entry(const ListEntry& e, std::string& out) {
  put_str(out, e.name);
  put_u8(out, static_cast<std::uint8_t>(e.type));
  put_u64(out, e.size);
  put_u32(out, e.mode);
  put_u32(out, e.uid);
  put_u32(out, e.gid);
  put_u64(out, static_cast<std::uint64_t>(e.mtime_sec));
  put_u32(out, e.mtime_nsec);
  put_u64(out, e.nlink);
  put_str(out, e.symlink);
  put_u8(out, e.has_checksum ? 1 : 0);
  if (e.has_checksum) put_u64(out, e.checksum);
}

std::size_t list_entry_size(const ListEntry& e) noexcept {
  return 4 + e.name.size() + 1 + 8 + 4 * 3 + 8 + 4 + 8 + 4 + e.symlink.size() + 1 +
         (e.has_checksum ? 8 : 0);
}

std::string encode_listing(const std::vector<ListEntry>& entries) {
  std::string out;
  std::size_t n = 4;
  for (const ListEntry& e : entries) n += list_entry_size(e);
  out.reserve(n);
  put_u32(out, static_cast<std::uint32_t>(entries.size()));
  for (const ListEntry& e : entries) encode_list_entry(e, out);
  return out;
}

namespace {
bool valid_name(std::string_view n) {
  return !n.empty() && n.size() <= 255 && n != "." && n != ".." &&
         n.find('/') == std::string_view::npos && n.find('\0') == std::string_view::npos;
}
}  // namespace

Result<std::vector<ListEntry>> decode_listing(std::string_view data) {
  constexpr std::size_t kMinEntry = 4 + 1 + 8 + 12 + 8 + 4 + 8 + 4 + 1;
  Cursor c(data);
  std::uint32_t count = 0;
  if (!c.u32(count) || count > c.left() / kMinEntry) return malformed("listing (count)");
  std::vector<ListEntry> out;
  out.reserve(count);
  for (std::uint32_t i = 0; i < count; ++i) {
    ListEntry e;
    std::uint8_t type = 0, has = 0;
    std::uint64_t sec = 0;
    if (!c.str(e.name) || !c.u8(type) || !c.u64(e.size) || !c.u32(e.mode) || !c.u32(e.uid) ||
        !c.u32(e.gid) || !c.u64(sec) || !c.u32(e.mtime_nsec) || !c.u64(e.nlink) ||
        !c.str(e.symlink) || !c.u8(has))
      return malformed("listing");
    if (!valid_name(e.name)) return malformed("listing (name)");
    if (type < 1 || type > static_cast<std::uint8_t>(FileType::Other) || has > 1 ||
        e.mtime_nsec >= 1'000'000'000u)
      return malformed("listing (entry)");
    e.type = static_cast<FileType>(type);
    e.mtime_sec = static_cast<std::int64_t>(sec);
    e.has_checksum = has == 1;
    if (e.has_checksum && !c.u64(e.checksum)) return malformed("listing (checksum)");
    out.push_back(std::move(e));
  }
  if (!c.empty()) return malformed("listing (trailing bytes)");
  return out;
}

Result<std::size_t> frame_length(std::string_view buffered) {
  if (buffered.size() < kFrameHeader) return std::size_t{0};
  std::uint32_t len = 0;
  for (std::size_t i = 0; i < 4; ++i)
    len |= std::uint32_t{static_cast<std::uint8_t>(buffered[i])} << (8 * i);
  const auto type = static_cast<std::uint8_t>(buffered[4]);
  if (type != kFrameRequest && type != kFrameReply)
    return fail(EPROTO, "bad frame type " + std::to_string(type));
  if (len > kMaxFrame) return fail(EPROTO, "frame of " + std::to_string(len) + " bytes");
  const std::size_t total = kFrameHeader + len;
  return buffered.size() >= total ? total : std::size_t{0};
}

}  // namespace mirrorfs::replicate
