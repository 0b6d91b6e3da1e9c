// Seeded random file exerciser (fsx-style) through a real mount: pwrite,
// write, pread, truncate, fallocate (plain, keep-size, punch hole, zero
// range), mmap MAP_SHARED writes + msync and mmap reads, fsync, reopen/close
// with several descriptors per file, while another thread keeps opening,
// reading and closing the same files. Every read is checked against an
// in-memory model; at the end the backing files must equal the model too.
// Reproduce a failure with the printed MIRRORFS_SEED=... .
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/falloc.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/mount_guard.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

namespace mirrorfs::test {
namespace {

constexpr int kFiles = 4;
constexpr int kFdsPerFile = 2;
constexpr int kOpsPerSeed = 4000;
constexpr int kSeeds = 5;
constexpr std::size_t kMaxSize = 256 * 1024;
constexpr std::size_t kPage = 4096;

struct File {
  std::string rel;
  std::vector<unsigned char> model;
  std::vector<int> fds;
};

class Exerciser {
 public:
  Exerciser(std::string mnt, std::string backing, std::string dir, std::uint64_t seed)
      : mnt_(std::move(mnt)), backing_(std::move(backing)), dir_(std::move(dir)), rng_(seed) {}

  ~Exerciser() { close_all(); }

  // Returns "" on success, else a description of the first failure.
  std::string run() {
    if (::mkdir((mnt_ + "/" + dir_).c_str(), 0755) != 0) return errmsg("mkdir " + dir_);
    for (int i = 0; i < kFiles; ++i) {
      File f;
      f.rel = dir_ + "/f" + std::to_string(i);
      for (int k = 0; k < kFdsPerFile; ++k) {
        const int fd = ::open(path(f).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) return errmsg("open " + f.rel);
        f.fds.push_back(fd);
      }
      files_.push_back(std::move(f));
    }
    start_reader();
    std::string err;
    for (int i = 0; i < kOpsPerSeed && err.empty(); ++i) {
      File& f = files_[pick(files_.size())];
      err = one_op(f, i);
      if (err.empty() && i % 64 == 0) err = check_size(f, "periodic fstat");
    }
    stop_reader();
    if (err.empty() && !reader_error_.empty()) err = "background reader: " + reader_error_;
    if (err.empty()) err = final_check();
    return err;
  }

  [[nodiscard]] const std::string& history() const { return history_; }

 private:
  std::string path(const File& f) const { return mnt_ + "/" + f.rel; }

  std::size_t pick(std::size_t n) { return static_cast<std::size_t>(rng_() % n); }
  std::size_t range(std::size_t lo, std::size_t hi) { return lo + pick(hi - lo + 1); }

  static std::string errmsg(const std::string& what) { return what + ": " + std::strerror(errno); }

  void note(const std::string& s) {
    history_ += s + "\n";
    if (history_.size() > 8000) history_.erase(0, history_.size() - 6000);
  }

  int any_fd(File& f) { return f.fds[pick(f.fds.size())]; }

  void fill_random(std::vector<unsigned char>& buf) {
    for (auto& b : buf) b = static_cast<unsigned char>(rng_());
  }

  // Offsets biased towards page boundaries and the current EOF.
  std::size_t offset_for(const File& f) {
    switch (pick(4)) {
      case 0: return pick(kMaxSize);
      case 1: return pick(kMaxSize / kPage) * kPage;
      case 2: return f.model.size() > 0 ? pick(f.model.size()) : 0;
      default: {
        const std::size_t base = f.model.size();
        return std::min(kMaxSize - 1, base > 100 ? base - pick(100) : base);
      }
    }
  }
  std::size_t length_for(std::size_t off) {
    const std::size_t cap = kMaxSize - off;
    const std::size_t len = pick(3) == 0 ? range(1, 64) : range(1, 3 * kPage);
    return std::max<std::size_t>(1, std::min(len, cap));
  }

  void model_write(File& f, std::size_t off, const unsigned char* data, std::size_t len) {
    if (f.model.size() < off + len) f.model.resize(off + len, 0);
    std::memcpy(f.model.data() + off, data, len);
  }
  void model_zero(File& f, std::size_t off, std::size_t len, bool keep_size) {
    if (!keep_size && f.model.size() < off + len) f.model.resize(off + len, 0);
    const std::size_t end = std::min(f.model.size(), off + len);
    if (off < end) std::memset(f.model.data() + off, 0, end - off);
  }

  std::string compare(const File& f, const unsigned char* got, std::size_t n, std::size_t off,
                      const std::string& how) {
    for (std::size_t i = 0; i < n; ++i) {
      if (got[i] != f.model[off + i]) {
        std::ostringstream s;
        s << how << " " << f.rel << ": byte at offset " << (off + i) << " is " << int(got[i])
          << ", model says " << int(f.model[off + i]) << " (read " << n << " bytes at " << off
          << ", size " << f.model.size() << ")";
        return s.str();
      }
    }
    return "";
  }

  std::string check_size(File& f, const std::string& why) {
    struct stat st {};
    if (::fstat(any_fd(f), &st) != 0) return errmsg("fstat " + f.rel);
    if (static_cast<std::size_t>(st.st_size) != f.model.size()) {
      return why + ": " + f.rel + " size " + std::to_string(st.st_size) + ", model " +
             std::to_string(f.model.size());
    }
    return "";
  }

  std::string do_pread(File& f) {
    const std::size_t off = offset_for(f), len = length_for(off);
    std::vector<unsigned char> buf(len);
    const ssize_t n = ::pread(any_fd(f), buf.data(), len, static_cast<off_t>(off));
    note("pread " + f.rel + " " + std::to_string(len) + "@" + std::to_string(off));
    if (n < 0) return errmsg("pread " + f.rel);
    const std::size_t expect = off >= f.model.size() ? 0 : std::min(len, f.model.size() - off);
    if (static_cast<std::size_t>(n) != expect) {
      return "pread " + f.rel + " " + std::to_string(len) + "@" + std::to_string(off) + " returned " +
             std::to_string(n) + ", model expects " + std::to_string(expect);
    }
    return compare(f, buf.data(), expect, off, "pread");
  }

  std::string do_pwrite(File& f, bool via_seek) {
    const std::size_t off = offset_for(f), len = length_for(off);
    std::vector<unsigned char> buf(len);
    fill_random(buf);
    const int fd = any_fd(f);
    ssize_t n;
    if (via_seek) {
      if (::lseek(fd, static_cast<off_t>(off), SEEK_SET) < 0) return errmsg("lseek " + f.rel);
      n = ::write(fd, buf.data(), len);
    } else {
      n = ::pwrite(fd, buf.data(), len, static_cast<off_t>(off));
    }
    note(std::string(via_seek ? "write " : "pwrite ") + f.rel + " " + std::to_string(len) + "@" +
         std::to_string(off));
    if (n != static_cast<ssize_t>(len)) return errmsg("write " + f.rel + " short or failed");
    model_write(f, off, buf.data(), len);
    return "";
  }

  std::string do_truncate(File& f) {
    const std::size_t size = pick(3) == 0 ? 0 : pick(kMaxSize);
    const bool by_path = pick(2) == 0;
    note(std::string(by_path ? "truncate " : "ftruncate ") + f.rel + " " + std::to_string(size));
    const int r = by_path ? ::truncate(path(f).c_str(), static_cast<off_t>(size))
                          : ::ftruncate(any_fd(f), static_cast<off_t>(size));
    if (r != 0) return errmsg("truncate " + f.rel);
    f.model.resize(size, 0);
    return check_size(f, "after truncate");
  }

  // Whether the backing filesystem itself supports this fallocate mode.
  bool backing_supports(int mode) const {
    const std::string probe = backing_ + "/.fallocate-probe";
    const int fd = ::open(probe.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) return true;
    const bool ok = ::fallocate(fd, mode, 0, 4096) == 0 || errno != EOPNOTSUPP;
    ::close(fd);
    ::unlink(probe.c_str());
    return ok;
  }

  std::string do_fallocate(File& f) {
    const std::size_t off = offset_for(f), len = length_for(off);
    static constexpr int kModes[] = {0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                     FALLOC_FL_ZERO_RANGE, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE};
    const int mode = kModes[pick(std::size(kModes))];
    note("fallocate mode " + std::to_string(mode) + " " + f.rel + " " + std::to_string(len) + "@" +
         std::to_string(off));
    if (::fallocate(any_fd(f), mode, static_cast<off_t>(off), static_cast<off_t>(len)) != 0) {
      // Passthrough: a mode the backing filesystem lacks (tmpfs has no
      // ZERO_RANGE) must fail the same way on the mount, and change nothing.
      if (errno == EOPNOTSUPP && !backing_supports(mode)) return check_size(f, "after fallocate");
      return errmsg("fallocate mode " + std::to_string(mode) + " " + f.rel);
    }
    const bool keep = (mode & FALLOC_FL_KEEP_SIZE) != 0;
    if (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) {
      model_zero(f, off, len, keep);
    } else if (!keep && f.model.size() < off + len) {
      f.model.resize(off + len, 0);
    }
    return check_size(f, "after fallocate");
  }

  std::string do_mmap(File& f, bool write) {
    if (f.model.empty()) return "";
    const std::size_t size = f.model.size();
    const int fd = any_fd(f);
    void* m = ::mmap(nullptr, size, PROT_READ | (write ? PROT_WRITE : 0), MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) return errmsg("mmap " + f.rel);
    auto* p = static_cast<unsigned char*>(m);
    const std::size_t off = pick(size);
    const std::size_t len = std::min(size - off, range(1, 2 * kPage));
    std::string err;
    if (write) {
      std::vector<unsigned char> buf(len);
      fill_random(buf);
      note("mmap write " + f.rel + " " + std::to_string(len) + "@" + std::to_string(off));
      std::memcpy(p + off, buf.data(), len);
      if (::msync(m, size, MS_SYNC) != 0) err = errmsg("msync " + f.rel);
      model_write(f, off, buf.data(), len);
    } else {
      note("mmap read " + f.rel + " " + std::to_string(len) + "@" + std::to_string(off));
      err = compare(f, p + off, len, off, "mmap read");
    }
    if (::munmap(m, size) != 0 && err.empty()) err = errmsg("munmap " + f.rel);
    return err;
  }

  std::string do_reopen(File& f) {
    const std::size_t i = pick(f.fds.size());
    note("reopen " + f.rel);
    if (::close(f.fds[i]) != 0) return errmsg("close " + f.rel);
    f.fds[i] = ::open(path(f).c_str(), O_RDWR | O_CLOEXEC);
    if (f.fds[i] < 0) return errmsg("reopen " + f.rel);
    return check_size(f, "after reopen");
  }

  std::string do_sync(File& f) {
    const bool data_only = pick(2) == 0;
    note(std::string(data_only ? "fdatasync " : "fsync ") + f.rel);
    const int r = data_only ? ::fdatasync(any_fd(f)) : ::fsync(any_fd(f));
    return r == 0 ? "" : errmsg("fsync " + f.rel);
  }

  std::string one_op(File& f, int) {
    const std::size_t r = pick(100);
    if (r < 25) return do_pread(f);
    if (r < 45) return do_pwrite(f, false);
    if (r < 52) return do_pwrite(f, true);
    if (r < 58) return do_truncate(f);
    if (r < 70) return do_fallocate(f);
    if (r < 77) return do_mmap(f, true);
    if (r < 84) return do_mmap(f, false);
    if (r < 94) return do_reopen(f);
    return do_sync(f);
  }

  // Another thread opens, stats, reads and closes the same files all along:
  // concurrent open/release against the writer's descriptors.
  void start_reader() {
    std::vector<std::string> paths;
    for (const File& f : files_) paths.push_back(path(f));
    reader_ = std::thread([this, paths, seed = rng_()] {
      std::mt19937_64 rng(seed);
      std::vector<unsigned char> buf(8192);
      while (!stop_.load()) {
        const std::string& p = paths[rng() % paths.size()];
        const int fd = ::open(p.c_str(), (rng() % 2) ? O_RDONLY | O_CLOEXEC : O_RDWR | O_CLOEXEC);
        if (fd < 0) {
          set_reader_error(errmsg("open " + p));
          return;
        }
        struct stat st {};
        if (::fstat(fd, &st) != 0) set_reader_error(errmsg("fstat " + p));
        const ssize_t n = ::pread(fd, buf.data(), buf.size(), static_cast<off_t>(rng() % kMaxSize));
        if (n < 0) set_reader_error(errmsg("pread " + p));
        if (::close(fd) != 0) set_reader_error(errmsg("close " + p));
      }
    });
  }
  void stop_reader() {
    stop_.store(true);
    if (reader_.joinable()) reader_.join();
  }
  void set_reader_error(const std::string& e) {
    std::lock_guard<std::mutex> lock(mu_);
    if (reader_error_.empty()) reader_error_ = e;
  }

  void close_all() {
    stop_reader();
    for (File& f : files_) {
      for (int fd : f.fds) ::close(fd);
      f.fds.clear();
    }
  }

  std::string check_whole(const File& f, const std::string& p, const std::string& how) {
    const std::string got = read_file(p);
    if (got.size() != f.model.size()) {
      return how + " " + f.rel + ": size " + std::to_string(got.size()) + ", model " +
             std::to_string(f.model.size());
    }
    return compare(f, reinterpret_cast<const unsigned char*>(got.data()), got.size(), 0, how);
  }

  std::string final_check() {
    for (File& f : files_) {
      if (std::string e = check_size(f, "final fstat"); !e.empty()) return e;
    }
    close_all();
    for (const File& f : files_) {
      if (std::string e = check_whole(f, path(f), "final read through mount"); !e.empty()) return e;
      if (std::string e = check_whole(f, backing_ + "/" + f.rel, "final read of backing file");
          !e.empty()) {
        return e;
      }
    }
    return "";
  }

  std::string mnt_, backing_, dir_;
  std::mt19937_64 rng_;
  std::vector<File> files_;
  std::string history_;
  std::thread reader_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::string reader_error_;
};

TEST(Exerciser, RandomOpsMatchModel) {
  TempDir tmp("mirrorfs-fsx");
  const std::string backing = tmp.mkdir("backing"), mnt = tmp.mkdir("mnt");
  MountGuard m(backing, mnt);
  ASSERT_TRUE(m.ok()) << m.error();
  const std::uint64_t base = seed();
  for (int i = 0; i < kSeeds; ++i) {
    const std::uint64_t s = base + static_cast<std::uint64_t>(i);
    SCOPED_TRACE(testing::Message() << "MIRRORFS_SEED=" << s);
    Exerciser ex(mnt, backing, "seed-" + std::to_string(i), s);
    const std::string err = ex.run();
    EXPECT_EQ(err, "") << "last operations:\n" << ex.history();
    if (!err.empty()) break;
  }
}

}  // namespace
}  // namespace mirrorfs::test
