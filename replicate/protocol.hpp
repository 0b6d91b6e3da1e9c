// The sender <-> receiver protocol: what a replicator asks a target to do.
// Framing (see protocol.cpp): every frame is
//   u32 little-endian payload length | u8 frame type | payload
// and a session starts with a Hello exchange carrying kProtocolVersion and
// capability bits. The receiver (agent) treats every frame as untrusted.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fs/api/result.hpp"

namespace mirrorfs::replicate {

inline constexpr std::uint32_t kProtocolVersion = 2;  // 2: Op::List
inline constexpr std::uint32_t kMaxFrame = 64u << 20;  // larger frames are a protocol error

enum class Op : std::uint8_t {
  Hello = 1,   // offset = version, flags = capability bits; reply data = agent identity
  Mkdir,       // path, meta (mode/owner/times applied after create); exists-as-dir is ok
  BeginFile,   // path: stage a temp file next to path; later Write/Truncate go to it
  Write,       // path, offset, data: into the staged temp if one is open, else in place
  Truncate,    // path, offset = new size: staged temp if open, else in place
  CommitFile,  // path: fsync the staged temp and rename it over path
  Signature,   // path: reply data = librsync signature of the target's file (empty if absent)
  Delta,       // path, data = librsync delta chunk; flags & kLast ends it: patch basis+delta
               //   into a temp, fsync, rename over path. ESTALE if the file at path is not
               //   the basis the path's Signature (since the last Barrier) described
  SetMeta,     // path, meta: chmod/chown/utimens/xattrs on path (no symlink following)
  Symlink,     // path, path2 = link text: atomically replaces whatever is at path
  Link,        // path = existing name, path2 = new name (replaces path2 if present)
  Mknod,       // path, meta.mode (type+perm), offset = rdev: fifo, socket, device
  Rename,      // path -> path2, flags = renameat2 flags
  Remove,      // path: unlink a file, or remove a directory tree; absent is ok
  Barrier,     // fsync everything touched since the last Barrier; reply after
  Stat,        // path: reply data = encoded Meta + size + type of what is there
  Checksum,    // path: reply data = 8-byte xxh64 of the content; flags & kChecksumLayout:
               //   of the content followed by the data extents (SEEK_DATA/SEEK_HOLE)
  Punch,       // path, offset, data = 8-byte length (encode_u64): make [offset, offset+length)
               //   a hole (staged temp if open, else in place); the size is kept
  List,        // path = a directory ("" = the root): reply data = encode_listing() of its
               //   entries; flags & kListChecksums adds the xxh64 of each regular file.
               //   E2BIG if the reply would not fit in kMaxFrame (the sender then ships
               //   that directory's subtree in full)
};

inline constexpr std::uint32_t kLast = 1;          // Delta: last chunk
inline constexpr std::uint32_t kListChecksums = 1;  // List: content checksums of regular files
inline constexpr std::uint32_t kChecksumLayout = 1;  // Checksum: hash the hole layout too

// Frame types (the u8 after the length). A request payload starts with its Op.
inline constexpr std::uint8_t kFrameRequest = 1;
inline constexpr std::uint8_t kFrameReply = 2;
inline constexpr std::size_t kFrameHeader = 5;

// Names the receiver stages files under (temp + rename); a tree compare
// should skip them.
inline constexpr std::string_view kTempPrefix = ".mirrorfs.tmp.";

struct Xattr {
  std::string name, value;
  bool operator==(const Xattr&) const = default;
};

struct Meta {
  std::uint32_t mode = 0;  // st_mode: type and permission bits
  std::uint32_t uid = 0, gid = 0;
  std::int64_t mtime_sec = 0;
  std::uint32_t mtime_nsec = 0;
  bool with_owner = true;
  bool with_xattrs = false;  // false: leave the target's xattrs alone
  std::vector<Xattr> xattrs;
  bool operator==(const Meta&) const = default;
};

struct Request {
  Op op = Op::Barrier;
  std::string path;   // relative to the target root; never absolute, never ".."
  std::string path2;  // Rename/Link destination, Symlink text
  std::uint64_t offset = 0;
  std::uint32_t flags = 0;
  Meta meta;
  std::string data;
  bool operator==(const Request&) const = default;
};

struct Reply {
  std::int32_t err = 0;  // 0 or an errno value
  std::string message;   // what failed, for the sender's log
  std::string data;
  bool operator==(const Reply&) const = default;
};

// Encoding. Encoders append one whole frame to out. decode_* parse one
// payload (without the 5-byte header) and return an Error (EPROTO) on any
// malformed input: they never crash, never allocate more than the payload.
void encode_request(const Request& r, std::string& out);
void encode_reply(const Reply& r, std::string& out);
[[nodiscard]] Result<Request> decode_request(std::string_view payload);
[[nodiscard]] Result<Reply> decode_reply(std::string_view payload);

// Encoded sizes, header included: what encode_* would append.
[[nodiscard]] std::size_t request_frame_size(const Request& r) noexcept;
[[nodiscard]] std::size_t reply_frame_size(const Reply& r) noexcept;

// Stat reply data. Receiver semantics: BeginFile/CommitFile/Symlink/Mknod
// apply meta too when meta.mode != 0 (CommitFile: to the temp, before the
// rename, so the file appears complete); Mkdir/SetMeta always apply it.
enum class FileType : std::uint8_t { Regular = 1, Directory, Symlink, Other };
struct StatInfo {
  FileType type = FileType::Regular;
  std::uint64_t size = 0;
  std::uint64_t nlink = 0;
  std::uint64_t rdev = 0;
  Meta meta;            // with_xattrs = true: xattrs holds the full set
  std::string symlink;  // link text for a symlink
  bool operator==(const StatInfo&) const = default;
};
[[nodiscard]] std::string encode_stat(const StatInfo& s);
[[nodiscard]] Result<StatInfo> decode_stat(std::string_view data);

// Checksum reply data: the xxh64 (seed 0) as 8 bytes little-endian.
[[nodiscard]] std::string encode_u64(std::uint64_t v);
[[nodiscard]] Result<std::uint64_t> decode_u64(std::string_view data);

// List reply data: one record per directory entry ("." and ".." left out),
// in readdir order. Names are single components (never empty, "." or "..",
// no '/' or NUL, <= 255 bytes): decode_listing() rejects anything else, so a
// hostile agent cannot make the sender address a path outside the directory.
struct ListEntry {
  std::string name;
  FileType type = FileType::Regular;
  std::uint64_t size = 0;
  std::uint32_t mode = 0, uid = 0, gid = 0;  // mode: st_mode (type and permission bits)
  std::int64_t mtime_sec = 0;
  std::uint32_t mtime_nsec = 0;
  std::uint64_t nlink = 0;
  std::string symlink;          // link text of a symlink
  bool has_checksum = false;    // regular files, when asked for (kListChecksums)
  std::uint64_t checksum = 0;   // xxh64, seed 0, as Op::Checksum computes it
  bool operator==(const ListEntry&) const = default;
};
void encode_list_entry(const ListEntry& e, std::string& out);
[[nodiscard]] std::size_t list_entry_size(const ListEntry& e) noexcept;
[[nodiscard]] std::string encode_listing(const std::vector<ListEntry>& entries);
[[nodiscard]] Result<std::vector<ListEntry>> decode_listing(std::string_view data);

// Frame boundary helper: given buffered bytes, how long the first frame is
// (header included), 0 if more bytes are needed, or an Error if the header is bad.
[[nodiscard]] Result<std::size_t> frame_length(std::string_view buffered);

}  // namespace mirrorfs::replicate
