// Reconciler: the startup pass that brings one target level with the source
// (issue 4). Run by the Replicator thread before any journal batch; changes
// recorded meanwhile wait in the journal and ship after it, as current state.
//
// It walks the SOURCE directory by directory (through the root fd, *at()
// calls, never following symlinks) and asks the target for listings in
// bulk: each step() sends up to `dirs_per_exchange` List requests in ONE
// Transport::exchange (never a round trip per file), compares, and returns
// the marks to ship, which the caller hands to the Shipper as Batches
// (parents before children: a directory's mark is returned in an earlier
// step than its entries' marks).
//
// Per entry (source vs target listing):
//   missing on the target          exist (+meta); a directory's entries are then
//                                  marked from the source alone (no List for it)
//   type differs                   exist+replace (+meta)
//   regular: size, mtime (ns) or nlink differ      exist+meta (delta if large)
//   regular, Checksum mode: same size+mtime, other xxh64   exist+meta
//   suspect (crash recovery: a persisted pending path, or ctime at or after
//     suspect_since): metadata (with xattrs) sent again; a regular file is
//     compared by content and hole layout (Op::Checksum with kChecksumLayout,
//     one extra exchange per step for all of them)
//   mode / owner / mtime of the rest differ        meta
//   symlink text differs           exist
//   only on the target             exist+replace (a Remove), unless
//                                  delete_missing is off; stale temps
//                                  (kTempPrefix) are removed always
// The root's own metadata is marked once. A List that fails (E2BIG: the
// listing does not fit in a frame, or the directory vanished) makes the
// directory a full re-ship: exist+replace (the root: entries from the
// source alone) and its entries marked from the source.
//
// Single-threaded (the replicator thread). An Error from step() means the
// session broke: the caller reconnects and starts a new Reconciler.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "fs/api/fd.hpp"
#include "fs/api/result.hpp"
#include "replicate/journal.hpp"
#include "replicate/protocol.hpp"
#include "replicate/transport.hpp"

namespace mirrorfs::replicate {

enum class SyncMode { None, Quick, Checksum };
[[nodiscard]] const char* sync_mode_name(SyncMode m) noexcept;

struct ReconcileOptions {
  SyncMode mode = SyncMode::Quick;  // Quick or Checksum
  bool delete_missing = true;
  std::size_t dirs_per_exchange = 256;
  // Crash recovery: these paths, and entries whose ctime is at or after
  // suspect_since_ns (0: none), get their metadata sent again and, for
  // regular files, a content comparison.
  std::set<std::string> suspects;
  std::int64_t suspect_since_ns = 0;
  // Non-empty: compare only these directories' entries (no descent into
  // directories both sides have; new ones are still sent whole). Crash
  // recovery with initial_sync=none uses it to find deletions made just
  // before the crash in the directories that changed.
  std::set<std::string> scope;
};

struct ReconcileCounters {
  std::uint64_t scanned = 0;        // source entries looked at
  std::uint64_t to_send = 0;        // marks produced (entries to ship)
  std::uint64_t bytes_to_send = 0;  // source size of regular files to ship
  std::uint64_t checksums = 0;      // content comparisons made
  std::uint64_t list_errors = 0;    // List requests that failed (full re-ship)
};

class Reconciler {
 public:
  Reconciler(const Fd& source_root, ReconcileOptions opt);

  // Lists the next directories and returns the marks to ship (possibly none).
  [[nodiscard]] Result<Batch> step(Transport& t);
  [[nodiscard]] bool done() const noexcept { return root_marked_ && dirs_.empty(); }
  [[nodiscard]] const ReconcileCounters& counters() const noexcept { return counters_; }

 private:
  struct Dir {
    std::string path;
    bool on_target = true;  // false: mark every entry from the source alone
  };
  struct Check {  // a regular file to compare by content
    std::string path;
    std::uint64_t size = 0;
    bool meta_differs = false;
  };

  void source_only(const std::string& dir, const std::vector<ListEntry>& src, Batch& out);
  void compare(const std::string& dir, const std::vector<ListEntry>& src,
               const std::vector<ListEntry>& dst, Batch& out, std::vector<Check>& checks);
  void compare_entry(const std::string& path, const ListEntry& s, const ListEntry& d, Batch& out,
                     std::vector<Check>& checks);
  void add_mark(Batch& out, std::string path, bool exist, bool meta, bool replace, std::uint64_t bytes);
  [[nodiscard]] bool suspect(const std::string& path) const;
  [[nodiscard]] Result<std::uint64_t> source_checksum(const std::string& path, bool layout) const;
  [[nodiscard]] Result<std::vector<ListEntry>> source_listing(const std::string& dir) const;
  [[nodiscard]] Result<void> check_content(Transport& t, const std::vector<Check>& checks, Batch& out);

  const Fd& root_;
  ReconcileOptions opt_;
  std::deque<Dir> dirs_;
  bool root_marked_ = false;
  ReconcileCounters counters_;
};

[[nodiscard]] std::string join_path(const std::string& dir, const std::string& name);

// Entries under the source root (the root itself left out) whose ctime is
// at or after since_ns, for crash recovery without a full reconcile.
void for_each_recent(const Fd& root, std::int64_t since_ns,
                     const std::function<void(const std::string&, bool is_dir)>& f);

}  // namespace mirrorfs::replicate
