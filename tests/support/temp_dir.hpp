// TempDir: a fresh directory under /tmp (mkdtemp), removed recursively by its
// destructor. Refuses to remove a tree that still has a mount inside it (that
// would walk into the mount): it fails the test instead.
#pragma once

#include <string>
#include <string_view>

namespace mirrorfs::test {

class TempDir {
 public:
  explicit TempDir(std::string_view prefix = "mirrorfs-test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  [[nodiscard]] const std::string& path() const noexcept { return path_; }
  // path() + "/" + rel
  [[nodiscard]] std::string sub(std::string_view rel) const;
  // Creates path()/rel as a directory with `mode` (exactly, umask ignored).
  std::string mkdir(std::string_view rel, unsigned mode = 0755) const;

 private:
  std::string path_;
};

// Removes `path` and everything below it without crossing into other mounts.
// Returns false (and fails the test) if something could not be removed.
bool remove_tree(const std::string& path);

// True if some mount in /proc/self/mountinfo lies at or below `path`.
bool has_mount_below(const std::string& path);

}  // namespace mirrorfs::test
