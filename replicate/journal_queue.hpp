// TargetQueue: the per-target half of the Journal (see journal.hpp for the
// semantics). Not thread-safe: the Journal calls it under its mutex only.
// Pure in-memory work; may throw std::bad_alloc, which the Journal catches.
#pragma once

#include <map>
#include <string>
#include <variant>
#include <vector>

#include "replicate/journal.hpp"

namespace mirrorfs::replicate {

class TargetQueue {
 public:
  TargetQueue(std::string name, const JournalLimits& limits) : name_(std::move(name)), limits_(limits) {}

  void apply(const Change& c, std::uint64_t seq, Clock::time_point now);
  [[nodiscard]] std::vector<Entry> take(std::size_t max);
  void complete();
  void requeue(std::vector<Entry>&& entries);
  void retry(const std::string& path, bool subtree, std::uint64_t seq, Clock::time_point now);
  // Falls back to "rescan everything" without allocating (after bad_alloc).
  void set_overflow(std::uint64_t seq) noexcept;

  // In-flight marks at or under dir that update the target's object in
  // place (ranges or meta, no exist).
  [[nodiscard]] std::vector<std::string> inflight_in_place(const std::string& dir) const;
  [[nodiscard]] bool has_work() const noexcept { return !order_.empty() || overflow_; }
  [[nodiscard]] bool idle() const noexcept { return !has_work() && inflight_.empty() && inflight_ops_.empty(); }
  [[nodiscard]] QueueStats stats(Clock::time_point now) const;
  // Appends pending and in-flight paths to out, up to max in all; false if
  // some were left out (or the queue overflowed). See Journal::pending_paths.
  bool collect_paths(std::size_t max, std::vector<std::string>& out) const;
  [[nodiscard]] const std::string& name() const noexcept { return name_; }

 private:
  using Marks = std::map<std::string, Entry>;
  using Slot = std::variant<std::string, Entry>;  // a mark's path, or an op

  void on_data(const Change& c, std::uint64_t seq, Clock::time_point now);
  void on_meta(const Change& c, std::uint64_t seq, Clock::time_point now);
  void on_content(const Change& c, std::uint64_t seq, Clock::time_point now);
  void on_created(const Change& c, std::uint64_t seq, Clock::time_point now);
  void on_removed(const Change& c, std::uint64_t seq, Clock::time_point now);
  void on_renamed(const Change& c, std::uint64_t seq, Clock::time_point now);
  void on_exchange(const Change& c, std::uint64_t seq, Clock::time_point now);
  void on_linked(const Change& c, std::uint64_t seq, Clock::time_point now);
  void note_rename(const std::string& from, const std::string& to, bool exchange);
  void degrade_rename(const Change& c, std::uint64_t seq, Clock::time_point now);

  Entry& mark(const std::string& path, std::uint64_t seq, Clock::time_point now);
  Entry* covering_subtree(const std::string& path);
  [[nodiscard]] bool has_exist_at(const std::string& path) const;
  [[nodiscard]] bool inflight_covers(const std::string& path) const;
  void place_last(Entry& m);
  void push_op(Entry op);
  std::vector<Entry> extract_under(const std::string& dir);
  bool drop_under(const std::string& dir);
  void insert_moved(std::vector<Entry>&& moved, const std::string& from, const std::string& to);
  void copy_inflight(const std::string& from, const std::string& to, std::uint64_t seq);
  void merge_into_marks(Entry&& e, bool keep_pos);
  void add_range(Entry& m, std::uint64_t off, std::uint64_t len) const;
  void enforce_limit(std::uint64_t seq, Clock::time_point now);
  void collapse_ops();
  void degrade_op(Entry&& op, bool keep_pos);
  void settle(std::vector<std::string> dirty);
  bool collapse_busiest_dir(std::uint64_t seq, Clock::time_point now);

  std::string name_;
  JournalLimits limits_;
  Marks marks_;                          // pending marks by path
  std::map<std::uint64_t, Slot> order_;  // pending entries by position
  Marks inflight_;                       // marks of the batch being shipped
  std::vector<Entry> inflight_ops_;     // ops of the batch being shipped, in order
  struct FlightRename {
    std::string from, to;
    bool exchange = false;
  };
  std::vector<FlightRename> flight_renames_;  // recorded while a batch is in flight
  std::size_t ops_ = 0;                  // pending ops in order_
  std::uint64_t next_pos_ = 1;
  std::uint64_t inflight_first_seq_ = 0;
  Clock::time_point inflight_oldest_{};
  std::uint64_t coarsenings_ = 0;
  bool overflow_ = false;  // bad_alloc seen: ship a root rescan
  std::uint64_t overflow_seq_ = 0;
};

// Hard-link groups of source paths, as the journal saw them made (Linked)
// and moved (Renamed); a path leaves its group when it is removed, replaced
// or created anew, and a group of one is forgotten. The journal widens a
// Data/Meta on one name to every other name of its group. Links that existed
// before the journal started are not known here. Not thread-safe (journal
// mutex); may throw std::bad_alloc.
class LinkIndex {
 public:
  void on_change(const Change& c);
  // The other names of path's group; empty if path is not a known link.
  [[nodiscard]] std::vector<std::string> others(const std::string& path) const;
  [[nodiscard]] std::size_t size() const noexcept { return group_of_.size(); }

 private:
  void drop_under(const std::string& dir);
  void remap(const std::string& from, const std::string& to, std::map<std::string, std::uint64_t>& out);

  std::map<std::string, std::uint64_t> group_of_;             // path -> group
  std::map<std::uint64_t, std::vector<std::string>> members_;  // group -> paths
  std::uint64_t next_group_ = 1;
};

// Path helpers, exposed for tests.
[[nodiscard]] bool path_under(std::string_view p, std::string_view dir) noexcept;
[[nodiscard]] std::string path_remap(std::string_view p, std::string_view from, std::string_view to);
void merge_entry(Entry& dst, Entry&& src, std::size_t max_ranges);
void add_range_to(Entry& m, std::uint64_t off, std::uint64_t len, std::size_t max_ranges);

}  // namespace mirrorfs::replicate
