// Persistent state files and the heartbeat thread (see state.hpp).
//
// File format (text header, length-prefixed raw paths, since names may hold
// newlines or invalid UTF-8):
//   mirrorfs-state 1
//   state clean|dirty
//   heartbeat <ns>
//   suspect_since <ns>
//   overflow 0|1
//   source <len>:<bytes>
//   target <len>:<bytes>
//   paths <count>
//   <len>:<bytes>      (count times, each followed by '\n')
//   end
#include "replicate/state.hpp"


#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <spdlog/spdlog.h>

#include <charconv>
#include <cstdio>
#include <ctime>
#include <cstring>
#include <set>

#include "fs/api/fd.hpp"

namespace mirrorfs::replicate {
namespace {

std::int64_t now_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

void put_blob(std::string& out, std::string_view s) {
  out += std::to_string(s.size());
  out += ':';
  out += s;
  out += '\n';
}

class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  bool line(std::string_view& out) {
    const auto nl = in_.find('\n');
    if (nl == std::string_view::npos) return false;
    out = in_.substr(0, nl);
    in_.remove_prefix(nl + 1);
    return true;
  }
  bool keyword(std::string_view key, std::string_view& value) {
    std::string_view l;
    if (!line(l) || !l.starts_with(key) || l.size() <= key.size() || l[key.size()] != ' ') return false;
    value = l.substr(key.size() + 1);
    return true;
  }
  bool number(std::string_view key, std::int64_t& v) {
    std::string_view s;
    if (!keyword(key, s)) return false;
    const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    return ec == std::errc() && p == s.data() + s.size();
  }
  bool blob(std::string& out) {
    const auto colon = in_.find(':');
    if (colon == std::string_view::npos || colon > 20) return false;
    std::size_t n = 0;
    const auto [p, ec] = std::from_chars(in_.data(), in_.data() + colon, n);
    if (ec != std::errc() || p != in_.data() + colon || n > in_.size() - colon - 1) return false;
    if (colon + 1 + n >= in_.size() || in_[colon + 1 + n] != '\n') return false;
    out.assign(in_.substr(colon + 1, n));
    in_.remove_prefix(colon + 2 + n);
    return true;
  }
  bool keyed_blob(std::string_view key, std::string& out) {
    if (!in_.starts_with(key) || in_.size() <= key.size() || in_[key.size()] != ' ') return false;
    in_.remove_prefix(key.size() + 1);
    return blob(out);
  }
  [[nodiscard]] bool empty() const { return in_.empty(); }

 private:
  std::string_view in_;
};

tl::unexpected<Error> bad_state(const char* what) {
  return fail(EINVAL, std::string("malformed state file: ") + what);
}

Result<void> write_all(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail_errno("write", path);
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return {};
}

std::string dir_of(const std::string& path) {
  const auto i = path.rfind('/');
  return i == std::string::npos ? "." : (i == 0 ? "/" : path.substr(0, i));
}

}  // namespace

std::string encode_state(const PersistedState& s) {
  std::string out = "mirrorfs-state 1\n";
  out += std::string("state ") + (s.clean ? "clean" : "dirty") + "\n";
  out += "heartbeat " + std::to_string(s.heartbeat_ns) + "\n";
  out += "suspect_since " + std::to_string(s.suspect_since_ns) + "\n";
  out += std::string("overflow ") + (s.overflow ? "1" : "0") + "\n";
  out += "source ";
  put_blob(out, s.source);
  out += "target ";
  put_blob(out, s.target);
  out += "paths " + std::to_string(s.paths.size()) + "\n";
  for (const std::string& p : s.paths) put_blob(out, p);
  out += "end\n";
  return out;
}

Result<PersistedState> decode_state(std::string_view data) {
  Reader r(data);
  PersistedState s;
  std::string_view v;
  std::int64_t overflow = 0, count = 0;
  if (!r.line(v) || v != "mirrorfs-state 1") return bad_state("header");
  if (!r.keyword("state", v) || (v != "clean" && v != "dirty")) return bad_state("state");
  s.clean = v == "clean";
  if (!r.number("heartbeat", s.heartbeat_ns) || !r.number("suspect_since", s.suspect_since_ns) ||
      !r.number("overflow", overflow) || (overflow != 0 && overflow != 1))
    return bad_state("header fields");
  s.overflow = overflow == 1;
  if (!r.keyed_blob("source", s.source) || !r.keyed_blob("target", s.target)) return bad_state("names");
  if (!r.number("paths", count) || count < 0 || static_cast<std::size_t>(count) > data.size())
    return bad_state("path count");
  s.paths.reserve(static_cast<std::size_t>(count));
  for (std::int64_t i = 0; i < count; ++i) {
    std::string p;
    if (!r.blob(p)) return bad_state("path");
    s.paths.push_back(std::move(p));
  }
  if (!r.line(v) || v != "end" || !r.empty()) return bad_state("end");
  return s;
}

Result<void> prepare_state_dir(const std::string& dir) {
  if (dir.empty()) return fail(EINVAL, "state_dir is empty");
  // mkdir -p, the last component 0700.
  for (std::size_t i = 1; i <= dir.size(); ++i) {
    if (i != dir.size() && dir[i] != '/') continue;
    const std::string part = dir.substr(0, i);
    const mode_t mode = i == dir.size() ? 0700 : 0755;
    if (::mkdir(part.c_str(), mode) == -1 && errno != EEXIST)
      return fail_errno("state_dir: mkdir", part);
  }
  struct stat st {};
  if (::stat(dir.c_str(), &st) == -1) return fail_errno("state_dir", dir);
  if (!S_ISDIR(st.st_mode)) return fail(ENOTDIR, "state_dir " + quoted(dir) + " is not a directory");
  const std::string probe = dir + "/.probe." + std::to_string(::getpid());
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return fail_errno("state_dir: cannot write in", dir);
  ::close(fd);
  ::unlink(probe.c_str());
  return {};
}

std::string state_path(const std::string& dir, const std::string& source, const std::string& target_url) {
  std::string key = source;
  key.push_back('\0');
  key += target_url;
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx",
                static_cast<unsigned long long>(XXH64(key.data(), key.size(), 0)));
  return dir + "/" + hex + ".state";
}

Result<std::optional<PersistedState>> load_state(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ENOENT) return std::optional<PersistedState>();
    return fail_errno("open", path);
  }
  std::string data;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail_errno("read", path);
    if (n == 0) break;
    data.append(buf, static_cast<std::size_t>(n));
  }
  Result<PersistedState> s = decode_state(data);
  if (!s) return fail(s.error().code, s.error().what + " (" + quoted(path) + ")");
  return std::optional<PersistedState>(std::move(*s));
}

Result<void> save_state(const std::string& path, const PersistedState& s) {
  const std::string tmp = path + ".tmp";
  {
    Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!fd.valid()) return fail_errno("create", tmp);
    if (Result<void> w = write_all(fd.get(), encode_state(s), tmp); !w) return w;
    if (::fsync(fd.get()) == -1) return fail_errno("fsync", tmp);
  }
  if (::rename(tmp.c_str(), path.c_str()) == -1) return fail_errno("rename", tmp);
  Fd dir(::open(dir_of(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir.valid()) (void)::fsync(dir.get());
  return {};
}

std::string Recovery::describe() const {
  switch (previous) {
    case Previous::None: return "no previous state (first run)";
    case Previous::Clean: return "previous run unmounted cleanly";
    case Previous::Dirty: break;
  }
  std::string out = "previous run did not unmount cleanly (crash?): " + std::to_string(paths.size()) +
                    (overflow ? "+ (overflowed)" : "") + " path(s) were pending";
  if (suspect_since_ns != 0) {
    const std::time_t t = static_cast<std::time_t>(suspect_since_ns / 1'000'000'000);
    std::tm tm{};
    ::localtime_r(&t, &tm);
    char when[32];
    std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
    out += std::string(", entries changed since ") + when + "." +
           std::to_string(suspect_since_ns % 1'000'000'000) + " get checked";
  }
  return out;
}

StateKeeper::StateKeeper(std::string path, std::string source, std::string target,
                         std::shared_ptr<spdlog::logger> log)
    : path_(std::move(path)), source_(std::move(source)), target_(std::move(target)), log_(std::move(log)) {}

StateKeeper::~StateKeeper() {
  if (thread_.joinable()) {
    thread_.request_stop();
    thread_.join();
  }
}

Result<Recovery> StateKeeper::open() {
  Result<std::optional<PersistedState>> prev = load_state(path_);
  Recovery rec;
  if (!prev) {
    if (prev.error().code != EINVAL) return tl::unexpected(prev.error());
    // Unreadable contents: assume the worst short of a full checksum pass.
    if (log_) log_->warn("state {}: {}; treating the previous run as a crash", quoted(path_), prev.error().what);
    rec.previous = Recovery::Previous::Dirty;
    rec.overflow = true;
  } else if (prev->has_value()) {
    const PersistedState& p = **prev;
    if (p.clean) {
      rec.previous = Recovery::Previous::Clean;
    } else {
      rec.previous = Recovery::Previous::Dirty;
      rec.paths = p.paths;
      rec.overflow = p.overflow;
      rec.suspect_since_ns = p.heartbeat_ns - kSuspectMarginNs;
      if (p.suspect_since_ns != 0) rec.suspect_since_ns = std::min(rec.suspect_since_ns, p.suspect_since_ns);
    }
  }
  recovery_ = std::move(rec);
  carrying_ = recovery_.previous == Recovery::Previous::Dirty;
  if (Result<void> w = write_dirty(); !w) return tl::unexpected(w.error());
  return recovery_;
}

void StateKeeper::start(const Journal& j, Journal::TargetId t) {
  journal_ = &j;
  id_ = t;
  if (!thread_.joinable()) thread_ = std::jthread([this](std::stop_token st) { run(st); });
}

void StateKeeper::recovered() {
  carrying_ = false;
  force_ = true;
}

Result<void> StateKeeper::write_dirty() {
  PersistedState s;
  s.clean = false;
  s.source = source_;
  s.target = target_;
  if (journal_ != nullptr) {
    Journal::PathSnapshot snap = journal_->pending_paths(id_, kMaxPersistedPaths);
    s.paths = std::move(snap.paths);
    s.overflow = snap.overflow;
  }
  if (carrying_.load()) {
    std::set<std::string> seen(s.paths.begin(), s.paths.end());
    for (const std::string& p : recovery_.paths) {
      if (s.paths.size() >= kMaxPersistedPaths) {
        s.overflow = true;
        break;
      }
      if (seen.insert(p).second) s.paths.push_back(p);
    }
    s.overflow = s.overflow || recovery_.overflow;
    s.suspect_since_ns = recovery_.suspect_since_ns;
  }
  std::lock_guard lk(write_mu_);
  s.heartbeat_ns = now_ns();
  return save_state(path_, s);
}

void StateKeeper::run(std::stop_token st) noexcept {
  ::pthread_setname_np(::pthread_self(), "mfs-state");
  std::uint64_t last_seq = ~std::uint64_t{0}, last_acked = ~std::uint64_t{0};
  std::size_t last_pending = 0;
  while (!st.stop_requested()) {
    {
      std::unique_lock lk(sleep_mu_);
      sleep_cv_.wait_for(lk, st, std::chrono::seconds(1), [] { return false; });
    }
    if (st.stop_requested()) break;
    try {
      const QueueStats q = journal_->stats(id_);
      const std::size_t pending = q.pending + q.in_flight;
      if (!force_.exchange(false) && q.last_seq == last_seq && q.acked_seq == last_acked &&
          pending == last_pending)
        continue;
      last_seq = q.last_seq;
      last_acked = q.acked_seq;
      last_pending = pending;
      if (Result<void> w = write_dirty(); !w) {
        if (!warned_ && log_)
          log_->warn("state {}: {}: {}; a crash now would need a full reconcile", quoted(path_),
                     w.error().what, std::strerror(w.error().code));
        warned_ = true;
        last_seq = ~std::uint64_t{0};  // try again next second
      } else {
        warned_ = false;
      }
    } catch (...) {  // bad_alloc: try again next second
      last_seq = ~std::uint64_t{0};
    }
  }
}

void StateKeeper::finish(bool clean) {
  if (finished_) return;
  finished_ = true;
  if (thread_.joinable()) {
    thread_.request_stop();
    thread_.join();
  }
  Result<void> w;
  if (clean) {
    PersistedState s;
    s.clean = true;
    s.source = source_;
    s.target = target_;
    s.heartbeat_ns = now_ns();
    std::lock_guard lk(write_mu_);
    w = save_state(path_, s);
  } else {
    w = write_dirty();
  }
  if (!w && log_)
    log_->warn("state {}: {}: {}; the next mount will reconcile as after a crash", quoted(path_),
               w.error().what, std::strerror(w.error().code));
}

}  // namespace mirrorfs::replicate
