// The daemon's control socket: `mirrorfs status MOUNTPOINT` talks to it.
//
// Lifecycle: ControlServer binds a unix socket at control_socket_path(MNT)
// (directory /run/mirrorfs, mode 0700: root only) and serves it on one
// thread (mfs-control) until destroyed; the destructor stops the thread and
// removes the socket. Protocol: the client sends one line ("status" or
// "status json"), the server answers with the handler's text and closes.
#pragma once

#include <functional>
#include <string>
#include <thread>

#include <spdlog/logger.h>

#include "fs/api/fd.hpp"
#include "fs/api/result.hpp"

namespace mirrorfs::replicate {

// /run/mirrorfs/<xxh64 of the canonical mountpoint>.sock
[[nodiscard]] std::string control_socket_path(const std::string& canonical_mountpoint);

class ControlServer {
 public:
  using Handler = std::function<std::string(const std::string& request)>;
  [[nodiscard]] static Result<std::unique_ptr<ControlServer>> start(
      const std::string& socket_path, Handler handler, std::shared_ptr<spdlog::logger> log);
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

 private:
  ControlServer(std::string path, Fd listener, Fd stop, Handler handler,
                std::shared_ptr<spdlog::logger> log);
  void serve(std::stop_token st);
  void answer(int client);

  std::string path_;
  Fd listener_, stop_;  // stop_: an eventfd the destructor signals
  Handler handler_;
  std::shared_ptr<spdlog::logger> log_;
  std::jthread thread_;
};

// Client side: sends request to the socket and returns the answer. ENOENT or
// ECONNREFUSED mean no daemon serves that mountpoint.
[[nodiscard]] Result<std::string> control_request(const std::string& socket_path,
                                                  const std::string& request);

}  // namespace mirrorfs::replicate
