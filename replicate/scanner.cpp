// Scanner: the thread, the inotify event handling and the directory tree.
// The self-filter's bookkeeping is ScanBook (scan_book.cpp).
#include "replicate/scanner.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <optional>
#include <vector>

namespace mirrorfs::replicate {
namespace {

constexpr std::uint32_t kMask = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_MODIFY |
                                IN_ATTRIB | IN_ONLYDIR | IN_EXCL_UNLINK;
constexpr std::uint64_t kRoot = 1;
constexpr std::size_t kMaxBacklog = 1 << 20;  // events read and not handled yet
constexpr std::uint32_t kRenameExchange = 2;  // RENAME_EXCHANGE

std::int64_t ctime_ns(const struct stat& st) {
  return static_cast<std::int64_t>(st.st_ctim.tv_sec) * 1'000'000'000 + st.st_ctim.tv_nsec;
}

const char* at(const std::string& rel) { return rel.empty() ? "." : rel.c_str(); }

std::string read_sysctl(const char* path) {
  std::ifstream in(path);
  std::string v;
  in >> v;
  return v.empty() ? "?" : v;
}

}  // namespace

Scanner::Scanner(ChangeSink& next, ScannerOptions opt, std::shared_ptr<spdlog::logger> log)
    : next_(next), opt_(opt), log_(std::move(log)), book_(opt.book) {}

Scanner::~Scanner() { stop(); }

void Scanner::record(const Change& c) noexcept {
  try {
    book_.on_record(c, ScanClock::now());
  } catch (...) {  // bad_alloc: an own change may be shipped twice, never lost
  }
  next_.record(c);
}

Result<void> Scanner::start(const Fd& root, SourceCache* cache) {
  root_ = root.get();
  cache_ = cache;
  inotify_.reset(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  if (!inotify_.valid()) return fail_errno("inotify_init1", "");
  wake_.reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!wake_.valid()) return fail_errno("eventfd", "");
  thread_ = std::jthread([this](std::stop_token st) { run(st); });
  return {};
}

void Scanner::stop() {
  if (!thread_.joinable()) return;
  thread_.request_stop();
  const std::uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof one);
  thread_.join();
  const ScannerStats s = stats();
  log_->info("stopped: {} bypass change(s) shipped ({} unsure), {} own event(s) filtered, "
             "{} overflow rescan(s), {} directories re-listed after unclear events",
             s.bypass, s.unsure, s.own_filtered, s.overflows, unclear_.load());
}

bool Scanner::wait_ready(std::stop_token stop) {
  std::unique_lock lk(ready_mu_);
  ready_cv_.wait(lk, stop, [&] { return ready_ || finished_; });
  return ready_;
}

void Scanner::set_ready(bool ok) {
  {
    std::lock_guard lk(ready_mu_);
    ready_ = ready_ || ok;
    finished_ = finished_ || !ok;
  }
  ready_cv_.notify_all();
}

ScannerStats Scanner::stats() const {
  return {bypass_.load(), unsure_.load(), own_.load(), overflows_.load(), watched_.load(),
          polled_.load()};
}

void Scanner::run(std::stop_token stop) {
  ::pthread_setname_np(::pthread_self(), "mfs-scan");
  try {
    dirs_.emplace(kRoot, Dir{});
    scan_dir(kRoot, Mode::Baseline, true);
    set_ready(true);
    log_->info("watching {} directories, {} inodes known{}", watched_.load(),
               book_.inode_count(),
               polled_ > 0 ? fmt::format(", {} polled every {}ms (watch limit)", polled_.load(),
                                         opt_.poll_interval.count())
                           : std::string());
    loop(stop);
  } catch (const std::bad_alloc&) {
    log_->error("out of memory: writes that bypass the mount are no longer caught");
  } catch (const std::exception& e) {
    log_->error("stopped on an unexpected error ({}): writes that bypass the mount are no longer "
                "caught",
                e.what());
  }
  set_ready(false);
}

void Scanner::loop(std::stop_token stop) {
  while (!stop.stop_requested()) {
    ScanClock::time_point now = ScanClock::now();
    ScanClock::time_point wake = now + std::chrono::seconds(1);
    if (!events_.empty()) wake = std::min(wake, events_.front().due);
    if (!moves_.empty()) wake = std::min(wake, now + opt_.event_delay);
    if (!unwatched_.empty()) wake = std::min(wake, next_poll_);
    wake = std::min(wake, book_.next_deadline());
    const auto ms = std::chrono::ceil<std::chrono::milliseconds>(wake - now).count();
    pollfd fds[2] = {{inotify_.get(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
    const int n = ::poll(fds, 2, static_cast<int>(std::clamp<std::int64_t>(ms, 0, 1000)));
    if (n == -1 && errno != EINTR) {
      log_->error("poll: {}; writes that bypass the mount are no longer caught",
                  std::strerror(errno));
      return;
    }
    if (n > 0 && (fds[1].revents & POLLIN)) break;
    now = ScanClock::now();
    if (n > 0 && (fds[0].revents & POLLIN)) read_events(now);
    now = ScanClock::now();
    while (!events_.empty() && events_.front().due <= now && !stop.stop_requested()) {
      Event e = std::move(events_.front());
      events_.pop_front();
      handle(e);
    }
    expire_moves(now);
    if (!dirty_.empty() && (events_.empty() || now >= dirty_since_ + std::chrono::milliseconds(200)))
      rescan_dirty();
    else if (!dirty_.empty() && dirty_since_ == ScanClock::time_point{})
      dirty_since_ = now;
    if (rescan_all_) {
      rescan_all_ = false;
      overflows_ += 1;
      book_.forget_own();  // their events may be lost: a rescan sees the tree as it is
      scan_dir(kRoot, Mode::Rescan, true);
      log_->warn("rescan after lost events done: {} bypass change(s) shipped so far",
                 bypass_.load());
    }
    ship_suspects(ScanClock::now());
    if (!unwatched_.empty() && ScanClock::now() >= next_poll_) poll_unwatched();
    book_.expire_own(ScanClock::now());
  }
  flush();
}

// At stop the FUSE loop has ended: no own change can still be on its way to
// record(), so whatever is pending is handled now instead of being lost.
void Scanner::flush() {
  read_events(ScanClock::now());
  while (!events_.empty()) {
    Event e = std::move(events_.front());
    events_.pop_front();
    handle(e);
  }
  expire_moves(ScanClock::time_point::max());
  rescan_dirty();
  if (rescan_all_) {
    rescan_all_ = false;
    overflows_ += 1;
    book_.forget_own();
    scan_dir(kRoot, Mode::Rescan, true);
  }
  ship_suspects(ScanClock::time_point::max());
}

// ---- the directory tree ----------------------------------------------------

std::string Scanner::dir_path(std::uint64_t id) const {
  std::vector<const std::string*> parts;
  for (std::uint64_t d = id; d != kRoot && d != 0;) {
    auto it = dirs_.find(d);
    if (it == dirs_.end()) break;
    parts.push_back(&it->second.name);
    d = it->second.parent;
  }
  std::string out;
  for (auto p = parts.rbegin(); p != parts.rend(); ++p) {
    if (!out.empty()) out.push_back('/');
    out += **p;
  }
  return out;
}

std::string Scanner::child_path(std::uint64_t dir, const std::string& name) const {
  std::string p = dir_path(dir);
  if (!p.empty()) p.push_back('/');
  return p + name;
}

bool Scanner::lstat_at(const std::string& path, struct stat& st) const {
  return ::fstatat(root_, at(book_.translate(path)), &st, AT_SYMLINK_NOFOLLOW) == 0;
}

void Scanner::watch(std::uint64_t id, int dirfd) {
  Dir& d = dirs_.at(id);
  if (d.wd >= 0) return;
  const std::string proc = "/proc/self/fd/" + std::to_string(dirfd);
  const int wd = ::inotify_add_watch(inotify_.get(), proc.c_str(), kMask);
  if (wd == -1) {
    const int e = errno;
    if (unwatched_.insert(id).second) polled_ += 1;
    if (e == ENOSPC && !limit_warned_) {
      limit_warned_ = true;
      log_->warn("inotify watch limit reached (fs.inotify.max_user_watches={}) at {}: "
                 "directories without a watch are re-listed every {}ms instead",
                 read_sysctl("/proc/sys/fs/inotify/max_user_watches"), quoted(dir_path(id)),
                 opt_.poll_interval.count());
    } else if (e != ENOSPC) {
      log_->warn("cannot watch {}: {}; re-listing it every {}ms instead", quoted(dir_path(id)),
                 std::strerror(e), opt_.poll_interval.count());
    }
    if (next_poll_ == ScanClock::time_point{}) next_poll_ = ScanClock::now() + opt_.poll_interval;
    return;
  }
  // The same inode watched under another (stale) node: this one is current.
  if (auto it = wd_dir_.find(wd); it != wd_dir_.end() && it->second != id) {
    if (auto old = dirs_.find(it->second); old != dirs_.end()) old->second.wd = -1;
    watched_ -= 1;
  }
  wd_dir_[wd] = id;
  d.wd = wd;
  watched_ += 1;
  if (unwatched_.erase(id) > 0) polled_ -= 1;
}

std::uint64_t Scanner::new_dir(std::uint64_t parent, const std::string& name) {
  const std::uint64_t id = next_id_++;
  Dir d;
  d.parent = parent;
  d.name = name;
  dirs_.emplace(id, std::move(d));
  return id;
}

void Scanner::drop_dir(std::uint64_t id) {
  auto it = dirs_.find(id);
  if (it == dirs_.end() || id == kRoot) return;
  std::vector<std::uint64_t> subdirs;
  for (const auto& [n, ch] : it->second.children)
    if (ch.is_dir) subdirs.push_back(ch.dir);
  if (it->second.wd >= 0) {
    (void)::inotify_rm_watch(inotify_.get(), it->second.wd);  // IN_IGNORED follows
    wd_dir_.erase(it->second.wd);
    watched_ -= 1;
  }
  if (unwatched_.erase(id) > 0) polled_ -= 1;
  dirs_.erase(it);
  for (std::uint64_t s : subdirs) drop_dir(s);
}

void Scanner::drop_child(std::uint64_t dir, const std::string& name) {
  auto d = dirs_.find(dir);
  if (d == dirs_.end()) return;
  auto it = d->second.children.find(name);
  if (it == d->second.children.end()) return;
  const Child ch = it->second;
  d->second.children.erase(it);
  if (ch.is_dir) drop_dir(ch.dir);
}

// Lists a directory (watching it first, so nothing created meanwhile is
// missed) and brings the tree and the ctime book level with it:
//  Baseline  the startup walk: learn every ctime, report nothing;
//  Fresh     a directory that just appeared: report what is not the mount's own;
//  Rescan    after lost events or for a polled directory: report what changed.
void Scanner::scan_dir(std::uint64_t id, Mode mode, bool recurse) {
  if (!dirs_.count(id)) return;
  const std::string path = dir_path(id);
  Fd fd(::openat(root_, at(book_.translate(path)), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.valid()) return;  // gone or replaced meanwhile: its parent's events say so
  watch(id, fd.get());
  DIR* dp = ::fdopendir(::dup(fd.get()));
  if (dp == nullptr) return;
  std::vector<std::pair<std::string, struct stat>> entries;
  while (dirent* de = ::readdir(dp)) {
    const char* n = de->d_name;
    if (n[0] == '.' && (n[1] == '\0' || (n[1] == '.' && n[2] == '\0'))) continue;
    struct stat st {};
    if (::fstatat(fd.get(), n, &st, AT_SYMLINK_NOFOLLOW) == 0) entries.emplace_back(n, st);
  }
  ::closedir(dp);
  std::set<std::string> seen;
  for (const auto& [name, st] : entries) {
    seen.insert(name);
    const bool is_dir = S_ISDIR(st.st_mode);
    auto& children = dirs_.at(id).children;
    auto it = children.find(name);
    if (mode == Mode::Baseline) {
      book_.learn(st.st_ino, ctime_ns(st));
      Child ch{st.st_ino, is_dir, 0};
      if (is_dir) ch.dir = new_dir(id, name);
      children[name] = ch;
      if (is_dir && recurse) scan_dir(ch.dir, Mode::Baseline, true);
      continue;
    }
    if (it == children.end() || it->second.ino != st.st_ino || it->second.is_dir != is_dir) {
      if (it != children.end()) drop_child(id, name);
      const std::string p = path.empty() ? name : path + "/" + name;
      appeared(id, name, st, book_.consume_own(OwnKind::Create, p) || known(st));
      continue;
    }
    if (mode == Mode::Rescan) {
      check(path.empty() ? name : path + "/" + name, st);
      if (is_dir && recurse) scan_dir(it->second.dir, Mode::Rescan, true);
    }
  }
  if (mode == Mode::Baseline) return;
  std::vector<std::string> gone;
  for (const auto& [name, ch] : dirs_.at(id).children)
    if (!seen.count(name)) gone.push_back(name);
  for (const std::string& name : gone) vanished(id, name);
}

// An entry showed up at dir/name (created, moved in, found by a rescan).
void Scanner::appeared(std::uint64_t dir, const std::string& name, const struct stat& st,
                       bool own) {
  const std::string p = child_path(dir, name);
  Child ch{st.st_ino, S_ISDIR(st.st_mode), 0};
  if (own) {
    own_ += 1;
  } else {
    bypass_ += 1;
    log_->debug("bypass: created {}", quoted(p));
    forward(Change{ChangeKind::Created, p});
    book_.learn(st.st_ino, ctime_ns(st));  // the Created ships the state from here on
    invalidate_entry(dir, name);
  }
  if (ch.is_dir) ch.dir = new_dir(dir, name);
  dirs_.at(dir).children[name] = ch;
  if (ch.is_dir) scan_dir(ch.dir, Mode::Fresh, true);  // what was made before the watch
}

void Scanner::vanished(std::uint64_t dir, const std::string& name) {
  const std::string p = child_path(dir, name);
  if (book_.consume_own(OwnKind::Remove, p)) {
    own_ += 1;
  } else {
    bypass_ += 1;
    log_->debug("bypass: removed {}", quoted(p));
    // Reported as "this path changed" (an exist mark: the target gets the
    // state found when it ships), not as Removed: this report is late, and a
    // Removed would drop the marks below a name the mount may have used
    // again meanwhile (a directory made anew, files created in it).
    forward(Change{ChangeKind::Created, p});
    invalidate_entry(dir, name);
  }
  drop_child(dir, name);
}

// An entry the mount itself made or moved: a file in a state it reported; a
// directory it reported at all (every entry made in a directory moves its
// ctime, and those are not stamps of the directory).
bool Scanner::known(const struct stat& st) const {
  return S_ISDIR(st.st_mode) ? book_.known_inode(st.st_ino) : book_.known(st.st_ino, ctime_ns(st));
}

// The object at path has ctime st: if that state is not accounted for, it is
// a suspect (shipped by ship_suspects unless the mount reports it in time).
void Scanner::check(const std::string& path, const struct stat& st) {
  std::uint64_t seen = 0;
  std::string cur = book_.translate(path, &seen);
  if (!book_.suspect(st.st_ino, ctime_ns(st), std::move(cur), S_ISREG(st.st_mode),
                     ScanClock::now(), seen))
    own_ += 1;
}

void Scanner::ship_suspects(ScanClock::time_point now) {
  for (Suspect& s : book_.take_expired(now)) {
    s.path = book_.translate_since(s.path, s.moves_seen);
    bypass_ += 1;
    if (s.unsure) unsure_ += 1;
    log_->debug("bypass: {} {}{}", s.content ? "content of" : "metadata of",
                        quoted(s.path), s.unsure ? " (unsure)" : "");
    next_.record(Change{s.content ? ChangeKind::Content : ChangeKind::Meta, s.path});
    if (cache_ != nullptr) cache_->invalidate_node(s.path);
  }
}

// Directories where events and the tree disagreed: list them (and below)
// again; whatever differs ships as state (Created/Removed/Content).
void Scanner::rescan_dirty() {
  const std::set<std::uint64_t> ids = std::move(dirty_);
  dirty_.clear();
  dirty_since_ = {};
  if (!ids.empty()) log_->debug("re-listing {} directories after unclear events", ids.size());
  for (std::uint64_t id : ids) {
    unclear_ += 1;
    scan_dir(id, Mode::Rescan, true);
  }
}

void Scanner::poll_unwatched() {
  const std::vector<std::uint64_t> ids(unwatched_.begin(), unwatched_.end());
  log_->debug("polling {} unwatched directories", ids.size());
  for (std::uint64_t id : ids) scan_dir(id, Mode::Rescan, false);
  next_poll_ = ScanClock::now() + opt_.poll_interval;
  if (unwatched_.empty()) {
    limit_warned_ = false;
    log_->info("every directory has a watch again; polling stopped");
  }
}

// c as the scanner's tree names it, sent under the names the journal has now.
void Scanner::forward(Change c) {
  c.path = book_.translate(c.path);
  if (!c.to_path.empty()) c.to_path = book_.translate(c.to_path);
  next_.record(c);
}

void Scanner::invalidate_entry(std::uint64_t dir, const std::string& name) {
  if (cache_ != nullptr) cache_->invalidate_entry(book_.translate(dir_path(dir)), name);
}

// ---- events --------------------------------------------------------------

void Scanner::read_events(ScanClock::time_point now) {
  alignas(inotify_event) char buf[64 * 1024];
  while (true) {
    const ssize_t n = ::read(inotify_.get(), buf, sizeof buf);
    if (n <= 0) return;
    for (ssize_t off = 0; off < n;) {
      const auto* ev = reinterpret_cast<const inotify_event*>(buf + off);
      Event e;
      e.wd = ev->wd;
      e.mask = ev->mask;
      e.cookie = ev->cookie;
      if (ev->len > 0) e.name = ev->name;  // NUL-padded
      e.due = now + opt_.event_delay;
      events_.push_back(std::move(e));
      off += static_cast<ssize_t>(sizeof(inotify_event) + ev->len);
    }
    if (events_.size() > kMaxBacklog) {
      log_->warn("{} inotify events waiting: dropping them and rescanning the whole tree",
                 events_.size());
      events_.clear();
      moves_.clear();
      rescan_all_ = true;
    }
  }
}

void Scanner::handle(const Event& e) {
  if (e.mask & IN_Q_OVERFLOW) {
    log_->warn("inotify queue overflowed (fs.inotify.max_queued_events={}): events were lost; "
               "rescanning the whole tree against the ctime book",
               read_sysctl("/proc/sys/fs/inotify/max_queued_events"));
    rescan_all_ = true;
    return;
  }
  auto w = wd_dir_.find(e.wd);
  if (w == wd_dir_.end()) return;
  const std::uint64_t dir = w->second;
  if (e.mask & IN_IGNORED) {
    if (auto d = dirs_.find(dir); d != dirs_.end()) {
      d->second.wd = -1;
      watched_ -= 1;
    }
    wd_dir_.erase(w);
    return;
  }
  if (e.name.empty()) {  // the directory itself: its parent's watch reports it, but not the root's
    struct stat st {};
    if (dir == kRoot && (e.mask & IN_ATTRIB) && lstat_at("", st)) check("", st);
    return;
  }
  const std::string p = child_path(dir, e.name);
  struct stat st {};
  if (e.mask & (IN_MODIFY | IN_ATTRIB)) {
    if (lstat_at(p, st)) check(p, st);
  } else if (e.mask & IN_CREATE) {
    if (!lstat_at(p, st)) {  // gone again (removed or moved on): its later events follow
      if (book_.consume_own(OwnKind::Create, p)) {
        own_ += 1;
      } else {  // a rename of it needs its creation journaled first
        bypass_ += 1;
        forward(Change{ChangeKind::Created, p});
        dirty_.insert(dir);  // what it became is seen when the queue settles
      }
      return;
    }
    auto& children = dirs_.at(dir).children;
    auto it = children.find(e.name);
    if (it != children.end() && it->second.ino == st.st_ino) return;  // a scan saw it already
    if (it != children.end()) drop_child(dir, e.name);
    appeared(dir, e.name, st, book_.consume_own(OwnKind::Create, p) || known(st));
  } else if (e.mask & IN_DELETE) {
    vanished(dir, e.name);
  } else if (e.mask & IN_MOVED_FROM) {
    moves_[e.cookie] = MoveFrom{dir, e.name, e.due};
  } else if (e.mask & IN_MOVED_TO) {
    handle_moved_to(e, dir);
  }
}

void Scanner::handle_moved_to(const Event& e, std::uint64_t dir) {
  const std::string to = child_path(dir, e.name);
  auto mv = moves_.find(e.cookie);
  struct stat st {};
  if (mv == moves_.end()) {  // moved in from outside the tree
    if (!lstat_at(to, st)) return;
    drop_child(dir, e.name);
    appeared(dir, e.name, st, known(st));  // from a directory not watched yet: maybe ours
    return;
  }
  const MoveFrom from = mv->second;
  moves_.erase(mv);
  const std::string from_path = child_path(from.dir, from.name);
  const bool own_move = book_.consume_own(OwnKind::Move, from_path, to);
  // RENAME_EXCHANGE: inotify reports two moves, a->b then b->a.
  bool exchange = false;
  if (events_.size() >= 2) {
    const Event& e1 = events_[0];
    const Event& e2 = events_[1];
    auto w2 = wd_dir_.find(e2.wd);
    exchange = (e1.mask & IN_MOVED_FROM) && e1.wd == e.wd && e1.name == e.name &&
               (e2.mask & IN_MOVED_TO) && e2.cookie == e1.cookie && w2 != wd_dir_.end() &&
               w2->second == from.dir && e2.name == from.name;
  }
  auto& src_children = dirs_.at(from.dir).children;
  std::optional<Child> moved;
  if (auto it = src_children.find(from.name); it != src_children.end()) moved = it->second;
  if (exchange) {
    events_.pop_front();
    events_.pop_front();
    auto& dst_children = dirs_.at(dir).children;
    std::optional<Child> other;
    if (auto it = dst_children.find(e.name); it != dst_children.end()) other = it->second;
    dirs_.at(from.dir).children.erase(from.name);
    dirs_.at(dir).children.erase(e.name);
    if (moved) {
      dirs_.at(dir).children[e.name] = *moved;
      if (moved->is_dir) {
        dirs_.at(moved->dir).parent = dir;
        dirs_.at(moved->dir).name = e.name;
      }
    }
    if (other) {
      dirs_.at(from.dir).children[from.name] = *other;
      if (other->is_dir) {
        dirs_.at(other->dir).parent = from.dir;
        dirs_.at(other->dir).name = from.name;
      }
    }
  } else {
    if (moved) src_children.erase(from.name);
    drop_child(dir, e.name);  // replaced
    bool untracked = false;
    if (!moved && lstat_at(to, st)) {
      moved = Child{st.st_ino, S_ISDIR(st.st_mode), 0};
      untracked = true;
    }
    if (moved) {
      if (moved->is_dir && moved->dir == 0) moved->dir = new_dir(dir, e.name);
      // A directory the tree did not know, or a name that holds another
      // inode by now: the tree may be wrong here; list both sides again.
      if (!own_move && (untracked || (lstat_at(to, st) && st.st_ino != moved->ino))) {
        dirty_.insert(from.dir);
        dirty_.insert(dir);
        if (moved->is_dir) dirty_.insert(moved->dir);
      }
      if (moved->is_dir) {
        dirs_.at(moved->dir).parent = dir;
        dirs_.at(moved->dir).name = e.name;
      }
      dirs_.at(dir).children[e.name] = *moved;
    }
  }
  bool own = own_move;
  if (exchange) own = book_.consume_own(OwnKind::Move, to, from_path) && own;
  if (own) {
    own_ += 1;
    return;
  }
  bypass_ += 1;
  log_->debug("bypass: renamed {} -> {}{}", quoted(from_path), quoted(to),
                      exchange ? " (exchange)" : "");
  forward(Change{ChangeKind::Renamed, from_path, to, 0, 0, exchange ? kRenameExchange : 0u});
  invalidate_entry(from.dir, from.name);
  invalidate_entry(dir, e.name);
  // A rename changes the moved inode's ctime: that state is the rename's,
  // but a write just after it would share the same stat, so a file is
  // checked like any other change (a delta that finds nothing to send).
  if (lstat_at(to, st)) check(to, st);
  if (exchange && lstat_at(from_path, st)) check(from_path, st);
  // The journal learns of this rename late: a change made through the mount
  // under the old name before it may have been taken for shipping after it,
  // found nothing there and been dropped. Re-ship what lies below (deltas).
  if (moved && moved->is_dir) reship_files(moved->dir);
  if (exchange) {
    const auto& back = dirs_.at(from.dir).children;
    if (auto it = back.find(from.name); it != back.end() && it->second.is_dir)
      reship_files(it->second.dir);
  }
}

void Scanner::reship_files(std::uint64_t id) {
  auto d = dirs_.find(id);
  if (d == dirs_.end()) return;
  for (const auto& [name, ch] : d->second.children) {
    if (ch.is_dir) {
      reship_files(ch.dir);
    } else {
      forward(Change{ChangeKind::Content, child_path(id, name)});
    }
  }
}

// A MOVED_FROM whose MOVED_TO never came: moved out of the tree.
void Scanner::expire_moves(ScanClock::time_point now) {
  for (auto it = moves_.begin(); it != moves_.end();) {
    const std::uint32_t cookie = it->first;
    if ((now != ScanClock::time_point::max() && it->second.due + opt_.event_delay > now) ||
        std::any_of(events_.begin(), events_.end(),
                    [&](const Event& e) { return e.cookie == cookie; })) {
      ++it;
      continue;
    }
    const MoveFrom m = it->second;
    it = moves_.erase(it);
    if (!dirs_.count(m.dir)) continue;
    if (book_.consume_own_move_from(child_path(m.dir, m.name))) {
      own_ += 1;  // moved by the mount into a directory not watched yet: its scan sees it
      drop_child(m.dir, m.name);
      continue;
    }
    vanished(m.dir, m.name);
  }
}

}  // namespace mirrorfs::replicate
