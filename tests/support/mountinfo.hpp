// Parsing /proc/self/mountinfo (proc(5)): the readiness signal for mounts.
#pragma once

#include <string>
#include <vector>

namespace mirrorfs::test {

struct MountEntry {
  std::string mount_point;  // unescaped (\040 -> ' ')
  std::string fstype;       // e.g. "fuse.mirrorfs"
  std::string source;
};

[[nodiscard]] std::vector<MountEntry> read_mountinfo();

// fstype of the topmost mount exactly at `mount_point`, "" if none.
[[nodiscard]] std::string fstype_at(const std::string& mount_point);

}  // namespace mirrorfs::test
