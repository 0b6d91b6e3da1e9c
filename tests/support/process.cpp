#include "tests/support/process.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "fs/api/fd.hpp"

namespace mirrorfs::test {

using Clock = std::chrono::steady_clock;

std::uint64_t seed() {
  if (const char* env = std::getenv("MIRRORFS_SEED"); env != nullptr && *env != '\0') {
    return std::strtoull(env, nullptr, 0);
  }
  std::random_device rd;
  return (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
}

bool CommandResult::ok() const {
  return !timed_out && status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

std::optional<int> wait_pid_for(pid_t pid, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  auto nap = std::chrono::milliseconds(1);
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r == -1 && errno != EINTR) return -1;
    if (Clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(nap);
    nap = std::min(nap * 2, std::chrono::milliseconds(50));
  }
}

CommandResult run_command(const std::vector<std::string>& argv, std::chrono::milliseconds timeout) {
  CommandResult res;
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) {
    res.output = std::string("pipe2: ") + std::strerror(errno);
    return res;
  }
  Fd rd(pipefd[0]), wr(pipefd[1]);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == -1) {
    res.output = std::string("fork: ") + std::strerror(errno);
    return res;
  }
  if (pid == 0) {
    ::dup2(wr.get(), 1);
    ::dup2(wr.get(), 2);
    const int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    ::execvp(args[0], args.data());
    _exit(127);
  }
  wr.reset();
  const auto deadline = Clock::now() + timeout;
  char buf[4096];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      res.timed_out = true;
      ::kill(pid, SIGKILL);
      break;
    }
    pollfd p{rd.get(), POLLIN, 0};
    const int n = ::poll(&p, 1, static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) continue;
    const ssize_t got = ::read(rd.get(), buf, sizeof buf);
    if (got <= 0) break;
    res.output.append(buf, static_cast<std::size_t>(got));
  }
  if (auto st = wait_pid_for(pid, res.timed_out ? std::chrono::seconds(5) : timeout)) {
    res.status = *st;
  } else {
    ::kill(pid, SIGKILL);
    res.timed_out = true;
    if (auto st2 = wait_pid_for(pid, std::chrono::seconds(5))) res.status = *st2;
  }
  return res;
}

namespace {

int count_fds(pid_t pid, bool files_only) {
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return -1;
  int n = 0;
  while (const dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    if (files_only) {
      char target[256];
      const ssize_t len = ::readlink((dir + "/" + e->d_name).c_str(), target, sizeof target - 1);
      const std::string t(target, len > 0 ? static_cast<std::size_t>(len) : 0);
      if (t == "/dev/fuse" || t.starts_with("pipe:")) continue;
    }
    ++n;
  }
  ::closedir(d);
  return n;
}

}  // namespace

int fd_count(pid_t pid) { return count_fds(pid, false); }
int file_fd_count(pid_t pid) { return count_fds(pid, true); }

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string describe_status(int status) {
  if (status == -1) return "not reaped";
  if (WIFEXITED(status)) return "exited " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return "status " + std::to_string(status);
}

}  // namespace mirrorfs::test
