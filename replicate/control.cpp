#include "replicate/control.hpp"

#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <xxhash.h>

#include <cstdio>
#include <cstring>

namespace mirrorfs::replicate {

namespace {

constexpr const char* kRunDir = "/run/mirrorfs";

Result<sockaddr_un> address_of(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof a.sun_path) return fail(ENAMETOOLONG, "socket path " + quoted(path));
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  return a;
}

bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

}  // namespace

std::string control_socket_path(const std::string& canonical_mountpoint) {
  char name[32];
  std::snprintf(name, sizeof name, "%016llx.sock",
                static_cast<unsigned long long>(
                    XXH64(canonical_mountpoint.data(), canonical_mountpoint.size(), 0)));
  return std::string(kRunDir) + "/" + name;
}

Result<std::unique_ptr<ControlServer>> ControlServer::start(const std::string& socket_path,
                                                            Handler handler,
                                                            std::shared_ptr<spdlog::logger> log) {
  if (::mkdir(kRunDir, 0700) == -1 && errno != EEXIST) return fail_errno("mkdir", kRunDir);
  auto addr = address_of(socket_path);
  if (!addr) return tl::unexpected(addr.error());
  Fd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!listener.valid()) return fail_errno("socket", socket_path);
  ::unlink(socket_path.c_str());  // a stale socket of a daemon that was killed
  if (::bind(listener.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof *addr) == -1)
    return fail_errno("bind", socket_path);
  ::chmod(socket_path.c_str(), 0600);
  if (::listen(listener.get(), 16) == -1) return fail_errno("listen", socket_path);
  Fd stop(::eventfd(0, EFD_CLOEXEC));
  if (!stop.valid()) return fail_errno("eventfd", socket_path);
  return std::unique_ptr<ControlServer>(new ControlServer(
      socket_path, std::move(listener), std::move(stop), std::move(handler), std::move(log)));
}

ControlServer::ControlServer(std::string path, Fd listener, Fd stop, Handler handler,
                             std::shared_ptr<spdlog::logger> log)
    : path_(std::move(path)),
      listener_(std::move(listener)),
      stop_(std::move(stop)),
      handler_(std::move(handler)),
      log_(std::move(log)),
      thread_([this](std::stop_token st) { serve(st); }) {}

ControlServer::~ControlServer() {
  thread_.request_stop();
  const std::uint64_t one = 1;
  (void)!::write(stop_.get(), &one, sizeof one);
  if (thread_.joinable()) thread_.join();
  ::unlink(path_.c_str());
}

void ControlServer::serve(std::stop_token st) {
  ::pthread_setname_np(::pthread_self(), "mfs-control");
  while (!st.stop_requested()) {
    pollfd fds[2] = {{listener_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      log_->error("control socket {}: poll failed: {}; status is unavailable", quoted(path_),
                  std::strerror(errno));
      return;
    }
    if (fds[1].revents != 0) return;
    Fd client(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (client.valid()) answer(client.get());
  }
}

void ControlServer::answer(int client) {
  // A request is one short line; a client that sends nothing in 2 s is dropped.
  pollfd p{client, POLLIN, 0};
  if (::poll(&p, 1, 2000) <= 0) return;
  char buf[256];
  const ssize_t n = ::recv(client, buf, sizeof buf - 1, 0);
  if (n <= 0) return;
  std::string request(buf, static_cast<std::size_t>(n));
  while (!request.empty() && (request.back() == '\n' || request.back() == '\r')) request.pop_back();
  std::string reply;
  try {
    reply = handler_(request);
  } catch (const std::exception& e) {
    reply = std::string("error: ") + e.what() + "\n";
  }
  (void)write_all(client, reply);
}

Result<std::string> control_request(const std::string& socket_path, const std::string& request) {
  auto addr = address_of(socket_path);
  if (!addr) return tl::unexpected(addr.error());
  Fd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s.valid()) return fail_errno("socket", socket_path);
  if (::connect(s.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof *addr) == -1)
    return fail_errno("connect", socket_path);
  if (!write_all(s.get(), request + "\n")) return fail_errno("send", socket_path);
  std::string out;
  char buf[4096];
  while (true) {
    pollfd p{s.get(), POLLIN, 0};
    if (::poll(&p, 1, 5000) <= 0) return fail(ETIMEDOUT, "no answer from " + quoted(socket_path));
    const ssize_t n = ::recv(s.get(), buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail_errno("recv", socket_path);
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  return out;
}

}  // namespace mirrorfs::replicate
