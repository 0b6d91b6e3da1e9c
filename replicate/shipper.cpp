// Shipper: requests for one batch, built from the current source state.
#include "replicate/shipper.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <limits>
#include <optional>

#include "replicate/delta.hpp"
#include "replicate/journal_queue.hpp"

namespace mirrorfs::replicate {
namespace {

constexpr std::size_t kNoItem = std::numeric_limits<std::size_t>::max();
constexpr std::size_t kRefreshItem = kNoItem - 1;  // a directory-times refresh request
constexpr std::size_t kRelinkItem = kNoItem - 2;   // an end-of-batch hard-link relink
constexpr std::uint32_t kNoReplace = 1, kExchange = 2;

std::string parent_of(const std::string& p) {
  const auto i = p.rfind('/');
  return i == std::string::npos ? std::string() : p.substr(0, i);
}

bool creates(Op op) {
  return op == Op::Mkdir || op == Op::BeginFile || op == Op::Symlink || op == Op::Mknod ||
         op == Op::Link || op == Op::Rename || op == Op::Delta || op == Op::CommitFile;
}

Request req(Op op, std::string path) {
  Request r;
  r.op = op;
  r.path = std::move(path);
  return r;
}

// Reads up to len bytes at off; short at EOF (the file shrank meanwhile).
std::string read_at(const Fd& fd, std::uint64_t off, std::size_t len) {
  std::string buf(len, '\0');
  std::size_t got = 0;
  while (got < len) {
    const ssize_t n = ::pread(fd.get(), buf.data() + got, len - got, static_cast<off_t>(off + got));
    if (n <= 0) break;
    got += static_cast<std::size_t>(n);
  }
  buf.resize(got);
  return buf;
}

std::vector<Xattr> xattrs_of(const Fd& fd) {
  std::vector<Xattr> out;
  std::string names(4096, '\0');
  ssize_t n = ::flistxattr(fd.get(), names.data(), names.size());
  if (n < 0 && errno == ERANGE) {
    names.resize(static_cast<std::size_t>(std::max<ssize_t>(::flistxattr(fd.get(), nullptr, 0), 0)) + 1);
    n = ::flistxattr(fd.get(), names.data(), names.size());
  }
  if (n <= 0) return out;
  const bool root = ::geteuid() == 0;
  for (std::size_t i = 0; i < static_cast<std::size_t>(n);) {
    const std::string name(names.c_str() + i);
    i += name.size() + 1;
    const bool ok = name.starts_with("user.") ||
                    (root && (name.starts_with("trusted.") || name.starts_with("security.")));
    if (!ok) continue;
    const ssize_t vlen = ::fgetxattr(fd.get(), name.c_str(), nullptr, 0);
    if (vlen < 0) continue;
    std::string value(static_cast<std::size_t>(vlen), '\0');
    const ssize_t got = ::fgetxattr(fd.get(), name.c_str(), value.data(), value.size());
    if (got < 0) continue;
    value.resize(static_cast<std::size_t>(got));
    out.push_back({name, std::move(value)});
  }
  return out;
}

}  // namespace

struct Shipper::Item {
  const Entry* op = nullptr;  // a namespace op, or null for a path
  std::string path;
  std::vector<Range> ranges;
  bool ranges_only = false;  // ship the ranges in place if the file is large
  bool replace = false;
  bool sig_checked = false;  // signatures() has looked at it
  bool want_sig = false;
  std::string sig;  // the target's signature; empty: it has no basis
};

struct Shipper::Pending {
  std::vector<Item>* items = nullptr;
  std::vector<Request> reqs;
  std::vector<std::size_t> origin;  // item index per request
  std::set<std::size_t> failed;     // items already queued for retry
  std::size_t bytes = 0;
  std::size_t cur = kNoItem;
  // Directories whose entries this batch changes on the target: their mtime
  // (which the target's own creates/renames bumped) is set again at the end.
  std::set<std::string> dirs;
  void add(Request r) {
    if (r.op != Op::Barrier && r.op != Op::SetMeta && r.op != Op::Signature) {
      dirs.insert(parent_of(r.path));
      if (r.op == Op::Rename || r.op == Op::Link) dirs.insert(parent_of(r.path2));
    }
    bytes += r.data.size();
    reqs.push_back(std::move(r));
    origin.push_back(cur);
  }
};

Shipper::Shipper(const Fd& source_root, ShipOptions opt, std::shared_ptr<spdlog::logger> log)
    : root_(source_root), opt_(opt), log_(std::move(log)) {}

Result<ShipReport> Shipper::ship(Transport& t, const Batch& b) {
  ShipReport rep;
  batch_copy_.clear();
  std::vector<Item> items;
  for (const Entry& e : b.entries) expand(e, items);
  Pending p;
  p.items = &items;
  for (std::size_t i = 0; i < items.size(); ++i) {
    p.cur = i;
    if (Result<void> s = signatures(t, items, i, p, rep); !s) return tl::unexpected(s.error());
    p.cur = i;
    build(items[i], p, rep);
    if (p.bytes >= opt_.flush_bytes) {
      if (Result<void> f = flush(t, p, rep); !f) return tl::unexpected(f.error());
    }
  }
  p.cur = kNoItem;
  relink_all(p);
  refresh_dirs(p);
  p.add(req(Op::Barrier, {}));
  if (Result<void> f = flush(t, p, rep); !f) return tl::unexpected(f.error());
  if (rep.retries.empty()) failures_.clear();
  return rep;
}

void Shipper::expand(const Entry& e, std::vector<Item>& out) const {
  Item it;
  if (e.kind != Entry::Kind::Path) {
    it.op = &e;
    out.push_back(std::move(it));
    return;
  }
  it.path = e.path;
  it.ranges = e.ranges;
  it.ranges_only = !e.exist && !e.whole && !e.subtree && !e.replace;
  it.replace = e.replace;
  out.push_back(std::move(it));
  if (e.subtree) walk(e.path, out);
}

// Every entry below dir, parents before children, as "ship in full".
void Shipper::walk(const std::string& dir, std::vector<Item>& out) const {
  const int fd = ::openat(root_.get(), dir.empty() ? "." : dir.c_str(),
                          O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return;  // gone or not a directory: the item itself says so
  DIR* d = ::fdopendir(fd);
  if (d == nullptr) {
    ::close(fd);
    return;
  }
  std::vector<std::pair<std::string, bool>> children;
  while (const dirent* de = ::readdir(d)) {
    const std::string name = de->d_name;
    if (name == "." || name == "..") continue;
    children.emplace_back(dir.empty() ? name : dir + "/" + name, de->d_type == DT_DIR);
  }
  ::closedir(d);
  for (auto& [path, is_dir] : children) {
    Item it;
    it.path = path;
    out.push_back(std::move(it));
    if (is_dir) walk(path, out);
  }
}

bool Shipper::wants_signature(const Item& it) const {
  struct stat st {};
  return it.op == nullptr && !it.ranges_only && !it.replace && !it.path.empty() &&
         ::fstatat(root_.get(), it.path.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
         static_cast<std::uint64_t>(st.st_size) >= opt_.in_place_min;
}

// Signatures of large files whose target copy is of unknown content; an
// empty signature means "no basis, send it whole". The requests queued
// before items[from] are applied first, so the target's basis is what the
// batch's earlier renames, links and removes made it; then one round trip
// covers items[from] and the path items that follow it up to the next
// namespace op. (A basis changed anyway, say by a relink, fails ESTALE.)
Result<void> Shipper::signatures(Transport& t, std::vector<Item>& items, std::size_t from, Pending& p,
                                 ShipReport& rep) {
  if (items[from].sig_checked) return {};
  items[from].sig_checked = true;
  if (!wants_signature(items[from])) return {};
  if (Result<void> f = flush(t, p, rep); !f) return f;
  std::vector<Request> reqs;
  std::vector<std::size_t> which;
  for (std::size_t i = from; i < items.size() && items[i].op == nullptr; ++i) {
    Item& it = items[i];
    if (i != from) {
      if (it.sig_checked) continue;
      it.sig_checked = true;
      if (!wants_signature(it)) continue;
    }
    it.want_sig = true;
    reqs.push_back(req(Op::Signature, it.path));
    which.push_back(i);
  }
  Result<std::vector<Reply>> r = t.exchange(reqs);
  if (!r) return tl::unexpected(r.error());
  if (r->size() != reqs.size()) return fail(EPROTO, "signature replies: count mismatch");
  for (std::size_t k = 0; k < which.size(); ++k) {
    if ((*r)[k].err == 0) items[which[k]].sig = std::move((*r)[k].data);
  }
  return {};
}

void Shipper::build(const Item& it, Pending& p, ShipReport& rep) {
  if (it.op != nullptr) return build_op(*it.op, p);
  if (it.path.empty()) {  // the root itself: its metadata, then what lies below it
    p.dirs.insert(std::string());
    return;
  }
  if (it.replace) add_remove(it.path, p);
  struct stat st {};
  if (::fstatat(root_.get(), it.path.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) {  // gone (or moved): later marks cover the rest
      if (opt_.delete_missing && !it.replace) add_remove(it.path, p);
      return;
    }
    rep.retries.push_back({it.path, false, errno, "fstatat " + quoted(it.path)});
    return;
  }
  if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) {
    const int flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | (S_ISDIR(st.st_mode) ? O_DIRECTORY : 0);
    Fd fd(::openat(root_.get(), it.path.c_str(), flags));
    if (!fd.valid() || ::fstat(fd.get(), &st) != 0) {
      if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP) {
        if (opt_.delete_missing && !it.replace) add_remove(it.path, p);
        return;
      }
      rep.retries.push_back({it.path, false, errno, "open " + quoted(it.path)});
      return;
    }
    if (S_ISREG(st.st_mode)) return build_file(it, fd, st, p, rep);
    if (S_ISDIR(st.st_mode)) {
      Request mk = req(Op::Mkdir, it.path);
      mk.meta = meta_of(nullptr, st);
      p.add(std::move(mk));
      Request sm = req(Op::SetMeta, it.path);
      sm.meta = meta_of(&fd, st);
      return p.add(std::move(sm));
    }
  }
  if (S_ISLNK(st.st_mode)) {
    std::string text(PATH_MAX, '\0');
    const ssize_t n = ::readlinkat(root_.get(), it.path.c_str(), text.data(), text.size());
    if (n < 0) return;  // replaced meanwhile: a later mark covers it
    text.resize(static_cast<std::size_t>(n));
    Request sl = req(Op::Symlink, it.path);
    sl.path2 = std::move(text);
    p.add(std::move(sl));
  } else if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) {
    Request mk = req(Op::Mknod, it.path);
    mk.meta = meta_of(nullptr, st);
    mk.offset = st.st_rdev;
    p.add(std::move(mk));
  }
  Request sm = req(Op::SetMeta, it.path);
  sm.meta = meta_of(nullptr, st);
  p.add(std::move(sm));
}

void Shipper::build_op(const Entry& e, Pending& p) {
  if (e.replace) add_remove(e.to_path, p);
  if (e.kind == Entry::Kind::Rename) {
    Request r = req(Op::Rename, e.path);
    r.path2 = e.to_path;
    // The journal established that to_path was absent on the source; the
    // target may still hold a stale copy, which a plain rename replaces.
    r.flags = e.flags & ~kNoReplace;
    p.add(std::move(r));
    remap_names(e.path, e.to_path, (e.flags & kExchange) != 0);
    return;
  }
  Request r = req(Op::Link, e.path);
  r.path2 = e.to_path;
  p.add(std::move(r));
  struct stat st {};
  if (::fstatat(root_.get(), e.to_path.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode)) {
    names_[{st.st_dev, st.st_ino}].insert(e.to_path);
  }
}

void Shipper::build_file(const Item& it, const Fd& fd, const struct stat& st, Pending& p, ShipReport& rep) {
  const std::pair<dev_t, ino_t> key{st.st_dev, st.st_ino};
  const auto size = static_cast<std::uint64_t>(st.st_size);
  if (link_to_copy(it, st, p)) return;
  ++rep.files;
  if (it.ranges_only && size >= opt_.in_place_min) {
    ship_ranges(it, fd, size, p);
  } else if (it.want_sig && !it.sig.empty()) {
    ship_delta(it, fd, st, p);
  } else {
    whole_copy(it.path, fd, st, p);
  }
  Request sm = req(Op::SetMeta, it.path);
  sm.meta = meta_of(&fd, st);
  p.add(std::move(sm));
  if (st.st_nlink > 1) {  // the other names are linked to this copy at the end of the batch
    batch_copy_[key] = it.path;
    names_[key].insert(it.path);
  }
}

// A later name of an inode whose content this batch already sent: a Link
// from the name it was sent to (requests apply in order, so the target has
// it unless that copy failed, and then this name is sent whole next time).
bool Shipper::link_to_copy(const Item& it, const struct stat& st, Pending& p) {
  if (st.st_nlink <= 1 || no_link_.erase(it.path) != 0) return false;
  const std::pair<dev_t, ino_t> key{st.st_dev, st.st_ino};
  const auto c = batch_copy_.find(key);
  if (c == batch_copy_.end() || c->second == it.path) return false;
  Request l = req(Op::Link, c->second);
  l.path2 = it.path;
  p.add(std::move(l));
  names_[key].insert(it.path);
  return true;
}

// Journaled ranges in place: the data segments of the source as Write, its
// holes as Punch (widened to whole blocks, which the source has as holes
// too), then the size.
void Shipper::ship_ranges(const Item& it, const Fd& fd, std::uint64_t size, Pending& p) const {
  constexpr std::uint64_t kBlock = 4096;
  for (const Range& r : it.ranges) {
    const std::uint64_t end = std::min(r.end, size);
    for (std::uint64_t pos = r.offset; pos < end;) {
      const off_t d = ::lseek(fd.get(), static_cast<off_t>(pos), SEEK_DATA);
      const std::uint64_t data = d < 0 ? size : static_cast<std::uint64_t>(d);  // ENXIO: a hole to EOF
      if (data > pos) {
        Request h = req(Op::Punch, it.path);
        h.offset = pos / kBlock * kBlock;
        const std::uint64_t stop = std::min(data, (end + kBlock - 1) / kBlock * kBlock);
        h.data = encode_u64(stop - h.offset);
        p.add(std::move(h));
        pos = data;
        continue;
      }
      const off_t h = ::lseek(fd.get(), static_cast<off_t>(pos), SEEK_HOLE);
      const std::uint64_t stop = h < 0 ? end : std::min(end, static_cast<std::uint64_t>(h));
      for (std::uint64_t off = pos; off < stop; off += opt_.chunk) {
        Request w = req(Op::Write, it.path);
        w.offset = off;
        w.data = read_at(fd, off, static_cast<std::size_t>(std::min<std::uint64_t>(opt_.chunk, stop - off)));
        p.add(std::move(w));
      }
      pos = std::max(stop, pos + 1);
    }
  }
  Request tr = req(Op::Truncate, it.path);
  tr.offset = size;
  p.add(std::move(tr));
}

void Shipper::ship_delta(const Item& it, const Fd& fd, const struct stat& st, Pending& p) {
  Result<std::string> delta = delta_of(it.sig, fd);
  if (!delta) return whole_copy(it.path, fd, st, p);
  std::size_t off = 0;
  do {
    Request d = req(Op::Delta, it.path);
    d.data = delta->substr(off, opt_.chunk);
    off += d.data.size();
    if (off >= delta->size()) d.flags = kLast, d.meta = meta_of(&fd, st);
    p.add(std::move(d));
  } while (off < delta->size());
}

// BeginFile, the data segments (holes skipped), Truncate, CommitFile.
void Shipper::whole_copy(const std::string& path, const Fd& fd, const struct stat& st, Pending& p) {
  p.add(req(Op::BeginFile, path));
  const auto size = static_cast<off_t>(st.st_size);
  for (off_t pos = 0; pos < size;) {
    const off_t data = ::lseek(fd.get(), pos, SEEK_DATA);
    if (data < 0) break;  // ENXIO: only a hole is left
    off_t hole = ::lseek(fd.get(), data, SEEK_HOLE);
    if (hole < 0 || hole > size) hole = size;
    for (off_t off = data; off < hole; off += static_cast<off_t>(opt_.chunk)) {
      Request w = req(Op::Write, path);
      w.offset = static_cast<std::uint64_t>(off);
      w.data = read_at(fd, w.offset, static_cast<std::size_t>(std::min<off_t>(static_cast<off_t>(opt_.chunk), hole - off)));
      p.add(std::move(w));
    }
    pos = hole;
  }
  Request tr = req(Op::Truncate, path);
  tr.offset = static_cast<std::uint64_t>(size);
  p.add(std::move(tr));
  Request c = req(Op::CommitFile, path);
  c.meta = meta_of(&fd, st);
  p.add(std::move(c));
}

// The end of a batch: the content of each hard-linked inode went to one
// name (a new inode on the target); link every other name this session gave
// it, that still names it on the source, to that copy again.
void Shipper::relink_all(Pending& p) {
  p.cur = kRelinkItem;
  for (const auto& [key, copy] : batch_copy_) {
    std::set<std::string>& known = names_[key];
    for (auto it = known.begin(); it != known.end();) {
      struct stat o {};
      if (::fstatat(root_.get(), it->c_str(), &o, AT_SYMLINK_NOFOLLOW) != 0 || o.st_dev != key.first ||
          o.st_ino != key.second) {
        it = known.erase(it);  // that name is something else now
        continue;
      }
      if (*it != copy) {
        Request l = req(Op::Link, copy);
        l.path2 = *it;
        p.add(std::move(l));
      }
      ++it;
    }
  }
  batch_copy_.clear();
  p.cur = kNoItem;
}

// A Remove on the target: nothing at or below path can be a link source now.
void Shipper::add_remove(const std::string& path, Pending& p) {
  for (auto it = batch_copy_.begin(); it != batch_copy_.end();) {
    it = path_under(it->second, path) ? batch_copy_.erase(it) : std::next(it);
  }
  p.add(req(Op::Remove, path));
}

void Shipper::refresh_dirs(Pending& p) {
  p.cur = kRefreshItem;
  for (const std::string& dir : p.dirs) {
    Fd fd(::openat(root_.get(), dir.empty() ? "." : dir.c_str(),
                   O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    struct stat st {};
    if (!fd.valid() || ::fstat(fd.get(), &st) != 0) continue;  // gone: a later mark covers it
    Request sm = req(Op::SetMeta, dir);
    sm.meta = meta_of(&fd, st);
    p.add(std::move(sm));
  }
  p.dirs.clear();
  p.cur = kNoItem;
}

Meta Shipper::meta_of(const Fd* fd, const struct stat& st) const {
  Meta m;
  m.mode = st.st_mode;
  m.uid = st.st_uid;
  m.gid = st.st_gid;
  m.mtime_sec = st.st_mtim.tv_sec;
  m.mtime_nsec = static_cast<std::uint32_t>(st.st_mtim.tv_nsec);
  m.with_owner = true;
  m.with_xattrs = fd != nullptr;
  if (fd != nullptr) m.xattrs = xattrs_of(*fd);
  return m;
}

Result<void> Shipper::flush(Transport& t, Pending& p, ShipReport& rep) {
  if (p.reqs.empty()) return {};
  Result<std::vector<Reply>> r = t.exchange(p.reqs);
  if (!r) return tl::unexpected(r.error());
  if (r->size() != p.reqs.size()) return fail(EPROTO, "replies: count mismatch");
  for (std::size_t i = 0; i < r->size(); ++i) {
    const Reply& rp = (*r)[i];
    if (rp.err == 0) continue;
    const std::size_t item = p.origin[i];
    if (item == kNoItem) return fail(rp.err, "barrier: " + rp.message);  // durability unknown
    on_failure(p.reqs[i], rp, item, p, rep);
  }
  p.reqs.clear();
  p.origin.clear();
  p.bytes = 0;
  return {};
}

// One failed request: retry what it was to create, in full. A failed Link
// makes its new name a full copy next time; a path whose parent is missing
// or wrong on the target has the parent re-shipped too.
void Shipper::on_failure(const Request& rq, const Reply& rp, std::size_t item, Pending& p, ShipReport& rep) {
  if (item == kRefreshItem) return add_retry(rep, rq.path, false, rp);  // a directory's times
  if (rq.op == Op::Link) {
    forget_name(rq.path2);
    no_link_.insert(rq.path2);
  }
  if (item == kRelinkItem) {
    add_retry(rep, rq.path2, false, rp);  // that name, as a full copy
  } else if (const Item& it = (*p.items)[item]; it.op != nullptr) {
    // A failed rename/link: ship both names in full.
    if (it.op->kind == Entry::Kind::Rename) add_retry(rep, it.op->path, true, rp);
    add_retry(rep, it.op->to_path, true, rp);
  } else if (p.failed.insert(item).second) {
    if (rq.op != Op::Link) forget_name(it.path);  // its content may not have landed
    add_retry(rep, it.path, rq.op == Op::Mkdir, rp);
  }
  if (creates(rq.op) && (rp.err == ENOENT || rp.err == ENOTDIR)) {  // the parent is missing or wrong
    const std::string& where = rq.op == Op::Link || rq.op == Op::Rename ? rq.path2 : rq.path;
    if (where.find('/') != std::string::npos) add_retry(rep, parent_of(where), true, rp);
  }
}

void Shipper::add_retry(ShipReport& rep, const std::string& path, bool subtree, const Reply& rp) {
  for (const ShipReport::Retry& r : rep.retries) {
    if (r.path == path && (r.subtree || !subtree)) return;
  }
  rep.retries.push_back({path, subtree, rp.err, rp.message});
  // Failing again and again: the parent may be what is wrong on the target.
  if (++failures_[path] >= 2 && path.find('/') != std::string::npos) {
    const std::string parent = parent_of(path);
    for (const ShipReport::Retry& r : rep.retries) {
      if (r.path == parent && r.subtree) return;
    }
    rep.retries.push_back({parent, true, rp.err, rp.message});
  }
  if (failures_.size() > 65536) failures_.clear();
}

void Shipper::forget_name(const std::string& path) {
  for (auto& [key, set] : names_) set.erase(path);
  for (auto it = batch_copy_.begin(); it != batch_copy_.end();) {
    it = it->second == path ? batch_copy_.erase(it) : std::next(it);
  }
}

void Shipper::remap_names(const std::string& from, const std::string& to, bool exchange) {
  auto moved = [&](const std::string& n) -> std::optional<std::string> {
    if (path_under(n, from)) return to + n.substr(from.size());
    if (path_under(n, to)) {
      if (!exchange) return std::nullopt;  // replaced on the target
      return from + n.substr(to.size());
    }
    return n;
  };
  for (auto& [key, set] : names_) {
    std::set<std::string> out;
    for (const std::string& n : set) {
      if (std::optional<std::string> m = moved(n)) out.insert(std::move(*m));
    }
    set = std::move(out);
  }
  for (auto it = batch_copy_.begin(); it != batch_copy_.end();) {
    std::optional<std::string> m = moved(it->second);
    if (!m) {
      it = batch_copy_.erase(it);
      continue;
    }
    it->second = std::move(*m);
    ++it;
  }
}

}  // namespace mirrorfs::replicate
