#include "tests/support/posix_script.hpp"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <sstream>
#include <thread>

#include "fs/api/fd.hpp"
#include "fs/api/result.hpp"
#include "tests/support/process.hpp"

namespace mirrorfs::test {

Outcome R(long ret) {
  const int e = errno;
  Outcome o;
  o.ret = ret;
  o.err = ret < 0 ? e : 0;
  return o;
}

Outcome R(long ret, std::string extra) {
  Outcome o = R(ret);
  o.extra = std::move(extra);
  return o;
}

std::string norm_stat(const struct stat& st) {
  std::ostringstream s;
  const char* type = "?";
  switch (st.st_mode & S_IFMT) {
    case S_IFREG: type = "file"; break;
    case S_IFDIR: type = "dir"; break;
    case S_IFLNK: type = "symlink"; break;
    case S_IFIFO: type = "fifo"; break;
    case S_IFSOCK: type = "socket"; break;
    case S_IFCHR: type = "chardev"; break;
    case S_IFBLK: type = "blockdev"; break;
    default: break;
  }
  s << type << " " << std::oct << (st.st_mode & 07777) << std::dec << " n" << st.st_nlink << " u"
    << st.st_uid << " g" << st.st_gid << " s" << st.st_size;
  if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
    s << " rdev " << major(st.st_rdev) << "," << minor(st.st_rdev);
  }
  return s.str();
}

std::string Ctx::p(std::string_view rel) const {
  return rel.empty() ? root_ : root_ + "/" + std::string(rel);
}

int Ctx::fd(const std::string& name) const {
  auto it = fds_.find(name);
  return it == fds_.end() ? -1 : it->second;
}

Outcome Ctx::open(const std::string& name, std::string_view rel, int flags, mode_t mode) {
  const int f = ::open(p(rel).c_str(), flags | O_CLOEXEC, mode);
  Outcome o = R(f < 0 ? -1 : 0);
  if (f >= 0) {
    if (auto it = fds_.find(name); it != fds_.end()) ::close(it->second);
    fds_[name] = f;
  }
  return o;
}

Outcome Ctx::close(const std::string& name) {
  auto it = fds_.find(name);
  if (it == fds_.end()) return {-1, EBADF, "no such named fd"};
  const int f = it->second;
  fds_.erase(it);
  return R(::close(f));
}

Outcome Ctx::write(const std::string& name, std::string_view data) {
  return R(::write(fd(name), data.data(), data.size()));
}

Outcome Ctx::pwrite(const std::string& name, std::string_view data, off_t off) {
  return R(::pwrite(fd(name), data.data(), data.size(), off));
}

Outcome Ctx::read(const std::string& name, std::size_t n) {
  std::string buf(n, '\0');
  const ssize_t r = ::read(fd(name), buf.data(), n);
  Outcome o = R(r);
  if (r > 0) o.extra = buf.substr(0, static_cast<std::size_t>(r));
  return o;
}

Outcome Ctx::pread(const std::string& name, std::size_t n, off_t off) {
  std::string buf(n, '\0');
  const ssize_t r = ::pread(fd(name), buf.data(), n, off);
  Outcome o = R(r);
  if (r > 0) o.extra = buf.substr(0, static_cast<std::size_t>(r));
  return o;
}

Outcome Ctx::fstat(const std::string& name) {
  struct stat st {};
  Outcome o = R(::fstat(fd(name), &st));
  if (o.ret == 0) o.extra = norm_stat(st);
  return o;
}

Outcome Ctx::slurp(std::string_view rel) {
  Fd f(::open(p(rel).c_str(), O_RDONLY | O_CLOEXEC));
  if (!f.valid()) return R(-1);
  std::string out;
  char buf[8192];
  for (;;) {
    const ssize_t n = ::read(f.get(), buf, sizeof buf);
    if (n < 0) return R(-1);
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  return {static_cast<long>(out.size()), 0, out};
}

Outcome Ctx::put(std::string_view rel, std::string_view data, mode_t mode) {
  Fd f(::open(p(rel).c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, mode));
  if (!f.valid()) return R(-1);
  if (::write(f.get(), data.data(), data.size()) != static_cast<ssize_t>(data.size())) return R(-1);
  if (::fchmod(f.get(), mode) != 0) return R(-1);
  return R(::close(f.release()));
}

void Ctx::close_all() {
  for (auto& [name, f] : fds_) ::close(f);
  fds_.clear();
}

namespace {

void write_all(int fd, const void* data, std::size_t n) {
  const char* c = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, c, n);
    if (w <= 0) return;
    c += w;
    n -= static_cast<std::size_t>(w);
  }
}

}  // namespace

Outcome in_child(const std::function<Outcome()>& fn, bool as_nobody) {
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return {-1, errno, "pipe2 failed"};
  Fd rd(pipefd[0]), wr(pipefd[1]);
  const pid_t pid = ::fork();
  if (pid < 0) return {-1, errno, "fork failed"};
  if (pid == 0) {
    Outcome o;
    if (as_nobody && (::setgroups(0, nullptr) != 0 || ::setresgid(65534, 65534, 65534) != 0 ||
                      ::setresuid(65534, 65534, 65534) != 0)) {
      o = {-1, errno, "could not become nobody"};
    } else {
      o = fn();
    }
    const std::uint64_t len = o.extra.size();
    write_all(wr.get(), &o.ret, sizeof o.ret);
    write_all(wr.get(), &o.err, sizeof o.err);
    write_all(wr.get(), &len, sizeof len);
    write_all(wr.get(), o.extra.data(), o.extra.size());
    _exit(0);
  }
  wr.reset();
  std::string got;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  bool timed_out = false;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd pf{rd.get(), POLLIN, 0};
    if (::poll(&pf, 1, static_cast<int>(left.count())) <= 0) continue;
    char buf[4096];
    const ssize_t n = ::read(rd.get(), buf, sizeof buf);
    if (n <= 0) break;
    got.append(buf, static_cast<std::size_t>(n));
  }
  if (timed_out) ::kill(pid, SIGKILL);
  const auto st = wait_pid_for(pid, std::chrono::seconds(10));
  if (!st) {
    ::kill(pid, SIGKILL);
    (void)wait_pid_for(pid, std::chrono::seconds(5));
  }
  if (timed_out) return {-1, ETIMEDOUT, "child timed out"};
  Outcome o;
  constexpr std::size_t head = sizeof o.ret + sizeof o.err + sizeof(std::uint64_t);
  if (got.size() < head) return {-1, EPROTO, "child died: " + describe_status(st.value_or(-1))};
  std::uint64_t len = 0;
  std::memcpy(&o.ret, got.data(), sizeof o.ret);
  std::memcpy(&o.err, got.data() + sizeof o.ret, sizeof o.err);
  std::memcpy(&len, got.data() + sizeof o.ret + sizeof o.err, sizeof len);
  o.extra = got.substr(head, static_cast<std::size_t>(len));
  return o;
}

namespace {

struct Snap {
  bool exists = false;
  int err = 0;
  struct stat st {};
};

Snap snap(const Ctx& ctx, const std::string& rel) {
  Snap s;
  s.exists = ::lstat(ctx.p(rel).c_str(), &s.st) == 0;
  if (!s.exists) s.err = errno;
  return s;
}

bool same_time(const timespec& a, const timespec& b) {
  return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

std::string printable(const std::string& s) {
  if (s.size() > 160) return mirrorfs::quoted(s.substr(0, 160)) + "...(" + std::to_string(s.size()) + ")";
  return mirrorfs::quoted(s);
}

}  // namespace

std::vector<std::string> run_script(Ctx& ctx, const std::vector<Step>& steps) {
  std::vector<std::string> out;
  for (const Step& step : steps) {
    // Coarse kernel timestamps: let a tick pass, so "mtime changed" is a
    // property of the step rather than of the clock.
    std::this_thread::sleep_for(std::chrono::milliseconds(12));
    std::vector<Snap> before;
    for (const std::string& rel : step.paths) before.push_back(snap(ctx, rel));
    const Outcome o = step.run(ctx);
    std::ostringstream line;
    line << step.name << ": ret=" << o.ret;
    if (o.ret < 0) line << " errno=" << strerrorname_np(o.err);
    if (!o.extra.empty()) line << " extra=" << printable(o.extra);
    for (std::size_t i = 0; i < step.paths.size(); ++i) {
      const std::string& rel = step.paths[i];
      const Snap after = snap(ctx, rel);
      line << " | " << (rel.empty() ? std::string("<root>") : rel) << ": ";
      if (!after.exists) {
        line << "absent(" << strerrorname_np(after.err) << ")";
        continue;
      }
      line << norm_stat(after.st);
      if (before[i].exists && before[i].st.st_ino != after.st.st_ino) {
        line << " replaced";  // another inode now: its times say nothing about the step
      } else if (before[i].exists) {
        line << " mtime" << (same_time(before[i].st.st_mtim, after.st.st_mtim) ? "=" : "+")
             << " ctime" << (same_time(before[i].st.st_ctim, after.st.st_ctim) ? "=" : "+");
      } else {
        line << " new";
      }
    }
    out.push_back(line.str());
  }
  return out;
}

}  // namespace mirrorfs::test
