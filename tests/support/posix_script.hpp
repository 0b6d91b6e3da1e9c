// Building blocks for differential (parity) tests: run the same scripted
// syscalls on a plain directory and on a mirrorfs mount, record what each
// step returned (value, errno, data) and a normalized stat of the paths it
// touches, and compare the two recordings (mergerfs-style parity,
// pjdfstest-style coverage).
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace mirrorfs::test {

// What one step observed. `ret` is normalized by the step (descriptors are
// reported as 0, never as their number); `err` is errno when ret < 0.
struct Outcome {
  long ret = 0;
  int err = 0;
  std::string extra;  // data read, xattr values, exact times...
  bool operator==(const Outcome&) const = default;
};

// Captures errno right away: call as R(::syscall(...)).
[[nodiscard]] Outcome R(long ret);
[[nodiscard]] Outcome R(long ret, std::string extra);

// "file 0644 n1 u0 g0 s12" (+ "rdev 1,3" for devices). No inode, no times.
[[nodiscard]] std::string norm_stat(const struct stat& st);

// A script's state on one side: its root and its named descriptors.
class Ctx {
 public:
  explicit Ctx(std::string root) : root_(std::move(root)) {}
  ~Ctx() { close_all(); }
  Ctx(const Ctx&) = delete;
  Ctx& operator=(const Ctx&) = delete;

  [[nodiscard]] const std::string& root() const { return root_; }
  [[nodiscard]] std::string p(std::string_view rel) const;  // "" is the root itself
  [[nodiscard]] int fd(const std::string& name) const;      // -1 if not open

  Outcome open(const std::string& name, std::string_view rel, int flags, mode_t mode = 0644);
  Outcome close(const std::string& name);
  Outcome write(const std::string& name, std::string_view data);
  Outcome pwrite(const std::string& name, std::string_view data, off_t off);
  Outcome read(const std::string& name, std::size_t n);
  Outcome pread(const std::string& name, std::size_t n, off_t off);
  Outcome fstat(const std::string& name);
  // Reads a whole file by path (open, read, close).
  Outcome slurp(std::string_view rel);
  // Creates `rel` holding `data` with `mode` (exact: fchmod after create).
  Outcome put(std::string_view rel, std::string_view data, mode_t mode = 0644);
  void close_all();

 private:
  std::string root_;
  std::map<std::string, int> fds_;
};

// Runs fn in a forked child, optionally as uid/gid 65534 (nobody), and
// returns what it reported. A child that hangs is killed at a deadline.
Outcome in_child(const std::function<Outcome()>& fn, bool as_nobody);

struct Step {
  std::string name;
  std::vector<std::string> paths;  // stat before and after (lstat); "" is the root
  std::function<Outcome(Ctx&)> run;
};

// One line per step: "name: ret=.. errno=.. extra=.. | path: <stat> mtime+ ctime=".
[[nodiscard]] std::vector<std::string> run_script(Ctx& ctx, const std::vector<Step>& steps);

}  // namespace mirrorfs::test
