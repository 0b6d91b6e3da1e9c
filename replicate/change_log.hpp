// ChangeLog: a ChangeSink that appends every change to a file, then passes it
// on. Enabled with -o change_log=PATH; tests use it to see exactly what the
// FUSE layer reported. One record is six NUL-terminated fields:
//   kind \0 path \0 to_path \0 offset \0 length \0 flags \0
// (kind is Data|Meta|Created|Removed|Renamed|Linked; numbers in decimal).
// Each record is written with one write(2) before record() returns.
#pragma once

#include <memory>
#include <string>

#include "fs/api/change_sink.hpp"
#include "fs/api/fd.hpp"
#include "fs/api/result.hpp"

namespace mirrorfs::replicate {

class ChangeLog final : public ChangeSink {
 public:
  [[nodiscard]] static Result<std::unique_ptr<ChangeLog>> open(const std::string& path,
                                                                ChangeSink* next);
  void record(const Change& c) noexcept override;

 private:
  ChangeLog(Fd fd, ChangeSink* next) : fd_(std::move(fd)), next_(next) {}
  Fd fd_;
  ChangeSink* next_;
};

[[nodiscard]] const char* kind_name(ChangeKind k) noexcept;

}  // namespace mirrorfs::replicate
