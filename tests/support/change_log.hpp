// Reader for the daemon's `-o change_log=PATH` file: records of six
// NUL-terminated fields (kind, path, to_path, offset, length, flags), appended
// and flushed before each FUSE reply.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace mirrorfs::test {

struct ChangeRecord {
  static constexpr std::uint64_t kToEnd = std::numeric_limits<std::uint64_t>::max();
  std::string kind;  // Data|Meta|Created|Removed|Renamed|Linked
  std::string path;
  std::string to_path;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  std::uint32_t flags = 0;
  bool operator==(const ChangeRecord&) const = default;
};

[[nodiscard]] std::string to_string(const ChangeRecord& r);

class ChangeLogReader {
 public:
  explicit ChangeLogReader(std::string path) : path_(std::move(path)) {}
  // Complete records appended since the previous call. A malformed record
  // is returned with kind "<malformed: ...>".
  std::vector<ChangeRecord> take_new();
  [[nodiscard]] const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::size_t consumed_ = 0;
};

}  // namespace mirrorfs::test
