// compare_trees: exact comparison of two directory trees in the style of
// rsync's testsuite/cmptree.py, plus nanosecond mtimes, xattrs and
// (optionally) hole maps. Used by the integration and scenario tests.
//
// Compares, per relative path (raw bytes, never following symlinks): presence,
// file type, permission bits (incl. setuid/setgid/sticky), uid, gid, size,
// content, mtime (ns), symlink target, device numbers, hard-link groups
// (which paths share an inode, within each tree) and xattrs (name + value).
// Returns one human-readable line per difference; empty means equal.
#pragma once

#include <string>
#include <vector>

namespace mirrorfs::test {

struct CompareOptions {
  bool mode = true;
  bool owner = true;
  bool mtime = true;       // nanosecond mtime of files and symlinks
  bool dir_mtime = true;   // ... and of directories
  bool content = true;
  bool hardlinks = true;
  bool xattrs = true;
  bool holes = false;      // SEEK_DATA/SEEK_HOLE maps must match
  bool root_meta = true;   // compare the two roots' own metadata
  // Relative paths to leave out (with everything below them).
  std::vector<std::string> ignore;
  // xattr names starting with one of these are not compared.
  std::vector<std::string> ignore_xattr_prefixes = {"security.", "system."};
};

[[nodiscard]] std::vector<std::string> compare_trees(const std::string& a, const std::string& b,
                                                     const CompareOptions& opt = {});

// The differences joined into one message (for assertions), "" if none.
[[nodiscard]] std::string join_lines(const std::vector<std::string>& lines, std::size_t max = 50);

}  // namespace mirrorfs::test
