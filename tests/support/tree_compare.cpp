#include "tests/support/tree_compare.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <sstream>
#include <utility>

#include "fs/api/fd.hpp"
#include "fs/api/result.hpp"

namespace mirrorfs::test {
namespace {

struct Entry {
  struct stat st {};
  std::string link_target;
  std::map<std::string, std::string> xattrs;
  std::string link_leader;  // first path (walk order) sharing this inode; "" if nlink == 1
  std::string error;        // what could not be read
};

using Tree = std::map<std::string, Entry>;

std::string join(const std::string& root, const std::string& rel) {
  return rel.empty() ? root : root + "/" + rel;
}

bool ignored(const std::string& rel, const CompareOptions& opt) {
  for (const std::string& ig : opt.ignore) {
    if (rel == ig || (rel.size() > ig.size() && rel.compare(0, ig.size(), ig) == 0 &&
                      rel[ig.size()] == '/')) {
      return true;
    }
  }
  return false;
}

void read_xattrs(const std::string& path, const CompareOptions& opt, Entry& e) {
  ssize_t n = ::llistxattr(path.c_str(), nullptr, 0);
  if (n < 0) {
    if (errno != ENOTSUP) e.error += std::string(" llistxattr: ") + std::strerror(errno);
    return;
  }
  std::string names(static_cast<std::size_t>(n), '\0');
  n = ::llistxattr(path.c_str(), names.data(), names.size());
  if (n < 0) {
    e.error += std::string(" llistxattr: ") + std::strerror(errno);
    return;
  }
  names.resize(static_cast<std::size_t>(n));
  for (std::size_t pos = 0; pos < names.size();) {
    const std::string name(names.c_str() + pos);
    pos += name.size() + 1;
    bool skip = false;
    for (const std::string& p : opt.ignore_xattr_prefixes) skip |= name.rfind(p, 0) == 0;
    if (skip || name.empty()) continue;
    ssize_t vn = ::lgetxattr(path.c_str(), name.c_str(), nullptr, 0);
    std::string value(vn > 0 ? static_cast<std::size_t>(vn) : 0, '\0');
    if (vn > 0) vn = ::lgetxattr(path.c_str(), name.c_str(), value.data(), value.size());
    if (vn < 0) {
      e.error += " lgetxattr " + name + ": " + std::strerror(errno);
      continue;
    }
    value.resize(static_cast<std::size_t>(vn));
    e.xattrs[name] = value;
  }
}

void walk(const std::string& root, const std::string& rel, const CompareOptions& opt, Tree& tree,
          std::map<std::pair<dev_t, ino_t>, std::string>& inodes) {
  const std::string path = join(root, rel);
  Entry e;
  if (::lstat(path.c_str(), &e.st) != 0) {
    e.error = std::string("lstat: ") + std::strerror(errno);
    tree[rel] = std::move(e);
    return;
  }
  if (S_ISLNK(e.st.st_mode)) {
    std::string buf(static_cast<std::size_t>(e.st.st_size) + 256, '\0');
    const ssize_t n = ::readlink(path.c_str(), buf.data(), buf.size());
    if (n >= 0) {
      buf.resize(static_cast<std::size_t>(n));
      e.link_target = buf;
    } else {
      e.error = std::string("readlink: ") + std::strerror(errno);
    }
  }
  if (opt.xattrs) read_xattrs(path, opt, e);
  if (!S_ISDIR(e.st.st_mode) && e.st.st_nlink > 1) {
    auto [it, inserted] = inodes.try_emplace({e.st.st_dev, e.st.st_ino}, rel);
    e.link_leader = it->second;
  }
  const bool is_dir = S_ISDIR(e.st.st_mode);
  tree[rel] = std::move(e);
  if (!is_dir) return;

  DIR* d = ::opendir(path.c_str());
  if (d == nullptr) {
    tree[rel].error += std::string(" opendir: ") + std::strerror(errno);
    return;
  }
  std::vector<std::string> names;
  errno = 0;
  while (const dirent* de = ::readdir(d)) {
    const std::string name = de->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    const std::string child = rel.empty() ? name : rel + "/" + name;
    if (!ignored(child, opt)) walk(root, child, opt, tree, inodes);
  }
}

const char* type_name(mode_t m) {
  switch (m & S_IFMT) {
    case S_IFREG: return "file";
    case S_IFDIR: return "dir";
    case S_IFLNK: return "symlink";
    case S_IFIFO: return "fifo";
    case S_IFSOCK: return "socket";
    case S_IFCHR: return "chardev";
    case S_IFBLK: return "blockdev";
    default: return "unknown";
  }
}

std::string ns_time(const timespec& t) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%lld.%09ld", static_cast<long long>(t.tv_sec), t.tv_nsec);
  return buf;
}

// First differing offset of two regular files, or "" if equal.
std::string compare_content(const std::string& pa, const std::string& pb) {
  Fd a(::open(pa.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  Fd b(::open(pb.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!a.valid() || !b.valid()) return std::string("cannot open: ") + std::strerror(errno);
  std::vector<char> ba(1 << 16), bb(1 << 16);
  std::uint64_t off = 0;
  for (;;) {
    const ssize_t na = ::pread(a.get(), ba.data(), ba.size(), static_cast<off_t>(off));
    const ssize_t nb = ::pread(b.get(), bb.data(), na > 0 ? static_cast<std::size_t>(na) : bb.size(),
                               static_cast<off_t>(off));
    if (na < 0 || nb < 0) return std::string("read error: ") + std::strerror(errno);
    if (na != nb) return "length differs at offset " + std::to_string(off);
    if (na == 0) return "";
    if (std::memcmp(ba.data(), bb.data(), static_cast<std::size_t>(na)) != 0) {
      std::size_t i = 0;
      while (ba[i] == bb[i]) ++i;
      return "content differs at offset " + std::to_string(off + i);
    }
    off += static_cast<std::uint64_t>(na);
  }
}

std::string hole_map(const std::string& p) {
  Fd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd.valid()) return "?";
  std::ostringstream s;
  off_t pos = 0;
  for (;;) {
    const off_t data = ::lseek(fd.get(), pos, SEEK_DATA);
    if (data < 0) break;
    const off_t hole = ::lseek(fd.get(), data, SEEK_HOLE);
    if (hole < 0) break;
    s << "[" << data << "," << hole << ")";
    pos = hole;
  }
  return s.str();
}

}  // namespace

std::vector<std::string> compare_trees(const std::string& a, const std::string& b,
                                       const CompareOptions& opt) {
  Tree ta, tb;
  {
    std::map<std::pair<dev_t, ino_t>, std::string> inodes;
    walk(a, "", opt, ta, inodes);
  }
  {
    std::map<std::pair<dev_t, ino_t>, std::string> inodes;
    walk(b, "", opt, tb, inodes);
  }
  std::vector<std::string> out;
  auto diff = [&](const std::string& rel, const std::string& what) {
    out.push_back((rel.empty() ? std::string("<root>") : mirrorfs::quoted(rel)) + ": " + what);
  };
  std::vector<std::string> all;
  for (const auto& [k, v] : ta) all.push_back(k);
  for (const auto& [k, v] : tb) {
    if (!ta.count(k)) all.push_back(k);
  }
  std::sort(all.begin(), all.end());
  for (const std::string& rel : all) {
    const auto ia = ta.find(rel), ib = tb.find(rel);
    if (ib == tb.end()) {
      diff(rel, "only in " + a);
      continue;
    }
    if (ia == ta.end()) {
      diff(rel, "only in " + b);
      continue;
    }
    const Entry& ea = ia->second;
    const Entry& eb = ib->second;
    if (!ea.error.empty() || !eb.error.empty()) {
      diff(rel, "unreadable: a:" + ea.error + " b:" + eb.error);
      if (ea.st.st_mode == 0 || eb.st.st_mode == 0) continue;
    }
    const bool is_root = rel.empty();
    const mode_t fa = ea.st.st_mode & S_IFMT, fb = eb.st.st_mode & S_IFMT;
    if (fa != fb) {
      diff(rel, std::string("type ") + type_name(fa) + " vs " + type_name(fb));
      continue;
    }
    const bool meta = !is_root || opt.root_meta;
    if (meta && opt.mode && fa != S_IFLNK && (ea.st.st_mode & 07777) != (eb.st.st_mode & 07777)) {
      std::ostringstream s;
      s << "mode " << std::oct << (ea.st.st_mode & 07777) << " vs " << (eb.st.st_mode & 07777);
      diff(rel, s.str());
    }
    if (meta && opt.owner && (ea.st.st_uid != eb.st.st_uid || ea.st.st_gid != eb.st.st_gid)) {
      diff(rel, "owner " + std::to_string(ea.st.st_uid) + ":" + std::to_string(ea.st.st_gid) +
                    " vs " + std::to_string(eb.st.st_uid) + ":" + std::to_string(eb.st.st_gid));
    }
    if ((fa == S_IFREG || fa == S_IFLNK) && ea.st.st_size != eb.st.st_size) {
      diff(rel, "size " + std::to_string(ea.st.st_size) + " vs " + std::to_string(eb.st.st_size));
    }
    const bool check_mtime = meta && (fa == S_IFDIR ? opt.dir_mtime : opt.mtime);
    if (check_mtime && (ea.st.st_mtim.tv_sec != eb.st.st_mtim.tv_sec ||
                        ea.st.st_mtim.tv_nsec != eb.st.st_mtim.tv_nsec)) {
      diff(rel, "mtime " + ns_time(ea.st.st_mtim) + " vs " + ns_time(eb.st.st_mtim));
    }
    if (fa == S_IFLNK && ea.link_target != eb.link_target) {
      diff(rel, "symlink " + mirrorfs::quoted(ea.link_target) + " vs " + mirrorfs::quoted(eb.link_target));
    }
    if ((fa == S_IFCHR || fa == S_IFBLK) && ea.st.st_rdev != eb.st.st_rdev) {
      diff(rel, "rdev " + std::to_string(major(ea.st.st_rdev)) + "," +
                    std::to_string(minor(ea.st.st_rdev)) + " vs " +
                    std::to_string(major(eb.st.st_rdev)) + "," + std::to_string(minor(eb.st.st_rdev)));
    }
    if (opt.hardlinks && fa != S_IFDIR && ea.link_leader != eb.link_leader) {
      diff(rel, "hard-link group: linked with " +
                    (ea.link_leader.empty() ? std::string("nothing") : mirrorfs::quoted(ea.link_leader)) +
                    " vs " + (eb.link_leader.empty() ? std::string("nothing") : mirrorfs::quoted(eb.link_leader)));
    }
    if (opt.xattrs && meta && ea.xattrs != eb.xattrs) {
      std::string s = "xattrs differ:";
      for (const auto& [k, v] : ea.xattrs) {
        auto it = eb.xattrs.find(k);
        if (it == eb.xattrs.end()) s += " " + mirrorfs::quoted(k) + " only in a;";
        else if (it->second != v) s += " " + mirrorfs::quoted(k) + " value " + mirrorfs::quoted(v) + " vs " + mirrorfs::quoted(it->second) + ";";
      }
      for (const auto& [k, v] : eb.xattrs) {
        if (!ea.xattrs.count(k)) s += " " + mirrorfs::quoted(k) + " only in b;";
      }
      diff(rel, s);
    }
    if (fa == S_IFREG && opt.content && ea.st.st_size == eb.st.st_size) {
      // Same inode in both trees (a tree compared with itself) needs no read.
      if (ea.st.st_dev != eb.st.st_dev || ea.st.st_ino != eb.st.st_ino) {
        if (std::string c = compare_content(join(a, rel), join(b, rel)); !c.empty()) diff(rel, c);
      }
    }
    if (fa == S_IFREG && opt.holes) {
      const std::string ha = hole_map(join(a, rel)), hb = hole_map(join(b, rel));
      if (ha != hb) diff(rel, "holes " + ha + " vs " + hb);
    }
  }
  return out;
}

std::string join_lines(const std::vector<std::string>& lines, std::size_t max) {
  std::string s;
  for (std::size_t i = 0; i < lines.size() && i < max; ++i) s += lines[i] + "\n";
  if (lines.size() > max) s += "... and " + std::to_string(lines.size() - max) + " more\n";
  return s;
}

}  // namespace mirrorfs::test
