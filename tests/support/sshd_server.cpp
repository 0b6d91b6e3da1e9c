#include "tests/support/sshd_server.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>
#include <vector>

#include "tests/support/process.hpp"

extern char** environ;

namespace mirrorfs::test {

namespace {

int free_port() {
  const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int port = 0;
  if (::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) == 0)
    port = ntohs(a.sin_port);
  ::close(s);
  return port;
}

bool port_accepts(int port) {
  const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  const bool ok = ::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(s);
  return ok;
}

}  // namespace

SshdServer::SshdServer() {
  if (prepare()) start();
}

SshdServer::~SshdServer() { stop(); }

bool SshdServer::prepare() {
  ::mkdir("/run/sshd", 0755);  // sshd's privilege separation directory
  for (const char* key : {"host_key", "client_key"}) {
    auto r = run_command({"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", dir_.sub(key)});
    if (!r.ok()) {
      error_ = "ssh-keygen failed: " + r.output;
      return false;
    }
  }
  ::rename(dir_.sub("client_key.pub").c_str(), dir_.sub("authorized_keys").c_str());
  port_ = free_port();
  std::ofstream cfg(dir_.sub("sshd_config"));
  cfg << "Port " << port_ << "\nListenAddress 127.0.0.1\nHostKey " << dir_.sub("host_key")
      << "\nAuthorizedKeysFile " << dir_.sub("authorized_keys")
      << "\nPidFile " << dir_.sub("sshd.pid")
      << "\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n"
         "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nLogLevel ERROR\n"
         "MaxStartups 100:30:200\nMaxSessions 100\n";
  return cfg.good();
}

bool SshdServer::start() {
  if (port_ == 0) return false;
  const std::string cfg = dir_.sub("sshd_config"), log = dir_.sub("sshd.log");
  std::vector<std::string> args{"/usr/sbin/sshd", "-D", "-f", cfg, "-E", log};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  if (::posix_spawn(&pid_, argv[0], nullptr, nullptr, argv.data(), environ) != 0) {
    pid_ = -1;
    error_ = "cannot start /usr/sbin/sshd (is openssh-server installed?)";
    return false;
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    if (port_accepts(port_)) return true;
    if (wait_pid_for(pid_, std::chrono::milliseconds(0))) {
      error_ = "sshd exited: " + read_file(log);
      pid_ = -1;
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  error_ = "sshd did not listen on port " + std::to_string(port_) + " within 10 s";
  stop();
  return false;
}

void SshdServer::stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  if (!wait_pid_for(pid_, std::chrono::seconds(5))) {
    ::kill(pid_, SIGKILL);
    (void)wait_pid_for(pid_, std::chrono::seconds(5));
  }
  pid_ = -1;
}

std::string SshdServer::ssh_command() const {
  return "ssh -i " + dir_.sub("client_key") + " -p " + std::to_string(port_) +
         " -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes"
         " -o LogLevel=ERROR -o ConnectTimeout=5";
}

std::string SshdServer::url(const std::string& remote_path) const {
  return "ssh://root@127.0.0.1:" + std::to_string(port_) + remote_path;
}

}  // namespace mirrorfs::test
