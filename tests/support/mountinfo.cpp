#include "tests/support/mountinfo.hpp"

#include <fstream>
#include <sstream>

namespace mirrorfs::test {
namespace {

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape(const std::string& s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      const char a = s[i + 1], b = s[i + 2], c = s[i + 3];
      if (a >= '0' && a <= '7' && b >= '0' && b <= '7' && c >= '0' && c <= '7') {
        out.push_back(static_cast<char>((a - '0') * 64 + (b - '0') * 8 + (c - '0')));
        i += 3;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

}  // namespace

std::vector<MountEntry> read_mountinfo() {
  std::vector<MountEntry> out;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::vector<std::string> fields;
    std::string f;
    while (ls >> f) fields.push_back(f);
    // id parent maj:min root mount_point options [optional...] - fstype source superopts
    std::size_t dash = 0;
    for (std::size_t i = 6; i < fields.size(); ++i) {
      if (fields[i] == "-") {
        dash = i;
        break;
      }
    }
    if (dash == 0 || dash + 2 >= fields.size()) continue;
    out.push_back({unescape(fields[4]), fields[dash + 1], unescape(fields[dash + 2])});
  }
  return out;
}

std::string fstype_at(const std::string& mount_point) {
  std::string type;
  for (const MountEntry& m : read_mountinfo()) {
    if (m.mount_point == mount_point) type = m.fstype;  // later lines are on top
  }
  return type;
}

}  // namespace mirrorfs::test
