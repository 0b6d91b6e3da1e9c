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
};

// Local: an in-process receiver over spec.path (same code as the agent).
// Ssh: spawns `ssh [-p port] [user@]host agent agent ROOT` and speaks frames
// over its stdin/stdout; the Hello exchange happens here.
[[nodiscard]] Result<std::unique_ptr<Transport>> connect(const TargetSpec& spec);

// Spawns argv (e.g. {"/path/mirrorfs", "agent", ROOT}) and speaks frames over
// its pipes: the ssh transport with the ssh hop removed, for tests.
[[nodiscard]] Result<std::unique_ptr<Transport>> connect_process(std::vector<std::string> argv);

}  // namespace mirrorfs::replicate
