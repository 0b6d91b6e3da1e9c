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
// root). Ranges that lie in a hole of the source are sent as Punch, so holes
// stay holes. Signatures are asked for only after every request before them
// in the batch was applied (the basis must be what those made it); a Delta
// whose basis changed anyway fails ESTALE and the path is shipped whole next.
// Hard links (st_nlink > 1): a later name of an inode whose content was sent
// in this batch is sent as Link from that name; at the end of the batch the
// other names this session gave the inode are linked to the new copy again.
// A name whose Link failed is shipped as a full copy next time (never linked
// again from a name the target may lack), and a path failing repeatedly has
// its parent re-shipped too, so retries always make progress.
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
  void reset() {
    names_.clear();
    no_link_.clear();
  }

 private:
  struct Item;  // one path to ship (an entry, or a file found by a subtree walk)
  struct Pending;

  void expand(const Entry& e, std::vector<Item>& out) const;
  void walk(const std::string& dir, std::vector<Item>& out) const;
  [[nodiscard]] bool wants_signature(const Item& it) const;
  [[nodiscard]] Result<void> signatures(Transport& t, std::vector<Item>& items, std::size_t from,
                                        Pending& p, ShipReport& rep);
  void build(const Item& it, Pending& p, ShipReport& rep);
  void build_op(const Entry& e, Pending& p);
  void build_file(const Item& it, const Fd& fd, const struct stat& st, Pending& p, ShipReport& rep);
  [[nodiscard]] bool link_to_copy(const Item& it, const struct stat& st, Pending& p);
  void ship_ranges(const Item& it, const Fd& fd, std::uint64_t size, Pending& p) const;
  void ship_delta(const Item& it, const Fd& fd, const struct stat& st, Pending& p);
  void whole_copy(const std::string& path, const Fd& fd, const struct stat& st, Pending& p);
  void relink_all(Pending& p);
  void refresh_dirs(Pending& p);
  void add_remove(const std::string& path, Pending& p);
  [[nodiscard]] Meta meta_of(const Fd* fd, const struct stat& st) const;
  [[nodiscard]] Result<void> flush(Transport& t, Pending& p, ShipReport& rep);
  void on_failure(const Request& rq, const Reply& rp, std::size_t item, Pending& p, ShipReport& rep);
  void add_retry(ShipReport& rep, const std::string& path, bool subtree, const Reply& rp);
  void forget_name(const std::string& path);
  void remap_names(const std::string& from, const std::string& to, bool exchange);

  const Fd& root_;
  ShipOptions opt_;
  std::shared_ptr<spdlog::logger> log_;
  // Hard links: (dev, ino) -> target names this session has given the inode.
  std::map<std::pair<dev_t, ino_t>, std::set<std::string>> names_;
  // This batch: (dev, ino) -> the target name its content was sent to.
  std::map<std::pair<dev_t, ino_t>, std::string> batch_copy_;
  std::set<std::string> no_link_;          // a Link to it failed: send it whole next time
  std::map<std::string, int> failures_;    // retries per path since the last clean batch
};

}  // namespace mirrorfs::replicate
