// SshdServer: a private sshd on 127.0.0.1 for one test, with its own host key
// and client key (mutagen-style: the real sshd, no mock). The test talks to
// it through ssh_command(); the destructor stops it (by pid, with a deadline).
// If sshd cannot start, ok() is false and the caller must fail, not skip.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>

#include "tests/support/temp_dir.hpp"

namespace mirrorfs::test {

class SshdServer {
 public:
  SshdServer();
  ~SshdServer();
  SshdServer(const SshdServer&) = delete;
  SshdServer& operator=(const SshdServer&) = delete;

  [[nodiscard]] bool ok() const noexcept { return pid_ > 0; }
  [[nodiscard]] const std::string& error() const noexcept { return error_; }
  [[nodiscard]] int port() const noexcept { return port_; }
  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  // "ssh -i KEY -p PORT -o ..." : what mirrorfs's ssh= option takes.
  [[nodiscard]] std::string ssh_command() const;
  // ssh://root@127.0.0.1:PORT/path
  [[nodiscard]] std::string url(const std::string& remote_path) const;
  // Stops sshd (and so every session); start() brings it back on the same port.
  void stop();
  bool start();

 private:
  bool prepare();
  TempDir dir_{"mirrorfs-sshd"};
  std::string error_;
  int port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace mirrorfs::test
