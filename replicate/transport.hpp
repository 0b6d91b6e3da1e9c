// A Transport is a live session with one receiver (agent). The replicator
// owns one per target and uses it from its own thread only.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "fs/api/result.hpp"
#include "replicate/protocol.hpp"

namespace mirrorfs::replicate {

// Where a target lives, parsed from target=... (see parse_target()).
struct TargetSpec {
  enum class Kind { Local, Ssh } kind = Kind::Local;
  std::string url;      // as the user wrote it, for logs and status
  std::string path;     // root directory on the target machine
  std::string host, user;
  int port = 0;         // 0: ssh's default
  std::string ssh = "ssh";            // ssh= : command and options, split on spaces
  std::string agent = "mirrorfs";     // agent= : the remote binary
};

// Accepts /abs/path, file:///abs/path, host:/path, ssh://[user@]host[:port]/path.
[[nodiscard]] Result<TargetSpec> parse_target(std::string_view url);

class Transport {
 public:
  virtual ~Transport() = default;
  // Sends every request (pipelined: all written before replies are read) and
  // returns one reply per request, in order. An Error means the session is
  // broken (EPIPE, ECONNRESET, EPROTO...): the caller reconnects and retries.
  // A failure of one operation is a Reply with err != 0, not an Error.
  [[nodiscard]] virtual Result<std::vector<Reply>> exchange(std::span<const Request> reqs) = 0;
  [[nodiscard]] virtual std::uint64_t bytes_sent() const noexcept = 0;
  [[nodiscard]] virtual std::uint64_t bytes_received() const noexcept = 0;
  // Thread-safe, from any thread: makes a pending (or the next) exchange fail
  // with ECANCELED soon, e.g. to stop a replicator stuck on a dead network.
  // The session is broken afterwards.
  virtual void cancel() noexcept {}
};

// A process transport gives up on a session after this long without any
// progress (no byte sent or received) during an exchange: Error ETIMEDOUT.
inline constexpr int kIdleTimeoutSeconds = 300;
// The Hello exchange of connect()/connect_process() has a shorter one.
inline constexpr int kHandshakeTimeoutSeconds = 60;

// Local: an in-process receiver over spec.path (same code as the agent).
// Ssh: spawns `ssh [-p port] [user@]host agent agent ROOT` and speaks frames
// over its stdin/stdout; the Hello exchange happens here.
[[nodiscard]] Result<std::unique_ptr<Transport>> connect(const TargetSpec& spec);

// Spawns argv (e.g. {"/path/mirrorfs", "agent", ROOT}) and speaks frames over
// its pipes: the ssh transport with the ssh hop removed, for tests.
// Like connect(), the Hello exchange happens here: a version mismatch or an
// agent that cannot open its root is an Error naming the cause; so is a child
// that exits at once (the message carries the tail of its stderr).
[[nodiscard]] Result<std::unique_ptr<Transport>> connect_process(std::vector<std::string> argv);

// The argv connect() runs for an Ssh spec (exposed for tests and logs):
// ssh words, [-p port], [-l user], host, then the remote command words, each
// quoted for the remote shell.
[[nodiscard]] std::vector<std::string> ssh_argv(const TargetSpec& spec);

// Sends Hello and checks the answer; `who` names the target in errors.
[[nodiscard]] Result<void> handshake(Transport& t, const std::string& who);

}  // namespace mirrorfs::replicate
