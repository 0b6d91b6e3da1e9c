// What `mirrorfs status` prints: the daemon formats it from each
// Replicator's status, as text for people or JSON for scripts.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "replicate/replicator.hpp"

namespace mirrorfs::replicate {

struct MountSummary {
  std::string source, mountpoint;
  std::chrono::system_clock::time_point started{};
};

[[nodiscard]] std::string format_status_text(const MountSummary& m,
                                             const std::vector<ReplicatorStatus>& targets);
[[nodiscard]] std::string format_status_json(const MountSummary& m,
                                             const std::vector<ReplicatorStatus>& targets);
// A JSON string literal of raw bytes; bytes that are not printable ASCII
// become \u00XX so the output stays valid JSON whatever the path holds.
[[nodiscard]] std::string json_string(std::string_view raw);

}  // namespace mirrorfs::replicate
