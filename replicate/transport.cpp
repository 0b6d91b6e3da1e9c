// Target URLs, the in-process (local) transport, the ssh command line and
// the Hello handshake. The process transport is in target_process.cpp.
#include "replicate/transport.hpp"

#include <fcntl.h>

#include <charconv>

#include <spdlog/spdlog.h>

#include "replicate/receiver.hpp"

namespace mirrorfs::replicate {
namespace {

tl::unexpected<Error> bad_target(std::string_view url, const std::string& why) {
  return fail(EINVAL, "target " + quoted(url) + ": " + why);
}

bool sane_word(std::string_view w) {
  if (w.empty() || w.front() == '-') return false;  // never let a host become an ssh option
  for (const char c : w)
    if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f || c == '/' || c == '\'' || c == '"')
      return false;
  return true;
}

// [user@]host[:port] with host possibly "[v6]"; port only when allow_port.
Result<void> parse_authority(std::string_view url, std::string_view auth, bool allow_port,
                             TargetSpec& s) {
  if (const std::size_t at = auth.rfind('@'); at != std::string_view::npos) {
    s.user = std::string(auth.substr(0, at));
    auth.remove_prefix(at + 1);
    if (!sane_word(s.user)) return bad_target(url, "bad user name");
  }
  std::string_view port;
  if (!auth.empty() && auth.front() == '[') {
    const std::size_t close = auth.find(']');
    if (close == std::string_view::npos) return bad_target(url, "unclosed '[' in host");
    s.host = std::string(auth.substr(1, close - 1));
    auth.remove_prefix(close + 1);
    if (!auth.empty() && auth.front() != ':') return bad_target(url, "junk after ']'");
    if (!auth.empty()) port = auth.substr(1);
  } else {
    const std::size_t colon = auth.find(':');
    s.host = std::string(auth.substr(0, colon));
    if (colon != std::string_view::npos) port = auth.substr(colon + 1);
  }
  if (!sane_word(s.host)) return bad_target(url, "bad host name");
  if (!port.empty() || auth.find(':') != std::string_view::npos) {
    if (!allow_port) return bad_target(url, "a port needs ssh://host:port/path");
    int p = 0;
    const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
    if (ec != std::errc{} || end != port.data() + port.size() || p < 1 || p > 65535)
      return bad_target(url, "bad port " + quoted(port));
    s.port = p;
  }
  return {};
}

Result<TargetSpec> parse_remote(std::string_view url, std::string_view auth,
                                std::string_view path, bool allow_port) {
  TargetSpec s;
  s.url = std::string(url);
  s.kind = TargetSpec::Kind::Ssh;
  if (Result<void> r = parse_authority(url, auth, allow_port, s); !r)
    return tl::unexpected(r.error());
  if (path.empty() || path.front() != '/') return bad_target(url, "the remote path must be absolute");
  s.path = std::string(path);
  return s;
}

bool shell_safe(std::string_view w) {
  if (w.empty()) return false;
  for (const char c : w)
    if (!std::isalnum(static_cast<unsigned char>(c)) && std::string_view("_/.,:=+@%-").find(c) ==
                                                            std::string_view::npos)
      return false;
  return true;
}

std::string shell_quote(std::string_view w) {
  if (shell_safe(w)) return std::string(w);
  std::string q = "'";
  for (const char c : w) {
    if (c == '\'') q += "'\\''";
    else q += c;
  }
  return q + "'";
}

std::vector<std::string> split_words(std::string_view s) {
  std::vector<std::string> words;
  std::size_t i = 0;
  while (i < s.size()) {
    const std::size_t j = s.find(' ', i);
    const std::string_view w = s.substr(i, j - i);
    if (!w.empty()) words.emplace_back(w);
    if (j == std::string_view::npos) break;
    i = j + 1;
  }
  return words;
}

// The in-process receiver: same code as the agent, no process, no copies.
class LocalTransport final : public Transport {
 public:
  LocalTransport(Fd root, std::shared_ptr<spdlog::logger> log) : rx_(std::move(root), std::move(log)) {}
  Result<std::vector<Reply>> exchange(std::span<const Request> reqs) override {
    for (const Request& r : reqs)
      if (request_frame_size(r) > kMaxFrame + kFrameHeader)
        return fail(EMSGSIZE, "request for " + quoted(r.path) + " exceeds the frame limit");
    std::vector<Reply> replies;
    replies.reserve(reqs.size());
    for (const Request& r : reqs) {
      sent_ += request_frame_size(r);
      replies.push_back(rx_.handle(r));
      received_ += reply_frame_size(replies.back());
    }
    return replies;
  }
  std::uint64_t bytes_sent() const noexcept override { return sent_; }
  std::uint64_t bytes_received() const noexcept override { return received_; }

 private:
  Receiver rx_;
  std::uint64_t sent_ = 0, received_ = 0;
};

}  // namespace

Result<TargetSpec> parse_target(std::string_view url) {
  if (url.empty()) return bad_target(url, "empty");
  if (url.find('\0') != std::string_view::npos) return bad_target(url, "NUL byte");
  if (url.starts_with("file://")) {
    TargetSpec s;
    s.url = std::string(url);
    s.path = std::string(url.substr(7));
    if (s.path.empty() || s.path.front() != '/')
      return bad_target(url, "file:// takes an absolute local path (file:///dir)");
    return s;
  }
  if (url.starts_with("ssh://")) {
    const std::string_view rest = url.substr(6);
    const std::size_t slash = rest.find('/');
    if (slash == std::string_view::npos) return bad_target(url, "no path (ssh://host/path)");
    return parse_remote(url, rest.substr(0, slash), rest.substr(slash), true);
  }
  if (url.find("://") != std::string_view::npos) return bad_target(url, "unknown scheme");
  if (url.front() == '/') {
    TargetSpec s;
    s.url = std::string(url);
    s.path = std::string(url);
    return s;
  }
  // host:/path (scp syntax); a '/' before the first ':' means a relative local path.
  const std::size_t colon = url.front() == '[' ? url.find("]:") + 1 : url.find(':');
  if (colon == 0 || colon == std::string_view::npos || url.substr(0, colon).find('/') != std::string_view::npos)
    return bad_target(url, "not an absolute path, file://, host:/path or ssh:// URL");
  return parse_remote(url, url.substr(0, colon), url.substr(colon + 1), false);
}

std::vector<std::string> ssh_argv(const TargetSpec& spec) {
  std::vector<std::string> argv = split_words(spec.ssh);
  if (argv.empty()) argv.emplace_back("ssh");
  if (spec.port != 0) {
    argv.emplace_back("-p");
    argv.push_back(std::to_string(spec.port));
  }
  if (!spec.user.empty()) {
    argv.emplace_back("-l");
    argv.push_back(spec.user);
  }
  argv.push_back(spec.host);
  for (const std::string& w : split_words(spec.agent)) argv.push_back(shell_quote(w));
  if (split_words(spec.agent).empty()) argv.emplace_back("mirrorfs");
  argv.emplace_back("agent");
  argv.push_back(shell_quote(spec.path));
  return argv;
}

Result<void> handshake(Transport& t, const std::string& who) {
  Request hello;
  hello.op = Op::Hello;
  hello.offset = kProtocolVersion;
  Result<std::vector<Reply>> r = t.exchange(std::span<const Request>(&hello, 1));
  if (!r) return fail(r.error().code, who + ": " + r.error().what);
  const Reply& reply = r->front();
  if (reply.err == EPROTONOSUPPORT)
    return fail(EPROTONOSUPPORT, who + ": protocol version mismatch: " + reply.message);
  if (reply.err != 0) return fail(reply.err, who + ": " + reply.message);
  if (!reply.data.starts_with("mirrorfs-agent"))
    return fail(EPROTO, who + ": not a mirrorfs agent: " + quoted(reply.data));
  return {};
}

Result<std::unique_ptr<Transport>> connect(const TargetSpec& spec) {
  if (spec.kind == TargetSpec::Kind::Ssh) {
    if (!sane_word(spec.host)) return fail(EINVAL, "target " + quoted(spec.url) + ": bad host");
    Result<std::unique_ptr<Transport>> t = connect_process(ssh_argv(spec));
    if (!t) return fail(t.error().code, "target " + quoted(spec.url) + ": " + t.error().what);
    return t;
  }
  const int fd = ::open(spec.path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return fail_errno("open target root", spec.path);
  std::shared_ptr<spdlog::logger> log = spdlog::get("agent");
  if (!log) log = spdlog::default_logger();
  auto t = std::make_unique<LocalTransport>(Fd(fd), std::move(log));
  if (Result<void> h = handshake(*t, "target " + quoted(spec.url)); !h) return tl::unexpected(h.error());
  return std::unique_ptr<Transport>(std::move(t));
}

}  // namespace mirrorfs::replicate
