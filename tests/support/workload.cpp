#include "tests/support/workload.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

namespace mirrorfs::test {

namespace {

struct Script {
  std::string root;
  std::string failed;

  std::string p(const std::string& rel) const { return root + "/" + rel; }
  bool check(bool ok, const std::string& what) {
    if (!ok && failed.empty()) failed = what + ": " + std::strerror(errno);
    return ok;
  }
  void write(const std::string& rel, const std::string& data, off_t off = 0, int flags = 0) {
    const int fd = ::open(p(rel).c_str(), O_WRONLY | O_CREAT | flags, 0644);
    if (!check(fd >= 0, "open " + rel)) return;
    check(::pwrite(fd, data.data(), data.size(), off) == static_cast<ssize_t>(data.size()),
          "pwrite " + rel);
    ::close(fd);
  }
  void append(const std::string& rel, const std::string& data) {
    const int fd = ::open(p(rel).c_str(), O_WRONLY | O_APPEND);
    if (!check(fd >= 0, "open append " + rel)) return;
    check(::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size()), "append");
    ::close(fd);
  }
};

std::string random_bytes(std::mt19937_64& rng, std::size_t n) {
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

}  // namespace

std::string run_scripted_workload(const std::string& root) {
  Script s{root, {}};
  std::mt19937_64 rng(42);
  // Files: small, large (ranges ship in place), sparse (holes stay holes).
  s.write("small.txt", "hello\n");
  s.append("small.txt", "world\n");
  s.write("large.bin", random_bytes(rng, 3 << 20));
  s.write("large.bin", random_bytes(rng, 4096), 1 << 20);
  s.write("large.bin", random_bytes(rng, 100), (3 << 20) - 50);  // grows by 50 bytes
  s.write("sparse.bin", "head");
  s.write("sparse.bin", "tail", 64 << 20);
  s.check(::truncate(s.p("small.txt").c_str(), 3) == 0, "truncate shrink");
  s.write("grown.txt", "abc");
  s.check(::truncate(s.p("grown.txt").c_str(), 10000) == 0, "truncate grow");
  s.write("rewritten.txt", "first version, long long long");
  s.write("rewritten.txt", "second", 0, O_TRUNC);
  // Directories and renames.
  s.check(::mkdir(s.p("a").c_str(), 0755) == 0, "mkdir a");
  s.check(::mkdir(s.p("a/b").c_str(), 0700) == 0, "mkdir a/b");
  s.write("a/b/deep.txt", "deep");
  s.write("a/moved.txt", "moves");
  s.check(::rename(s.p("a/moved.txt").c_str(), s.p("moved.txt").c_str()) == 0, "rename file");
  s.check(::rename(s.p("a").c_str(), s.p("tree").c_str()) == 0, "rename tree");
  s.write("victim.txt", "replaced");
  s.write("winner.txt", "wins");
  s.check(::rename(s.p("winner.txt").c_str(), s.p("victim.txt").c_str()) == 0, "rename onto");
  s.check(::mkdir(s.p("xdir").c_str(), 0755) == 0, "mkdir xdir");
  s.write("xfile", "exchanged");
  s.check(::renameat2(AT_FDCWD, s.p("xdir").c_str(), AT_FDCWD, s.p("xfile").c_str(),
                      RENAME_EXCHANGE) == 0, "exchange");
  // Links, symlinks, fifo.
  s.write("linked.txt", "one inode");
  s.check(::link(s.p("linked.txt").c_str(), s.p("tree/hardlink.txt").c_str()) == 0, "link");
  s.check(::symlink("../small.txt", s.p("tree/sym").c_str()) == 0, "symlink");
  s.check(::symlink("/nonexistent/absolute", s.p("dangling").c_str()) == 0, "symlink abs");
  s.check(::mkfifo(s.p("fifo").c_str(), 0640) == 0, "mkfifo");
  // Metadata.
  s.write("modes", "x");
  s.check(::chmod(s.p("modes").c_str(), 04755) == 0, "chmod setuid");
  s.check(::mkdir(s.p("sticky").c_str(), 0755) == 0 &&
              ::chmod(s.p("sticky").c_str(), 01777) == 0, "sticky dir");
  s.check(::chown(s.p("small.txt").c_str(), 1234, 5678) == 0, "chown");
  s.check(::lchown(s.p("tree/sym").c_str(), 4321, 8765) == 0, "lchown");
  const timespec ts[2] = {{1000000000, 123456789}, {1200000000, 987654321}};
  s.check(::utimensat(AT_FDCWD, s.p("moved.txt").c_str(), ts, 0) == 0, "utimens");
  s.check(::setxattr(s.p("moved.txt").c_str(), "user.color", "blue", 4, 0) == 0, "setxattr");
  s.check(::setxattr(s.p("tree").c_str(), "user.dir", "yes", 3, 0) == 0, "setxattr dir");
  s.check(::setxattr(s.p("large.bin").c_str(), "user.gone", "x", 1, 0) == 0 &&
              ::removexattr(s.p("large.bin").c_str(), "user.gone") == 0, "removexattr");
  // Deletions.
  s.write("deleted.txt", "bye");
  s.check(::unlink(s.p("deleted.txt").c_str()) == 0, "unlink");
  s.check(::mkdir(s.p("emptydir").c_str(), 0755) == 0 && ::rmdir(s.p("emptydir").c_str()) == 0,
          "rmdir");
  // Odd names.
  s.write("with space.txt", "s");
  s.write("new\nline", "n");
  s.write("-leading-dash", "d");
  s.write(std::string("bad\xff\xfeutf8"), "u");
  s.write("glob[*?]\\name", "g");
  s.write(std::string(255, 'n'), "255");
  std::string deep = "deep";
  s.check(::mkdir(s.p(deep).c_str(), 0755) == 0, "mkdir deep");
  while (deep.size() < 3800) {
    deep += "/" + std::string(200, 'd');
    if (!s.check(::mkdir(s.p(deep).c_str(), 0755) == 0, "mkdir deep chain")) break;
  }
  s.write(deep + "/leaf", "at the bottom");
  return s.failed;
}

void run_random_workload(const std::string& root, const RandomWorkload& w) {
  static const char* kDirs[] = {"", "d0/", "d1/", "d0/e0/"};
  for (const char* d : {"d0", "d1", "d0/e0"}) ::mkdir((root + "/" + d).c_str(), 0755);
  auto worker = [&](int idx) {
    std::mt19937_64 rng(w.seed * 1000003 + static_cast<std::uint64_t>(idx));
    auto pick = [&] {
      return root + "/" + kDirs[rng() % 4] + "f" + std::to_string(rng() % 6);
    };
    for (int i = 0; i < w.ops_per_thread; ++i) {
      const std::string a = pick(), b = pick();
      switch (rng() % 12) {
        case 0: case 1: case 2: {  // write a random range (sometimes > 1 MiB files)
          const int fd = ::open(a.c_str(), O_WRONLY | O_CREAT, 0644);
          if (fd < 0) break;
          const std::string data = random_bytes(rng, 1 + rng() % 9000);
          const off_t off = static_cast<off_t>(rng() % 4 == 0 ? rng() % (2 << 20) : rng() % 20000);
          (void)!::pwrite(fd, data.data(), data.size(), off);
          ::close(fd);
          break;
        }
        case 3: (void)!::truncate(a.c_str(), static_cast<off_t>(rng() % 30000)); break;
        case 4: case 5: ::rename(a.c_str(), b.c_str()); break;
        case 6: (void)!::link(a.c_str(), b.c_str()); break;
        case 7: ::unlink(a.c_str()); break;
        case 8: ::chmod(a.c_str(), static_cast<mode_t>(0600 | (rng() % 0100))); break;
        case 9: {
          const std::string v = std::to_string(rng() % 1000);
          ::setxattr(a.c_str(), "user.v", v.data(), v.size(), 0);
          break;
        }
        case 10: {  // move a whole directory around (and back)
          const std::string d1 = root + "/d1", dx = root + "/d0/e0/dx";
          if (rng() % 2) ::rename(d1.c_str(), dx.c_str());
          else ::rename(dx.c_str(), d1.c_str());
          break;
        }
        case 11: {
          const timespec ts[2] = {{0, UTIME_OMIT},
                                  {static_cast<time_t>(1500000000 + rng() % 1000),
                                   static_cast<long>(rng() % 1000000000)}};
          ::utimensat(AT_FDCWD, a.c_str(), ts, AT_SYMLINK_NOFOLLOW);
          break;
        }
      }
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < w.threads; ++t) threads.emplace_back(worker, t);
  for (auto& t : threads) t.join();
}

}  // namespace mirrorfs::test
