// run_agent: the `mirrorfs agent ROOT` loop. Reads request frames from
// in_fd, applies them with a Receiver, writes reply frames to out_fd.
// Replies to every complete frame already buffered are written in one go
// before the next read, so a pipelined batch costs few syscalls. stdout
// carries frames: the logger writes to stderr only.
// When the session dies (the ssh connection cut: EOF, EPIPE, or SIGHUP/
// SIGTERM from sshd) the agent returns normally, so the Receiver removes the
// temps of transfers it had staged: none is left behind on the target.
//
// One session per target root at a time: the agent holds flock(LOCK_EX) on
// the root for its lifetime and waits (bounded) for it at start. When a
// sender dies (kill -9), its agent may still be applying the requests
// already in its pipe; the next session must not compare the target while
// those land.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <optional>
#include <thread>

#include <spdlog/sinks/stdout_sinks.h>

#include "replicate/receiver.hpp"

namespace mirrorfs::replicate {
namespace {

constexpr std::size_t kReadChunk = 256 * 1024;
constexpr auto kSessionLockWait = std::chrono::seconds(30);

// Waits for the previous session on this root to end; after the bound it
// goes on (a hung session elsewhere must not block replication for good).
void lock_session(int root_fd, const std::string& root, spdlog::logger& log) {
  const auto deadline = std::chrono::steady_clock::now() + kSessionLockWait;
  bool said = false;
  while (::flock(root_fd, LOCK_EX | LOCK_NB) == -1) {
    if (errno != EWOULDBLOCK && errno != EINTR) return;  // no locks here: nothing to wait for
    if (std::chrono::steady_clock::now() >= deadline) {
      log.warn("agent: another session on {} still runs after {}s; going on", quoted(root),
               kSessionLockWait.count());
      return;
    }
    if (!said) log.info("agent: waiting for the previous session on {} to end", quoted(root));
    said = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

volatile std::sig_atomic_t g_stop_signal = 0;

extern "C" void on_stop_signal(int sig) { g_stop_signal = sig; }

// SIGHUP/SIGTERM/SIGINT interrupt the blocking read or write (no SA_RESTART)
// and end the loop; SIGPIPE becomes EPIPE.
void install_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGHUP, SIGTERM, SIGINT}) ::sigaction(sig, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
}

std::shared_ptr<spdlog::logger> agent_logger() {
  auto log = std::make_shared<spdlog::logger>("agent",
                                              std::make_shared<spdlog::sinks::stderr_sink_mt>());
  const char* level = std::getenv("SPDLOG_LEVEL");
  log->set_level(level != nullptr ? spdlog::level::from_str(level) : spdlog::level::warn);
  return log;
}

bool write_all(int fd, const std::string& data) {
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR && g_stop_signal == 0) continue;
    if (n < 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

enum class Step { More, Eof, IoError, ProtoError };

// Serves every complete frame in in[pos..]; appends replies to out.
Step serve_buffered(std::string& in, std::string& out, std::optional<Receiver>& rx,
                    const Error& root_err, spdlog::logger& log) {
  std::size_t pos = 0;
  for (;;) {
    const std::string_view rest(in.data() + pos, in.size() - pos);
    Result<std::size_t> len = frame_length(rest);
    if (!len || (*len > 0 && rest[4] != static_cast<char>(kFrameRequest))) {
      log.error("agent: bad frame from the sender: {}; closing", len ? "not a request" : len.error().what);
      return Step::ProtoError;
    }
    if (*len == 0) break;
    Result<Request> req = decode_request(rest.substr(kFrameHeader, *len - kFrameHeader));
    if (!req) {
      log.error("agent: {}; closing", req.error().what);
      return Step::ProtoError;
    }
    const Reply reply = rx ? rx->handle(*req) : Reply{root_err.code, root_err.what, {}};
    encode_reply(reply, out);
    pos += *len;
  }
  in.erase(0, pos);
  return Step::More;
}

Step read_more(int fd, std::string& in) {
  const std::size_t old = in.size();
  in.resize(old + kReadChunk);
  for (;;) {
    const ssize_t n = ::read(fd, in.data() + old, kReadChunk);
    if (n < 0 && errno == EINTR && g_stop_signal == 0) continue;
    in.resize(old + static_cast<std::size_t>(n < 0 ? 0 : n));
    if (n < 0) return Step::IoError;
    return n == 0 ? Step::Eof : Step::More;
  }
}

}  // namespace

int run_agent(const std::string& root, int in_fd, int out_fd) {
  const std::shared_ptr<spdlog::logger> log = agent_logger();
  install_signal_handlers();
  std::optional<Receiver> rx;
  Error root_err{};
  const int fd = ::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    lock_session(fd, root, *log);
    rx.emplace(Fd(fd), log);
  } else {
    root_err = Error::from_errno("target root", root);
    root_err.what += std::string(": ") + std::strerror(root_err.code);
    log->error("agent: {}; every request will fail", root_err.what);
  }
  std::string in, out;
  for (;;) {
    const Step s = serve_buffered(in, out, rx, root_err, *log);
    if (!out.empty() && !write_all(out_fd, out)) {
      log->error("agent: write to the sender failed: {}", std::strerror(errno));
      return 1;
    }
    out.clear();
    if (s == Step::ProtoError) return 2;
    switch (read_more(in_fd, in)) {
      case Step::More: break;
      case Step::Eof:
        if (in.empty()) return 0;
        log->error("agent: the sender closed mid-frame ({} bytes pending)", in.size());
        return 2;
      default:
        if (g_stop_signal != 0) {
          log->warn("agent: stopped by signal {}; staged temps removed", ::strsignal(g_stop_signal));
          return 1;
        }
        log->error("agent: read from the sender failed: {}", std::strerror(errno));
        return 1;
    }
  }
}

}  // namespace mirrorfs::replicate
