// Shipper: turns one journal Batch into protocol Requests built from the
// CURRENT state of the backing directory, sends them, and says which paths
// must be retried. Used by one Replicator thread only (not thread-safe).
//
// Every source access is an *at() call relative to the source root fd
// (never through the mount), without following symlinks. A path that
// vanishes while it is read (ENOENT: a concurrent unlink or rename) is
// treated as missing; the journal holds a later mark for whatever replaced
// or moved it (see journal.hpp, "In flight"), so nothing is lost.
//
// Per regular file (st_size from the opened fd):
//   ranges only, size >= in_place_min : Write each range (clamped), Truncate
//   otherwise, size >= in_place_min   : Signature round trip, then Delta
//                                       chunks (kLast on the last), or a
//                                       whole copy if the target has none
//   otherwise                         : BeginFile, Write chunks (holes
//                                       skipped), Truncate, CommitFile
// then SetMeta (mode, owner, ns mtime, user.* xattrs; trusted./security. as
// root). Hard links (st_nlink > 1): a later name of an inode already sent in
// this session is sent as Link; after a whole copy the other known names are
// linked to the new copy again.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "fs/api/fd.hpp"
#include "fs/api/result.hpp"
#include "replicate/journal.hpp"
#include "replicate/protocol.hpp"
#include "replicate/transport.hpp"

namespace spdlog {
class logger;
}

namespace mirrorfs::replicate {

struct ShipOptions {
  bool delete_missing = true;
  std::uint64_t in_place_min = std::uint64_t{1} << 20;  // "large file"
  std::size_t chunk = std::size_t{1} << 20;              // data per Write/Delta frame
  std::size_t flush_bytes = std::size_t{32} << 20;       // exchange() when this much is queued
};

struct ShipReport {
  struct Retry {
    std::string path;
    bool subtree = false;
    int err = 0;
    std::string message;
  };
  std::vector<Retry> retries;  // per-request failures: Journal::retry() these
  std::uint64_t files = 0;     // regular files sent (whole, delta or ranges)
};

class Shipper {
 public:
  Shipper(const Fd& source_root, ShipOptions opt, std::shared_ptr<spdlog::logger> log);

  // Ships a batch, ending it with a Barrier. An Error means the session
  // broke: the caller requeues the whole batch and reconnects.
  [[nodiscard]] Result<ShipReport> ship(Transport& t, const Batch& b);
  // Forget what the session knew (hard-link names): call after reconnecting.
  void reset() { names_.clear(); }

 private:
  struct Item;  // one path to ship (an entry, or a file found by a subtree walk)
  struct Pending;

  void expand(const Entry& e, std::vector<Item>& out) const;
  void walk(const std::string& dir, std::vector<Item>& out) const;
  [[nodiscard]] Result<void> signatures(Transport& t, std::vector<Item>& items, ShipReport& rep);
  void build(const Item& it, Pending& p, ShipReport& rep);
  void build_op(const Entry& e, Pending& p);
  void build_file(const Item& it, const Fd& fd, const struct stat& st, Pending& p, ShipReport& rep);
  void whole_copy(const std::string& path, const Fd& fd, const struct stat& st, Pending& p);
  void relink(const std::string& path, const struct stat& st, Pending& p);
  void refresh_dirs(Pending& p);
  [[nodiscard]] Meta meta_of(const Fd* fd, const struct stat& st) const;
  [[nodiscard]] Result<void> flush(Transport& t, Pending& p, ShipReport& rep);
  void remap_names(const std::string& from, const std::string& to, bool exchange);

  const Fd& root_;
  ShipOptions opt_;
  std::shared_ptr<spdlog::logger> log_;
  // Hard links: (dev, ino) -> target names this session has given the inode.
  std::map<std::pair<dev_t, ino_t>, std::set<std::string>> names_;
  std::set<std::pair<dev_t, ino_t>> sent_this_batch_;
};

}  // namespace mirrorfs::replicate
