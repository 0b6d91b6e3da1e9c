// ScanBook: the scanner's self-filter bookkeeping, pure (no I/O, no threads
// of its own), so it is unit-tested without a mount.
//
// What it knows:
//  * per backing inode, the last few ctimes that are "accounted for": every
//    change up to that state has been journaled (the startup walk's stat,
//    every stamped change the mount reported, every bypass change the
//    scanner shipped). ctime moves on every change of an inode, and since
//    Linux 6.6 (multigrain timestamps on ext4/tmpfs/xfs/btrfs) a change
//    right after a stat gets a distinct fine-grained ctime, so "ctime seen
//    and not accounted" means "changed behind the mount";
//  * suspects: (inode, ctime) pairs seen but not accounted yet. A FUSE
//    worker may have made the change and not reported it yet (its record()
//    runs microseconds after the syscall), so a suspect waits `grace`; a
//    stamped record whose after-ctime matches resolves it. What is still
//    unresolved at its deadline is a bypass change and gets shipped;
//  * the mount's own namespace changes (create, remove, rename, link) by
//    path, so the inotify events they cause are consumed, not re-shipped.
//    Each is forgotten after `own_ttl` if no event ever consumed it.
// Thread safety: every method is thread-safe (one mutex, a leaf lock, held
// for in-memory work only). on_record() is called on FUSE worker threads.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "fs/api/change_sink.hpp"

namespace mirrorfs::replicate {

using ScanClock = std::chrono::steady_clock;

struct ScanBookLimits {
  std::chrono::milliseconds grace{50};     // how long a suspect waits for its record
  std::chrono::milliseconds own_ttl{30'000};  // how long an own namespace change waits for its event
  std::size_t max_own = 1 << 20;           // own namespace changes kept (oldest dropped)
};

struct Suspect {
  std::uint64_t ino = 0;
  std::int64_t ctime = 0;
  std::string path;
  bool content = true;  // a regular file: ship as Content, else as Meta
  bool unsure = false;  // a later ctime of the inode is accounted for (a race more likely than a bypass)
  std::uint64_t moves_seen = 0;  // path is current as of this own rename (ScanBook::translate)
  ScanClock::time_point deadline{};
};

enum class OwnKind : char { Create = 'c', Remove = 'r', Move = 'm' };

class ScanBook {
 public:
  explicit ScanBook(ScanBookLimits limits = {}) : limits_(limits) {}

  // A change the mount made (FUSE worker thread). Notes its namespace part
  // and its stamps; a pre-ctime that is not accounted for becomes a suspect
  // (a bypass change may have landed just before the op).
  void on_record(const Change& c, ScanClock::time_point now);

  // True if ctime is an accounted state of ino.
  [[nodiscard]] bool known(std::uint64_t ino, std::int64_t ctime) const;
  // True if ino has any accounted state (the mount or the scanner saw it).
  [[nodiscard]] bool known_inode(std::uint64_t ino) const;
  // Marks ctime accounted (startup walk, or the scanner shipped it); resolves
  // a suspect with the same state.
  void learn(std::uint64_t ino, std::int64_t ctime);
  // Registers (ino, ctime) seen by the scanner as a suspect unless accounted
  // for. Returns false if it was known (an own change: nothing to do).
  bool suspect(std::uint64_t ino, std::int64_t ctime, std::string path, bool content,
               ScanClock::time_point now, std::uint64_t moves_seen = 0);
  // Suspects past their deadline and still unresolved: ship them. They are
  // learned (accounted) as they are returned.
  [[nodiscard]] std::vector<Suspect> take_expired(ScanClock::time_point now);
  // Earliest suspect deadline, or time_point::max() if none.
  [[nodiscard]] ScanClock::time_point next_deadline() const;

  // Consumes one matching own namespace change; true if there was one.
  // For Move, `to` is the destination.
  bool consume_own(OwnKind kind, const std::string& path, const std::string& to = {});
  // Consumes an own rename away from `from` whose destination event never
  // came (it went into a directory not watched yet); true if there was one.
  bool consume_own_move_from(const std::string& from);
  // Drops own namespace changes older than own_ttl.
  void expire_own(ScanClock::time_point now);
  // Forgets every own namespace change (after lost events: none may match).
  void forget_own();
  // The scanner sees events in the kernel's order, the journal gets the
  // mount's own renames at once: a path as the scanner's tree has it, moved
  // through the own renames journaled whose events it has not handled yet,
  // is the path the journal (and the backing directory) has now.
  // *last gets the newest own rename's number: the result is current as of it.
  [[nodiscard]] std::string translate(const std::string& path, std::uint64_t* last = nullptr) const;
  // A path current as of own rename `since`, moved through the own renames
  // recorded after it (whether their events were handled or not).
  [[nodiscard]] std::string translate_since(const std::string& path, std::uint64_t since) const;

  [[nodiscard]] std::size_t inode_count() const;
  [[nodiscard]] std::size_t own_count() const;

 private:
  struct Known {
    std::array<std::int64_t, 4> recent{};  // ring of accounted ctimes
    std::uint8_t next = 0;
    // Recent own ops as (ctime before, ctime after]: concurrent ops on one
    // file stat each other's states, so a state inside one is the mount's.
    std::array<std::pair<std::int64_t, std::int64_t>, 4> spans{};
    std::uint8_t next_span = 0;
    [[nodiscard]] bool in_span(std::int64_t t) const;
    bool relaxed = false;  // a name was unlinked: the next unstamped ctime change is ours
    std::int64_t max = 0;
    [[nodiscard]] bool has(std::int64_t t) const;
    void add(std::int64_t t);
  };
  static std::string own_key(OwnKind kind, const std::string& path, const std::string& to);
  void add_own(std::string key, ScanClock::time_point now);  // requires mu_
  void resolve(std::uint64_t ino, std::int64_t ctime);        // requires mu_

  ScanBookLimits limits_;
  // Lock order: leaf lock; nothing is called while holding it.
  mutable std::mutex mu_;
  std::unordered_map<std::uint64_t, Known> inodes_;
  std::vector<Suspect> suspects_;
  std::unordered_map<std::string, std::deque<ScanClock::time_point>> own_;  // key -> deadlines
  std::deque<std::pair<ScanClock::time_point, std::string>> own_fifo_;
  struct OwnMove {
    std::string from, to;
    bool exchange = false;
    ScanClock::time_point deadline{};
    std::uint64_t seq = 0;
    bool seen = false;  // its events were handled: kept for translate_since() only
  };
  void prune_moves();  // requires mu_
  std::uint64_t move_seq_ = 0;
  std::vector<OwnMove> moves_;  // own renames not yet seen as events, in record order
};

}  // namespace mirrorfs::replicate
