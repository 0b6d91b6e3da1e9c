#include "tests/support/mount_guard.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <thread>

#include "tests/support/mountinfo.hpp"
#include "tests/support/process.hpp"

#ifndef MIRRORFS_BIN
#error "MIRRORFS_BIN must be defined (tests/CMakeLists.txt)"
#endif

namespace mirrorfs::test {
namespace {

using Clock = std::chrono::steady_clock;
constexpr const char* kFsType = "fuse.mirrorfs";

std::string canonical_or_same(const std::string& p) {
  char buf[PATH_MAX];
  if (::realpath(p.c_str(), buf) != nullptr) return buf;
  return p;
}

std::string fd_listing(pid_t pid) {
  std::ostringstream out;
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    std::error_code ec2;
    out << "  " << e.path().filename().string() << " -> "
        << std::filesystem::read_symlink(e.path(), ec2).string() << "\n";
  }
  return out.str();
}

bool log_has_error(const std::string& log) {
  return log.find("[error]") != std::string::npos || log.find("[critical]") != std::string::npos;
}

}  // namespace

MountGuard::MountGuard(std::string source, std::string mountpoint, MountConfig cfg)
    : source_(std::move(source)), mountpoint_(canonical_or_same(mountpoint)), cfg_(std::move(cfg)) {
  start();
  if (pid_ > 0) mounted_ = wait_ready();
  if (!mounted_) {
    ADD_FAILURE() << "mirrorfs did not mount " << mountpoint_ << ": " << error_;
    kill_daemon();
    done_ = true;
  }
}

MountGuard::~MountGuard() { unmount(); }

void MountGuard::start() {
  char tmpl[] = "/tmp/mirrorfs-daemon-log.XXXXXX";
  const int log_fd = ::mkostemp(tmpl, O_CLOEXEC);
  if (log_fd < 0) {
    error_ = std::string("mkostemp: ") + std::strerror(errno);
    return;
  }
  log_path_ = tmpl;

  std::vector<std::string> argv = {MIRRORFS_BIN, source_, mountpoint_, "-f"};
  if (!cfg_.options.empty()) {
    std::string joined;
    for (const std::string& o : cfg_.options) joined += (joined.empty() ? "" : ",") + o;
    argv.push_back("-o");
    argv.push_back(joined);
  }
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t parent = ::getpid();

  pid_ = ::fork();
  if (pid_ == -1) {
    error_ = std::string("fork: ") + std::strerror(errno);
    ::close(log_fd);
    return;
  }
  if (pid_ == 0) {
    // Child: only async-signal-safe calls until exec. If the test process
    // dies, SIGTERM makes libfuse unmount and exit instead of leaving a mount.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) _exit(126);
    const int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    ::dup2(log_fd, 1);
    ::dup2(log_fd, 2);
    ::close_range(3, ~0U, 0);  // the daemon's fd count must be its own
    ::execv(args[0], args.data());
    _exit(127);
  }
  ::close(log_fd);
}

bool MountGuard::wait_ready() {
  const auto deadline = Clock::now() + cfg_.ready_timeout;
  for (;;) {
    if (fstype_at(mountpoint_) == kFsType) break;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      error_ = "daemon " + describe_status(status) + " before mounting; log:\n" + log();
      return false;
    }
    if (Clock::now() >= deadline) {
      error_ = "no " + std::string(kFsType) + " at " + mountpoint_ + " after " +
               std::to_string(cfg_.ready_timeout.count()) + " ms; log:\n" + log();
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  // Complete FUSE INIT before taking the fd baseline.
  struct stat st {};
  if (::stat(mountpoint_.c_str(), &st) != 0) {
    error_ = "stat " + mountpoint_ + ": " + std::strerror(errno) + "; log:\n" + log();
    mounted_ = true;  // it is mounted: let unmount() clean up
    unmount();
    mounted_ = false;
    return false;
  }
  baseline_fds_ = file_fd_count(pid_);
  return true;
}

int MountGuard::daemon_fds() const { return pid_ > 0 ? fd_count(pid_) : -1; }

std::string MountGuard::log() const {
  if (!final_log_.empty()) return final_log_;  // after unmount: the file is gone
  return log_path_.empty() ? "" : read_file(log_path_);
}

void MountGuard::kill_daemon() {
  if (pid_ > 0) {
    ::kill(pid_, SIGTERM);
    if (!wait_pid_for(pid_, std::chrono::seconds(3))) {
      ::kill(pid_, SIGKILL);
      (void)wait_pid_for(pid_, std::chrono::seconds(5));
    }
    pid_ = -1;
  }
  if (fstype_at(mountpoint_) == kFsType) {
    (void)run_command({"fusermount3", "-u", "-z", mountpoint_}, std::chrono::seconds(10));
  }
  if (!log_path_.empty()) ::unlink(log_path_.c_str());
}

bool MountGuard::check_fds() {
  if (!cfg_.check_fd_leak || baseline_fds_ < 0) return true;
  // RELEASE reaches the daemon asynchronously after close(): let it settle.
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  int now = file_fd_count(pid_);
  while (now > baseline_fds_ + cfg_.fd_slack && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    now = file_fd_count(pid_);
  }
  if (now > baseline_fds_ + cfg_.fd_slack) {
    ADD_FAILURE() << "fd leak in mirrorfs (gocryptfs-style check): " << now << " open fds before "
                  << "unmount, " << baseline_fds_ << " at mount (slack " << cfg_.fd_slack
                  << ")\n"
                  << fd_listing(pid_);
    return false;
  }
  return true;
}

bool MountGuard::fusermount_unmount() {
  std::string last;
  for (int attempt = 0; attempt < 5; ++attempt) {
    CommandResult r = run_command({"fusermount3", "-u", mountpoint_}, std::chrono::seconds(10));
    if (r.ok()) return true;
    last = r.output;
    std::this_thread::sleep_for(std::chrono::milliseconds(100 * (attempt + 1)));
  }
  ADD_FAILURE() << "fusermount3 -u " << mountpoint_ << " kept failing (" << last
                << "); using -z";
  (void)run_command({"fusermount3", "-u", "-z", mountpoint_}, std::chrono::seconds(10));
  return false;
}

void MountGuard::crash() {
  if (done_ || crashed_ || pid_ <= 0) return;
  crashed_ = true;
  ::kill(pid_, SIGKILL);
  if (!wait_pid_for(pid_, std::chrono::seconds(10))) ADD_FAILURE() << "mirrorfs survived SIGKILL";
  pid_ = -1;
}

void MountGuard::detach() {
  if (done_) return;
  done_ = true;
  mounted_ = false;
  if (fstype_at(mountpoint_) == kFsType)
    (void)run_command({"fusermount3", "-u", "-z", mountpoint_}, std::chrono::seconds(10));
  if (!log_path_.empty()) ::unlink(log_path_.c_str());
}

bool MountGuard::unmount() {
  if (crashed_) {
    detach();
    return true;
  }
  if (done_) return true;
  done_ = true;
  bool clean = check_fds();
  clean = fusermount_unmount() && clean;

  std::optional<int> status = wait_pid_for(pid_, cfg_.exit_timeout);
  if (!status) {
    ADD_FAILURE() << "mirrorfs (pid " << pid_ << ") still running "
                  << cfg_.exit_timeout.count() << " ms after unmount; SIGKILL";
    ::kill(pid_, SIGKILL);
    status = wait_pid_for(pid_, std::chrono::seconds(5));
    clean = false;
  } else if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
    ADD_FAILURE() << "mirrorfs " << describe_status(*status) << " after unmount; log:\n" << log();
    clean = false;
  }
  pid_ = -1;
  mounted_ = false;

  if (fstype_at(mountpoint_) == kFsType) {
    ADD_FAILURE() << "mount left behind at " << mountpoint_;
    (void)run_command({"fusermount3", "-u", "-z", mountpoint_}, std::chrono::seconds(10));
    clean = false;
  }
  const std::string text = log();
  final_log_ = text;
  if (cfg_.fail_on_error_log && log_has_error(text)) {
    ADD_FAILURE() << "mirrorfs logged an error; log:\n" << text;
    clean = false;
  }
  if (!log_path_.empty()) ::unlink(log_path_.c_str());
  return clean;
}

}  // namespace mirrorfs::test
