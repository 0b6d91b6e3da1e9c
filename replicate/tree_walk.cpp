#include "replicate/tree_walk.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace mirrorfs::replicate {

namespace {

Entry full_mark(std::string path) {
  Entry e;
  e.kind = Entry::Kind::Path;
  e.path = std::move(path);
  e.exist = true;  // ship the whole current state; never a range update
  e.meta = true;
  return e;
}

}  // namespace

Batch TreeWalk::next(std::size_t max) {
  Batch out;
  if (!root_sent_) {
    out.entries.push_back(full_mark(std::string()));
    root_sent_ = true;
  }
  while (out.entries.size() < max && !dirs_.empty()) {
    const std::string dir = std::move(dirs_.back());
    dirs_.pop_back();
    list(dir, out);
  }
  return out;
}

void TreeWalk::list(const std::string& dir, Batch& out) {
  const int fd = ::openat(root_.get(), dir.empty() ? "." : dir.c_str(),
                          O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {  // gone since it was listed: the journal has its removal
    ++errors_;
    return;
  }
  DIR* d = ::fdopendir(fd);
  if (d == nullptr) {
    ::close(fd);
    ++errors_;
    return;
  }
  while (const dirent* de = ::readdir(d)) {
    const std::string name = de->d_name;
    if (name == "." || name == "..") continue;
    std::string path = dir.empty() ? name : dir + "/" + name;
    bool is_dir = de->d_type == DT_DIR;
    if (de->d_type == DT_UNKNOWN) {
      struct stat st {};
      is_dir = ::fstatat(root_.get(), path.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
               S_ISDIR(st.st_mode);
    }
    if (is_dir) dirs_.push_back(path);
    out.entries.push_back(full_mark(std::move(path)));
  }
  ::closedir(d);
}

}  // namespace mirrorfs::replicate
