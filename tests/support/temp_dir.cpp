#include "tests/support/temp_dir.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <vector>

#include "tests/support/mountinfo.hpp"

namespace mirrorfs::test {

TempDir::TempDir(std::string_view prefix) {
  std::string tmpl = "/tmp/" + std::string(prefix) + ".XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) {
    ADD_FAILURE() << "mkdtemp " << tmpl << ": " << std::strerror(errno);
    return;
  }
  path_ = buf.data();
}

TempDir::~TempDir() {
  if (!path_.empty()) remove_tree(path_);
}

std::string TempDir::sub(std::string_view rel) const { return path_ + "/" + std::string(rel); }

std::string TempDir::mkdir(std::string_view rel, unsigned mode) const {
  std::string p = sub(rel);
  if (::mkdir(p.c_str(), 0700) != 0 && errno != EEXIST) {
    ADD_FAILURE() << "mkdir " << p << ": " << std::strerror(errno);
  }
  if (::chmod(p.c_str(), static_cast<mode_t>(mode)) != 0) {
    ADD_FAILURE() << "chmod " << p << ": " << std::strerror(errno);
  }
  return p;
}

bool has_mount_below(const std::string& path) {
  for (const MountEntry& m : read_mountinfo()) {
    if (m.mount_point == path ||
        (m.mount_point.size() > path.size() && m.mount_point.compare(0, path.size(), path) == 0 &&
         m.mount_point[path.size()] == '/')) {
      return true;
    }
  }
  return false;
}

bool remove_tree(const std::string& path) {
  if (has_mount_below(path)) {
    ADD_FAILURE() << "not removing " << path << ": a mount is still below it";
    return false;
  }
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
  if (ec) {
    ADD_FAILURE() << "remove_all " << path << ": " << ec.message();
    return false;
  }
  return true;
}

}  // namespace mirrorfs::test
