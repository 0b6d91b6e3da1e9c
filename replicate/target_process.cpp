// The process transport: a child (ssh, or the agent itself) speaking frames
// over a socketpair on its stdin/stdout; its stderr is a pipe we keep the
// tail of, for error messages. A socketpair rather than two pipes lets us
// send with MSG_NOSIGNAL: a dead child is EPIPE, never a SIGPIPE that kills
// the daemon. exchange() writes and reads in one poll loop, so a child whose
// replies fill the socket while we still write can never deadlock us.
// The child gets its own process group (a ^C on the daemon's terminal does
// not kill it mid-drain) and default signal dispositions. The destructor
// closes the socket, gives the child a moment to exit on EOF, then kills it
// by pid and reaps it.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "fs/api/fd.hpp"
#include "replicate/transport.hpp"

extern char** environ;

namespace mirrorfs::replicate {
namespace {

constexpr std::size_t kReadChunk = 256 * 1024;
constexpr std::size_t kStderrTail = 2048;

class ProcessTransport final : public Transport {
 public:
  ProcessTransport(pid_t pid, Fd sock, Fd err, Fd cancel, std::string name)
      : pid_(pid), sock_(std::move(sock)), err_(std::move(err)), cancel_(std::move(cancel)),
        name_(std::move(name)) {}
  ~ProcessTransport() override;
  ProcessTransport(const ProcessTransport&) = delete;
  ProcessTransport& operator=(const ProcessTransport&) = delete;

  Result<std::vector<Reply>> exchange(std::span<const Request> reqs) override;
  std::uint64_t bytes_sent() const noexcept override { return sent_; }
  std::uint64_t bytes_received() const noexcept override { return received_; }
  void set_idle_timeout(int seconds) { idle_ms_ = seconds * 1000; }
  void cancel() noexcept override {
    const std::uint64_t one = 1;
    (void)!::write(cancel_.get(), &one, sizeof one);
  }

 private:
  Result<void> parse_replies(std::vector<Reply>& out, std::size_t want);
  Result<void> pump(const std::string& out, std::size_t& wpos);
  void drain_stderr();
  tl::unexpected<Error> broken(int code, std::string why);

  pid_t pid_;
  Fd sock_, err_, cancel_;
  std::string name_;
  std::string in_;           // received, not yet parsed
  std::string stderr_tail_;  // last bytes the child wrote to stderr
  int idle_ms_ = kIdleTimeoutSeconds * 1000;
  bool broken_ = false;
  bool write_closed_ = false;  // the child stopped reading (EPIPE): read what it said
  std::atomic<std::uint64_t> sent_{0}, received_{0};
};

ProcessTransport::~ProcessTransport() {
  sock_.reset();  // EOF on the child's stdin: an agent exits cleanly
  err_.reset();
  if (pid_ <= 0) return;  // already reaped: never wait for or kill a reused pid
  for (int i = 0; i < 50; ++i) {
    const pid_t r = ::waitpid(pid_, nullptr, WNOHANG);
    if (r == pid_ || (r < 0 && errno != EINTR)) return;  // reaped (or not ours to reap)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(pid_, SIGKILL);
  while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
  }
}

void ProcessTransport::drain_stderr() {
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(err_.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    stderr_tail_.append(buf, static_cast<std::size_t>(n));
    if (stderr_tail_.size() > kStderrTail)
      stderr_tail_.erase(0, stderr_tail_.size() - kStderrTail);
  }
}

tl::unexpected<Error> ProcessTransport::broken(int code, std::string why) {
  broken_ = true;
  if (code == ECONNRESET || code == EPIPE) {
    drain_stderr();
    int status = 0;
    for (int i = 0; i < 20; ++i) {  // give it 200ms to exit, for the status in the message
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        why += WIFEXITED(status) ? "; exit status " + std::to_string(WEXITSTATUS(status))
                                 : "; killed by signal " + std::to_string(WTERMSIG(status));
        pid_ = -1;  // reaped: the destructor must not wait for (or kill) a reused pid
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    drain_stderr();
  }
  std::string tail = stderr_tail_;
  while (!tail.empty() && (tail.back() == '\n' || tail.back() == '\r')) tail.pop_back();
  if (const std::size_t nl = tail.rfind('\n'); nl != std::string::npos && tail.size() - nl > 8)
    tail.erase(0, nl + 1);  // the last line says most
  if (!tail.empty()) why += ": " + quoted(tail);
  return fail(code, name_ + ": " + why);
}

Result<void> ProcessTransport::parse_replies(std::vector<Reply>& out, std::size_t want) {
  std::size_t pos = 0;
  while (out.size() < want) {
    const std::string_view rest(in_.data() + pos, in_.size() - pos);
    Result<std::size_t> len = frame_length(rest);
    if (!len || (*len > 0 && rest[4] != static_cast<char>(kFrameReply)))
      return broken(EPROTO, "unexpected output from the agent (a login script printing to stdout?)");
    if (*len == 0) break;
    Result<Reply> r = decode_reply(rest.substr(kFrameHeader, *len - kFrameHeader));
    if (!r) return broken(EPROTO, r.error().what);
    out.push_back(std::move(*r));
    pos += *len;
  }
  in_.erase(0, pos);
  if (out.size() == want && !in_.empty()) return broken(EPROTO, "unsolicited data from the agent");
  return {};
}

// One poll round: send what the socket takes, read what it has.
Result<void> ProcessTransport::pump(const std::string& out, std::size_t& wpos) {
  const bool want_write = wpos < out.size() && !write_closed_;
  pollfd fds[3] = {{sock_.get(), static_cast<short>(POLLIN | (want_write ? POLLOUT : 0)), 0},
                   {err_.get(), POLLIN, 0},
                   {cancel_.get(), POLLIN, 0}};
  const int n = ::poll(fds, 3, idle_ms_);
  if (n < 0 && errno == EINTR) return {};
  if (n < 0) return broken(errno, std::string("poll: ") + std::strerror(errno));
  if (n == 0) return broken(ETIMEDOUT, "no progress in " + std::to_string(idle_ms_ / 1000) + "s");
  if (fds[2].revents != 0) return broken(ECANCELED, "cancelled");
  if (fds[1].revents != 0) drain_stderr();
  if (want_write && (fds[0].revents & (POLLOUT | POLLERR)) != 0) {
    const ssize_t w = ::send(sock_.get(), out.data() + wpos, out.size() - wpos,
                             MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w > 0) {
      wpos += static_cast<std::size_t>(w);
      sent_ += static_cast<std::uint64_t>(w);
    } else if (w < 0 && (errno == EPIPE || errno == ECONNRESET)) {
      write_closed_ = true;  // keep reading: the child may have said why
    } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
      return broken(errno, std::string("send: ") + std::strerror(errno));
    }
  }
  if ((fds[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
    const std::size_t old = in_.size();
    in_.resize(old + kReadChunk);
    const ssize_t r = ::recv(sock_.get(), in_.data() + old, kReadChunk, MSG_DONTWAIT);
    in_.resize(old + static_cast<std::size_t>(r > 0 ? r : 0));
    if (r > 0) received_ += static_cast<std::uint64_t>(r);
    if (r == 0 || (r < 0 && errno == ECONNRESET)) return broken(ECONNRESET, "the agent went away");
    if (r < 0 && errno != EAGAIN && errno != EINTR)
      return broken(errno, std::string("recv: ") + std::strerror(errno));
  }
  return {};
}

Result<std::vector<Reply>> ProcessTransport::exchange(std::span<const Request> reqs) {
  if (broken_) return fail(EPIPE, name_ + ": session is broken; reconnect");
  std::string out;
  for (const Request& r : reqs) {
    if (request_frame_size(r) > kMaxFrame + kFrameHeader)
      return fail(EMSGSIZE, "request for " + quoted(r.path) + " exceeds the frame limit");
  }
  for (const Request& r : reqs) encode_request(r, out);
  std::vector<Reply> replies;
  replies.reserve(reqs.size());
  std::size_t wpos = 0;
  for (;;) {
    if (Result<void> p = parse_replies(replies, reqs.size()); !p) return tl::unexpected(p.error());
    if (replies.size() == reqs.size()) return replies;
    if (Result<void> p = pump(out, wpos); !p) return tl::unexpected(p.error());
  }
}

// A daemon may run with 0-2 closed: a child end landing there would be
// clobbered by the dup2 of another one. Move it above.
int above_stdio(int fd) {
  if (fd > 2) return fd;
  const int moved = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  ::close(fd);
  return moved;
}

}  // namespace

Result<std::unique_ptr<Transport>> connect_process(std::vector<std::string> argv) {
  if (argv.empty()) return fail(EINVAL, "connect_process: empty argv");
  int sv[2], ep[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1)
    return fail_errno("socketpair", argv[0]);
  Fd mine(sv[0]), theirs(above_stdio(sv[1]));
  if (::pipe2(ep, O_CLOEXEC) == -1) return fail_errno("pipe", argv[0]);
  Fd err_r(ep[0]), err_w(above_stdio(ep[1]));
  if (!theirs.valid() || !err_w.valid()) return fail_errno("dup", argv[0]);
  Fd cancel(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!cancel.valid()) return fail_errno("eventfd", argv[0]);
  (void)::fcntl(err_r.get(), F_SETFL, O_NONBLOCK);

  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, theirs.get(), 0);
  posix_spawn_file_actions_adddup2(&fa, theirs.get(), 1);
  posix_spawn_file_actions_adddup2(&fa, err_w.get(), 2);
  posix_spawnattr_init(&attr);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigfillset(&defaults);
  sigdelset(&defaults, SIGKILL);
  sigdelset(&defaults, SIGSTOP);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                      POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_USEVFORK);
  std::vector<char*> cargv;
  for (std::string& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  pid_t pid = -1;
  const int rc = ::posix_spawnp(&pid, cargv[0], &fa, &attr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) return fail(rc, "spawn " + quoted(argv[0]) + ": " + std::strerror(rc));
  theirs.reset();
  err_w.reset();
  auto t = std::make_unique<ProcessTransport>(pid, std::move(mine), std::move(err_r),
                                              std::move(cancel), quoted(argv[0]));
  t->set_idle_timeout(kHandshakeTimeoutSeconds);  // a hung ssh login fails in bounded time
  if (Result<void> h = handshake(*t, "agent " + quoted(argv[0])); !h) return tl::unexpected(h.error());
  t->set_idle_timeout(kIdleTimeoutSeconds);
  return std::unique_ptr<Transport>(std::move(t));
}

}  // namespace mirrorfs::replicate
