// Reconciler: source walk, bulk List exchanges, compare, marks.
#include "replicate/reconcile.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <limits>
#include <unordered_map>

#include "replicate/receiver.hpp"

namespace mirrorfs::replicate {
namespace {

constexpr std::uint32_t kTypeMask = S_IFMT;
constexpr std::size_t kMaxEntriesPerExchange = 200'000;

bool is_temp(const std::string& name) { return name.starts_with(kTempPrefix); }

std::int64_t ctime_ns(const struct stat& st) {
  return std::int64_t{st.st_ctim.tv_sec} * 1'000'000'000 + st.st_ctim.tv_nsec;
}

bool same_meta(const ListEntry& a, const ListEntry& b) {
  return a.mode == b.mode && a.uid == b.uid && a.gid == b.gid;
}

bool same_mtime(const ListEntry& a, const ListEntry& b) {
  return a.mtime_sec == b.mtime_sec && a.mtime_nsec == b.mtime_nsec;
}

Request list_request(const std::string& dir, bool checksums) {
  Request r;
  r.op = Op::List;
  r.path = dir;
  r.flags = checksums ? kListChecksums : 0;
  return r;
}

}  // namespace

const char* sync_mode_name(SyncMode m) noexcept {
  switch (m) {
    case SyncMode::None: return "none";
    case SyncMode::Quick: return "quick";
    case SyncMode::Checksum: return "checksum";
  }
  return "?";
}

std::string join_path(const std::string& dir, const std::string& name) {
  return dir.empty() ? name : dir + "/" + name;
}

Reconciler::Reconciler(const Fd& source_root, ReconcileOptions opt)
    : root_(source_root), opt_(std::move(opt)) {
  opt_.dirs_per_exchange = std::max<std::size_t>(opt_.dirs_per_exchange, 1);
  if (opt_.scope.empty()) {
    dirs_.push_back({std::string(), true});
  } else {
    for (const std::string& d : opt_.scope) dirs_.push_back({d, true});
  }
}

Result<Batch> Reconciler::step(Transport& t) {
  Batch out;
  if (!root_marked_) {
    add_mark(out, std::string(), false, true, false, 0);  // the root's own metadata
    root_marked_ = true;
  }
  // Source listings first: they bound the exchange, so the replies held in
  // memory at once stay near kMaxEntriesPerExchange entries.
  std::vector<std::pair<Dir, Result<std::vector<ListEntry>>>> take;
  std::vector<Request> reqs;
  std::size_t entries = 0;
  while (!dirs_.empty() && reqs.size() < opt_.dirs_per_exchange && entries < kMaxEntriesPerExchange &&
         take.size() < 4 * opt_.dirs_per_exchange) {
    Dir d = std::move(dirs_.front());
    dirs_.pop_front();
    Result<std::vector<ListEntry>> src = source_listing(d.path);
    if (src) entries += src->size();
    if (d.on_target) reqs.push_back(list_request(d.path, opt_.mode == SyncMode::Checksum));
    take.emplace_back(std::move(d), std::move(src));
  }
  std::vector<Reply> replies;
  if (!reqs.empty()) {
    Result<std::vector<Reply>> r = t.exchange(reqs);
    if (!r) return tl::unexpected(r.error());
    if (r->size() != reqs.size()) return fail(EPROTO, "list replies: count mismatch");
    replies = std::move(*r);
  }
  std::vector<Check> checks;
  std::size_t k = 0;
  for (auto& [d, src] : take) {
    if (d.on_target) {
      const Reply& rp = replies[k++];
      if (!src) continue;  // gone from the source since: the journal has what happened
      if (rp.err != 0) {
        // Too big for a frame, vanished, or unreadable: ship it in full.
        ++counters_.list_errors;
        if (!d.path.empty()) add_mark(out, d.path, true, true, opt_.delete_missing, 0);
        source_only(d.path, *src, out);
        continue;
      }
      Result<std::vector<ListEntry>> dst = decode_listing(rp.data);
      if (!dst) return fail(EPROTO, "list " + quoted(d.path) + ": " + dst.error().what);
      compare(d.path, *src, *dst, out, checks);
    } else if (src) {
      source_only(d.path, *src, out);
    }
    src = std::vector<ListEntry>{};  // free as we go
  }
  if (!checks.empty()) {
    if (Result<void> c = check_content(t, checks, out); !c) return tl::unexpected(c.error());
  }
  return out;
}

Result<std::vector<ListEntry>> Reconciler::source_listing(const std::string& dir) const {
  Fd fd(::openat(root_.get(), dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.valid()) return fail_errno("open source directory", dir);
  Result<std::string> enc = target::list_dir(fd.get(), dir, false, std::numeric_limits<std::size_t>::max());
  if (!enc) return tl::unexpected(enc.error());
  return decode_listing(*enc);
}

void Reconciler::add_mark(Batch& out, std::string path, bool exist, bool meta, bool replace,
                          std::uint64_t bytes) {
  Entry e;
  e.kind = Entry::Kind::Path;
  e.path = std::move(path);
  e.exist = exist;
  e.meta = meta;
  e.replace = replace;
  out.entries.push_back(std::move(e));
  ++counters_.to_send;
  counters_.bytes_to_send += bytes;
}

// A directory the target lacks (or must be re-shipped): every entry in full.
void Reconciler::source_only(const std::string& dir, const std::vector<ListEntry>& src, Batch& out) {
  for (const ListEntry& s : src) {
    ++counters_.scanned;
    std::string path = join_path(dir, s.name);
    if (s.type == FileType::Directory) dirs_.push_back({path, false});
    add_mark(out, std::move(path), true, true, false, s.type == FileType::Regular ? s.size : 0);
  }
}

void Reconciler::compare(const std::string& dir, const std::vector<ListEntry>& src,
                         const std::vector<ListEntry>& dst, Batch& out, std::vector<Check>& checks) {
  std::unordered_map<std::string_view, const ListEntry*> on_target;
  on_target.reserve(dst.size());
  for (const ListEntry& d : dst) on_target.emplace(d.name, &d);
  for (const ListEntry& s : src) {
    ++counters_.scanned;
    std::string path = join_path(dir, s.name);
    const auto it = on_target.find(s.name);
    if (it == on_target.end()) {
      if (s.type == FileType::Directory) dirs_.push_back({path, false});
      add_mark(out, std::move(path), true, true, false, s.type == FileType::Regular ? s.size : 0);
      continue;
    }
    const ListEntry& d = *it->second;
    on_target.erase(it);
    compare_entry(path, s, d, out, checks);
  }
  for (const auto& [name, d] : on_target) {  // only on the target
    if (!is_temp(d->name) && !opt_.delete_missing) continue;
    add_mark(out, join_path(dir, d->name), true, false, true, 0);
  }
}

void Reconciler::compare_entry(const std::string& path, const ListEntry& s, const ListEntry& d, Batch& out,
                               std::vector<Check>& checks) {
  if ((s.mode & kTypeMask) != (d.mode & kTypeMask) || s.type != d.type) {
    if (s.type == FileType::Directory) dirs_.push_back({path, false});
    return add_mark(out, path, true, true, true, s.type == FileType::Regular ? s.size : 0);
  }
  // Crash recovery: a recent change may be one the listing does not show
  // (xattrs; content under a restored mtime): metadata is sent again and
  // regular files are compared by content.
  const bool recent = suspect(path);
  switch (s.type) {
    case FileType::Directory:
      if (opt_.scope.empty()) dirs_.push_back({path, true});
      if (recent || !same_meta(s, d) || !same_mtime(s, d)) add_mark(out, path, false, true, false, 0);
      return;
    case FileType::Regular:
      if (s.size != d.size || !same_mtime(s, d) || s.nlink != d.nlink)
        return add_mark(out, path, true, true, false, s.size);
      if (opt_.mode == SyncMode::Checksum && d.has_checksum) {
        ++counters_.checksums;
        Result<std::uint64_t> h = source_checksum(path, false);
        if (!h || *h != d.checksum) return add_mark(out, path, true, true, false, s.size);
      } else if (recent) {
        checks.push_back({path, s.size, true});
        return;  // check_content() marks it
      }
      if (recent || !same_meta(s, d)) add_mark(out, path, false, true, false, 0);
      return;
    case FileType::Symlink:
      if (s.symlink != d.symlink) return add_mark(out, path, true, true, false, 0);
      if (recent || !same_meta(s, d) || !same_mtime(s, d)) add_mark(out, path, false, true, false, 0);
      return;
    case FileType::Other:
      if (recent || !same_meta(s, d) || !same_mtime(s, d)) add_mark(out, path, false, true, false, 0);
      return;
  }
}

// A persisted pending path, or an entry whose ctime (data, metadata, xattrs,
// links and renames all set it) is at or after suspect_since.
bool Reconciler::suspect(const std::string& path) const {
  if (opt_.suspects.count(path) != 0) return true;
  if (opt_.suspect_since_ns == 0) return false;
  struct stat st {};
  return ::fstatat(root_.get(), path.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
         ctime_ns(st) >= opt_.suspect_since_ns;
}

Result<std::uint64_t> Reconciler::source_checksum(const std::string& path, bool layout) const {
  Fd fd(::openat(root_.get(), path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK));
  if (!fd.valid()) return fail_errno("open", path);
  return target::xxh64_fd(fd.get(), path, layout);
}

// The suspects of one step: one exchange of Checksum requests.
Result<void> Reconciler::check_content(Transport& t, const std::vector<Check>& checks, Batch& out) {
  std::vector<Request> reqs;
  reqs.reserve(checks.size());
  for (const Check& c : checks) {
    Request r;
    r.op = Op::Checksum;
    r.path = c.path;
    // A crash may have left equal bytes in another layout: a write of what
    // read as zeros from a hole being made, whose Punch never shipped.
    r.flags = kChecksumLayout;
    reqs.push_back(std::move(r));
  }
  Result<std::vector<Reply>> r = t.exchange(reqs);
  if (!r) return tl::unexpected(r.error());
  if (r->size() != reqs.size()) return fail(EPROTO, "checksum replies: count mismatch");
  for (std::size_t i = 0; i < checks.size(); ++i) {
    ++counters_.checksums;
    const Reply& rp = (*r)[i];
    Result<std::uint64_t> theirs = rp.err == 0 ? decode_u64(rp.data) : fail(rp.err, rp.message);
    Result<std::uint64_t> ours = source_checksum(checks[i].path, true);
    const bool same = theirs && ours && *theirs == *ours;
    if (!same) add_mark(out, checks[i].path, true, true, false, checks[i].size);
    else if (checks[i].meta_differs) add_mark(out, checks[i].path, false, true, false, 0);
  }
  return {};
}

void for_each_recent(const Fd& root, std::int64_t since_ns,
                     const std::function<void(const std::string&, bool is_dir)>& f) {
  std::vector<std::string> stack{std::string()};
  while (!stack.empty()) {
    const std::string dir = std::move(stack.back());
    stack.pop_back();
    Fd fd(::openat(root.get(), dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd.valid()) continue;
    Result<std::string> enc = target::list_dir(fd.get(), dir, false, std::numeric_limits<std::size_t>::max());
    if (!enc) continue;
    Result<std::vector<ListEntry>> entries = decode_listing(*enc);
    if (!entries) continue;
    for (const ListEntry& e : *entries) {
      std::string path = join_path(dir, e.name);
      struct stat st {};
      if (::fstatat(fd.get(), e.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && ctime_ns(st) >= since_ns)
        f(path, e.type == FileType::Directory);
      if (e.type == FileType::Directory) stack.push_back(std::move(path));
    }
  }
}

}  // namespace mirrorfs::replicate
