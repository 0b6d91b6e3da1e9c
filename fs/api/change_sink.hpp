// The one interface between the FUSE layer and replication: "this path
// changed: these bytes / its metadata / its existence / renamed from there".
// fs/ owns it; replicate::Journal implements it; main.cpp wires them.
#pragma once

#include <cstdint>
#include <limits>
#include <string>

namespace mirrorfs {

enum class ChangeKind : std::uint8_t {
  Data,     // bytes [offset, offset+length) changed; length kToEnd = through EOF (truncate)
  Meta,     // mode, owner, times or xattrs changed
  Created,  // a new entry appeared at path (file, dir, symlink, node)
  Removed,  // the entry at path is gone (unlink, rmdir)
  Renamed,  // path moved to to_path (flags: RENAME_EXCHANGE swaps the two)
  Linked,   // a hard link to_path was made to the existing path
  Content,  // contents (and maybe metadata) changed, byte ranges unknown (a write that
            // bypassed the mount, seen by the scanner): ship it whole / as a delta
};

// What the FUSE layer saw of the object an operation changed, for the
// scanner's self-filter (replicate/scanner.hpp): its backing inode number and
// its ctime (ns since the epoch) just before and just after the backing
// syscall. 0 = not known (the op has no single object, or stat failed).
struct Stamp {
  std::uint64_t ino = 0;
  std::int64_t ctime_before = 0;  // 0 for a new entry
  std::int64_t ctime_after = 0;
};

struct Change {
  static constexpr std::uint64_t kToEnd = std::numeric_limits<std::uint64_t>::max();

  ChangeKind kind;
  std::string path;       // relative to the source root, raw bytes, no leading '/'; "" is the root
  std::string to_path{};  // Renamed / Linked only
  std::uint64_t offset = 0;
  std::uint64_t length = 0;  // Data only
  std::uint32_t flags = 0;   // Renamed only: renameat2 flags
  Stamp stamp{};             // filled by fs/ for the mount's own changes
};

// Contract: called on FUSE worker threads after the backing syscall
// succeeded and BEFORE the reply, so the journal order matches what callers
// observed. Thread-safe; must not block on I/O, must not throw, and must
// never drop a change (coarsen instead).
class ChangeSink {
 public:
  virtual ~ChangeSink() = default;
  virtual void record(const Change& c) noexcept = 0;
};

// A sink that discards everything: for a mount with no target configured.
class NullSink final : public ChangeSink {
 public:
  void record(const Change&) noexcept override {}
};

}  // namespace mirrorfs
