// Differential POSIX suite (pjdfstest coverage, mergerfs-style parity): the
// same script of syscalls runs on a plain directory and on a mirrorfs mount
// of a fresh backing directory; every step's return value, errno, data and
// the normalized stat of the paths it touches (type, mode, nlink, uid, gid,
// size; mtime/ctime as "changed or not") must be identical. Then the plain
// tree must equal the backing tree, and the backing tree the mounted view.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/falloc.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <thread>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "tests/support/mount_guard.hpp"
#include "tests/support/posix_script.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/tree_compare.hpp"

namespace mirrorfs::test {
namespace {

constexpr long kMiB = 1 << 20;

// Stat of a path as step data (for steps that need a stat taken by a child).
Outcome lstat_of(const Ctx& x, const std::string& rel) {
  struct stat st {};
  Outcome o = R(::lstat(x.p(rel).c_str(), &st));
  if (o.ret == 0) o.extra = norm_stat(st);
  return o;
}

std::string times_of(const Ctx& x, const std::string& rel) {
  struct stat st {};
  if (::lstat(x.p(rel).c_str(), &st) != 0) return "stat failed";
  char buf[128];
  std::snprintf(buf, sizeof buf, "atime %lld.%09ld mtime %lld.%09ld",
                static_cast<long long>(st.st_atim.tv_sec), st.st_atim.tv_nsec,
                static_cast<long long>(st.st_mtim.tv_sec), st.st_mtim.tv_nsec);
  return buf;
}

std::string times_of_stat(const struct stat& st) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "mtime %lld.%09ld", static_cast<long long>(st.st_mtim.tv_sec),
                st.st_mtim.tv_nsec);
  return buf;
}

std::string mtime_of(const Ctx& x, const std::string& rel) {
  const std::string t = times_of(x, rel);
  const auto pos = t.find("mtime");
  return pos == std::string::npos ? t : t.substr(pos);
}

Outcome set_times(const Ctx& x, const std::string& rel, timespec at, timespec mt, int flags = 0) {
  const timespec ts[2] = {at, mt};
  Outcome o = R(::utimensat(AT_FDCWD, x.p(rel).c_str(), ts, flags));
  return o;
}

Outcome xget(const Ctx& x, const std::string& rel, const char* name, std::size_t size = 256) {
  std::string buf(size, '\0');
  const ssize_t n = ::lgetxattr(x.p(rel).c_str(), name, size ? buf.data() : nullptr, size);
  Outcome o = R(n);
  if (n > 0 && size > 0) o.extra = buf.substr(0, static_cast<std::size_t>(n));
  return o;
}

Outcome xlist(const Ctx& x, const std::string& rel) {
  std::string buf(4096, '\0');
  const ssize_t n = ::llistxattr(x.p(rel).c_str(), buf.data(), buf.size());
  Outcome o = R(n);
  if (n <= 0) return o;
  std::vector<std::string> names;
  for (std::size_t pos = 0; pos < static_cast<std::size_t>(n);) {
    names.emplace_back(buf.c_str() + pos);
    pos += names.back().size() + 1;
  }
  std::sort(names.begin(), names.end());
  for (const std::string& s : names) o.extra += s + ";";
  return o;
}

Outcome seek(const Ctx& x, const std::string& fd, off_t off, int whence) {
  return R(::lseek(x.fd(fd), off, whence));
}

Outcome count_nonzero(const Ctx& x, const std::string& fd, std::size_t n, off_t off) {
  std::string buf(n, '\0');
  const ssize_t r = ::pread(x.fd(fd), buf.data(), n, off);
  Outcome o = R(r);
  if (r >= 0) {
    std::size_t nz = 0;
    for (std::size_t i = 0; i < static_cast<std::size_t>(r); ++i) nz += buf[i] != 0;
    o.extra = "nonzero=" + std::to_string(nz);
  }
  return o;
}

Outcome rename2(const Ctx& x, const std::string& from, const std::string& to, unsigned flags) {
  return R(::renameat2(AT_FDCWD, x.p(from).c_str(), AT_FDCWD, x.p(to).c_str(), flags));
}

// A posix lock request from another process (a forked child).
Outcome child_setlk(const Ctx& x, const std::string& rel, short type, off_t start, off_t len) {
  return in_child(
      [&]() -> Outcome {
        const int f = ::open(x.p(rel).c_str(), O_RDWR | O_CLOEXEC);
        if (f < 0) return R(-1, "open");
        struct flock fl {};
        fl.l_type = type;
        fl.l_whence = SEEK_SET;
        fl.l_start = start;
        fl.l_len = len;
        return R(::fcntl(f, F_SETLK, &fl));
      },
      false);
}

Outcome child_getlk(const Ctx& x, const std::string& rel, off_t start, off_t len) {
  return in_child(
      [&]() -> Outcome {
        const int f = ::open(x.p(rel).c_str(), O_RDWR | O_CLOEXEC);
        if (f < 0) return R(-1, "open");
        struct flock fl {};
        fl.l_type = F_WRLCK;
        fl.l_whence = SEEK_SET;
        fl.l_start = start;
        fl.l_len = len;
        Outcome o = R(::fcntl(f, F_GETLK, &fl));
        o.extra = "type=" + std::to_string(fl.l_type) + " start=" + std::to_string(fl.l_start) +
                  " len=" + std::to_string(fl.l_len) +
                  " pid_is_parent=" + std::to_string(fl.l_pid == ::getppid());
        return o;
      },
      false);
}

Outcome child_flock(const Ctx& x, const std::string& rel, int op) {
  return in_child(
      [&]() -> Outcome {
        const int f = ::open(x.p(rel).c_str(), O_RDONLY | O_CLOEXEC);
        if (f < 0) return R(-1, "open");
        return R(::flock(f, op));
      },
      false);
}

Outcome setlk(const Ctx& x, const std::string& fd, short type, off_t start, off_t len) {
  struct flock fl {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = start;
  fl.l_len = len;
  return R(::fcntl(x.fd(fd), F_SETLK, &fl));
}

template <class F>
Outcome nobody(F&& f) {
  return in_child(std::forward<F>(f), true);
}

std::vector<Step> script() {
  const std::string name255(255, 'n');
  const std::string name256(256, 'n');
  std::string pattern;
  for (int i = 0; i < 100; ++i) pattern += "0123456789";
  std::vector<Step> s = {
      // --- create / open -----------------------------------------------------
      {"create a O_EXCL", {"", "a"}, [](Ctx& x) { return x.open("A", "a", O_CREAT | O_EXCL | O_RDWR, 0644); }},
      {"write A", {"a"}, [](Ctx& x) { return x.write("A", "hello world\n"); }},
      {"open a O_CREAT|O_EXCL again -> EEXIST", {"a"}, [](Ctx& x) { return x.open("T", "a", O_CREAT | O_EXCL | O_RDWR); }},
      {"O_CREAT in missing dir -> ENOENT", {""}, [](Ctx& x) { return x.open("T", "missing/x", O_CREAT | O_RDWR); }},
      {"mkdir d", {"", "d"}, [](Ctx& x) { return R(::mkdir(x.p("d").c_str(), 0755)); }},
      {"open dir O_WRONLY -> EISDIR", {"d"}, [](Ctx& x) { return x.open("T", "d", O_WRONLY); }},
      {"open dir O_RDONLY", {"d"}, [](Ctx& x) { return x.open("D", "d", O_RDONLY | O_DIRECTORY); }},
      {"open file O_DIRECTORY -> ENOTDIR", {"a"}, [](Ctx& x) { return x.open("T", "a", O_RDONLY | O_DIRECTORY); }},
      {"close D", {"d"}, [](Ctx& x) { return x.close("D"); }},
      {"open a/x -> ENOTDIR", {"a"}, [](Ctx& x) { return x.open("T", "a/x", O_RDONLY); }},
      {"create a/x -> ENOTDIR", {"a"}, [](Ctx& x) { return x.open("T", "a/x", O_CREAT | O_RDWR); }},
      {"mkdir a/x -> ENOTDIR", {"a"}, [](Ctx& x) { return R(::mkdir(x.p("a/x").c_str(), 0755)); }},
      {"create 255-byte name", {"", name255}, [=](Ctx& x) { return x.open("N", name255, O_CREAT | O_EXCL | O_RDWR); }},
      {"close N", {name255}, [](Ctx& x) { return x.close("N"); }},
      {"create 256-byte name -> ENAMETOOLONG", {""}, [=](Ctx& x) { return x.open("T", name256, O_CREAT | O_RDWR); }},
      {"stat 256-byte name -> ENAMETOOLONG", {""}, [=](Ctx& x) { return lstat_of(x, name256); }},
      {"mkdir 256-byte name -> ENAMETOOLONG", {""}, [=](Ctx& x) { return R(::mkdir(x.p(name256).c_str(), 0755)); }},
      {"unlink 255-byte name", {"", name255}, [=](Ctx& x) { return R(::unlink(x.p(name255).c_str())); }},
      {"symlink loop1 -> loop2", {"", "loop1"}, [](Ctx& x) { return R(::symlink("loop2", x.p("loop1").c_str())); }},
      {"symlink loop2 -> loop1", {"", "loop2"}, [](Ctx& x) { return R(::symlink("loop1", x.p("loop2").c_str())); }},
      {"open symlink loop -> ELOOP", {"loop1"}, [](Ctx& x) { return x.open("T", "loop1", O_RDONLY); }},
      {"create through symlink loop -> ELOOP", {"loop1"}, [](Ctx& x) { return x.open("T", "loop1", O_CREAT | O_RDWR); }},
      {"stat symlink loop -> ELOOP", {"loop1"}, [](Ctx& x) {
         struct stat st {};
         return R(::stat(x.p("loop1").c_str(), &st));
       }},
      {"open O_NOFOLLOW on symlink -> ELOOP", {"loop1"}, [](Ctx& x) { return x.open("T", "loop1", O_RDONLY | O_NOFOLLOW); }},

      // --- read / write / pwrite / append -------------------------------------
      {"pread A 5@6", {"a"}, [](Ctx& x) { return x.pread("A", 5, 6); }},
      {"read A at EOF", {"a"}, [](Ctx& x) { return x.read("A", 10); }},
      {"pwrite A XY@100 (sparse)", {"a"}, [](Ctx& x) { return x.pwrite("A", "XY", 100); }},
      {"pread A 200@0", {"a"}, [](Ctx& x) { return x.pread("A", 200, 0); }},
      {"lseek A SEEK_END", {"a"}, [](Ctx& x) { return seek(x, "A", 0, SEEK_END); }},
      {"lseek A SEEK_CUR -5", {"a"}, [](Ctx& x) { return seek(x, "A", -5, SEEK_CUR); }},
      {"read A after seek", {"a"}, [](Ctx& x) { return x.read("A", 100); }},
      {"open a O_APPEND as B", {"a"}, [](Ctx& x) { return x.open("B", "a", O_WRONLY | O_APPEND); }},
      {"append tail via B", {"a"}, [](Ctx& x) { return x.write("B", "tail"); }},
      {"pwrite@0 on O_APPEND fd appends (Linux)", {"a"}, [](Ctx& x) { return x.pwrite("B", "zz", 0); }},
      {"lseek B SEEK_CUR", {"a"}, [](Ctx& x) { return seek(x, "B", 0, SEEK_CUR); }},
      {"fstat A", {"a"}, [](Ctx& x) { return x.fstat("A"); }},
      {"pread A all", {"a"}, [](Ctx& x) { return x.pread("A", 4096, 0); }},
      {"read through O_WRONLY fd -> EBADF", {"a"}, [](Ctx& x) { return x.read("B", 4); }},
      {"close B", {"a"}, [](Ctx& x) { return x.close("B"); }},
      {"open a O_RDONLY as RO", {"a"}, [](Ctx& x) { return x.open("RO", "a", O_RDONLY); }},
      {"write through O_RDONLY fd -> EBADF", {"a"}, [](Ctx& x) { return x.write("RO", "no"); }},
      {"close RO", {"a"}, [](Ctx& x) { return x.close("RO"); }},
      {"open a O_TRUNC", {"a"}, [](Ctx& x) { return x.open("T", "a", O_WRONLY | O_TRUNC); }},
      {"close T", {"a"}, [](Ctx& x) { return x.close("T"); }},
      {"write A after O_TRUNC elsewhere", {"a"}, [](Ctx& x) { return x.pwrite("A", "again", 0); }},
      {"slurp a", {"a"}, [](Ctx& x) { return x.slurp("a"); }},

      // --- truncate / ftruncate -------------------------------------------------
      {"truncate a 50", {"a"}, [](Ctx& x) { return R(::truncate(x.p("a").c_str(), 50)); }},
      {"pread A after grow", {"a"}, [](Ctx& x) { return x.pread("A", 100, 0); }},
      {"ftruncate A 5000", {"a"}, [](Ctx& x) { return R(::ftruncate(x.fd("A"), 5000)); }},
      {"fstat A after ftruncate", {"a"}, [](Ctx& x) { return x.fstat("A"); }},
      {"truncate a 3", {"a"}, [](Ctx& x) { return R(::truncate(x.p("a").c_str(), 3)); }},
      {"pread A after shrink", {"a"}, [](Ctx& x) { return x.pread("A", 100, 0); }},
      {"truncate a -1 -> EINVAL", {"a"}, [](Ctx& x) { return R(::truncate(x.p("a").c_str(), -1)); }},
      {"truncate dir -> EISDIR", {"d"}, [](Ctx& x) { return R(::truncate(x.p("d").c_str(), 0)); }},
      {"truncate missing -> ENOENT", {""}, [](Ctx& x) { return R(::truncate(x.p("nope").c_str(), 0)); }},

      // --- fallocate -------------------------------------------------------------
      {"create falloc", {"", "falloc"}, [](Ctx& x) { return x.open("F", "falloc", O_CREAT | O_RDWR, 0644); }},
      {"write 16 KiB x", {"falloc"}, [](Ctx& x) { return x.pwrite("F", std::string(16384, 'x'), 0); }},
      {"fallocate 0 16384+8192 (extends)", {"falloc"}, [](Ctx& x) { return R(::fallocate(x.fd("F"), 0, 16384, 8192)); }},
      {"fallocate KEEP_SIZE beyond EOF", {"falloc"}, [](Ctx& x) { return R(::fallocate(x.fd("F"), FALLOC_FL_KEEP_SIZE, 24576, 8192)); }},
      {"fallocate PUNCH_HOLE|KEEP_SIZE 4096+4096", {"falloc"}, [](Ctx& x) {
         return R(::fallocate(x.fd("F"), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, 4096));
       }},
      {"read punched range", {"falloc"}, [](Ctx& x) { return count_nonzero(x, "F", 16384, 0); }},
      {"fallocate PUNCH_HOLE without KEEP_SIZE -> EOPNOTSUPP", {"falloc"}, [](Ctx& x) {
         return R(::fallocate(x.fd("F"), FALLOC_FL_PUNCH_HOLE, 0, 4096));
       }},
      {"fallocate ZERO_RANGE 100+1000", {"falloc"}, [](Ctx& x) { return R(::fallocate(x.fd("F"), FALLOC_FL_ZERO_RANGE, 100, 1000)); }},
      {"read zeroed range", {"falloc"}, [](Ctx& x) { return count_nonzero(x, "F", 16384, 0); }},
      {"fallocate ZERO_RANGE past EOF extends", {"falloc"}, [](Ctx& x) { return R(::fallocate(x.fd("F"), FALLOC_FL_ZERO_RANGE, 24000, 1000)); }},
      {"fallocate on O_RDONLY fd -> EBADF", {"falloc"}, [](Ctx& x) {
         Outcome o = x.open("FR", "falloc", O_RDONLY);
         if (o.ret != 0) return o;
         o = R(::fallocate(x.fd("FR"), 0, 0, 4096));
         (void)x.close("FR");
         return o;
       }},
      {"close F", {"falloc"}, [](Ctx& x) { return x.close("F"); }},

      // --- SEEK_DATA / SEEK_HOLE --------------------------------------------------
      {"create sparse", {"", "sparse"}, [](Ctx& x) { return x.open("S", "sparse", O_CREAT | O_RDWR, 0644); }},
      {"pwrite 4 KiB at 0", {"sparse"}, [](Ctx& x) { return x.pwrite("S", std::string(4096, 'a'), 0); }},
      {"pwrite 4 KiB at 1 MiB", {"sparse"}, [](Ctx& x) { return x.pwrite("S", std::string(4096, 'b'), kMiB); }},
      {"fsync S", {"sparse"}, [](Ctx& x) { return R(::fsync(x.fd("S"))); }},
      {"SEEK_HOLE from 0", {"sparse"}, [](Ctx& x) { return seek(x, "S", 0, SEEK_HOLE); }},
      {"SEEK_DATA from 4096", {"sparse"}, [](Ctx& x) { return seek(x, "S", 4096, SEEK_DATA); }},
      {"SEEK_HOLE from 1 MiB", {"sparse"}, [](Ctx& x) { return seek(x, "S", kMiB, SEEK_HOLE); }},
      {"SEEK_DATA past EOF -> ENXIO", {"sparse"}, [](Ctx& x) { return seek(x, "S", 2 * kMiB, SEEK_DATA); }},
      {"read in hole", {"sparse"}, [](Ctx& x) { return count_nonzero(x, "S", 8192, 8192); }},
      {"close S", {"sparse"}, [](Ctx& x) { return x.close("S"); }},

      // --- copy_file_range ---------------------------------------------------------
      {"put cfr_src", {"", "cfr_src"}, [=](Ctx& x) { return x.put("cfr_src", pattern); }},
      {"open cfr_src", {"cfr_src"}, [](Ctx& x) { return x.open("CI", "cfr_src", O_RDONLY); }},
      {"create cfr_dst", {"", "cfr_dst"}, [](Ctx& x) { return x.open("CO", "cfr_dst", O_CREAT | O_RDWR, 0644); }},
      {"copy_file_range 500@10 -> @0", {"cfr_src", "cfr_dst"}, [](Ctx& x) {
         loff_t in = 10, out = 0;
         Outcome o = R(::copy_file_range(x.fd("CI"), &in, x.fd("CO"), &out, 500, 0));
         o.extra = "in=" + std::to_string(in) + " out=" + std::to_string(out);
         return o;
       }},
      {"copy_file_range 100@0 -> @8192 (sparse)", {"cfr_dst"}, [](Ctx& x) {
         loff_t in = 0, out = 8192;
         return R(::copy_file_range(x.fd("CI"), &in, x.fd("CO"), &out, 100, 0));
       }},
      {"copy_file_range past src EOF -> 0", {"cfr_dst"}, [](Ctx& x) {
         loff_t in = 5000, out = 0;
         return R(::copy_file_range(x.fd("CI"), &in, x.fd("CO"), &out, 100, 0));
       }},
      {"copy_file_range into O_RDONLY fd -> EBADF", {"cfr_src"}, [](Ctx& x) {
         loff_t in = 0, out = 0;
         return R(::copy_file_range(x.fd("CI"), &in, x.fd("CI"), &out, 10, 0));
       }},
      {"close CI", {"cfr_src"}, [](Ctx& x) { return x.close("CI"); }},
      {"close CO", {"cfr_dst"}, [](Ctx& x) { return x.close("CO"); }},
      {"slurp cfr_dst", {"cfr_dst"}, [](Ctx& x) { return x.slurp("cfr_dst"); }},

      // --- mkdir / rmdir / unlink -----------------------------------------------------
      {"mkdir d again -> EEXIST", {"", "d"}, [](Ctx& x) { return R(::mkdir(x.p("d").c_str(), 0755)); }},
      {"mkdir d/sub 0700", {"d", "d/sub"}, [](Ctx& x) { return R(::mkdir(x.p("d/sub").c_str(), 0700)); }},
      {"rmdir d -> ENOTEMPTY", {"", "d"}, [](Ctx& x) { return R(::rmdir(x.p("d").c_str())); }},
      {"rmdir a (file) -> ENOTDIR", {"a"}, [](Ctx& x) { return R(::rmdir(x.p("a").c_str())); }},
      {"rmdir missing -> ENOENT", {""}, [](Ctx& x) { return R(::rmdir(x.p("missing").c_str())); }},
      {"rmdir d/sub", {"d", "d/sub"}, [](Ctx& x) { return R(::rmdir(x.p("d/sub").c_str())); }},
      {"unlink dir -> EISDIR", {"", "d"}, [](Ctx& x) { return R(::unlink(x.p("d").c_str())); }},
      {"unlink missing -> ENOENT", {""}, [](Ctx& x) { return R(::unlink(x.p("missing").c_str())); }},
      {"rmdir d/. -> EINVAL", {"d"}, [](Ctx& x) { return R(::rmdir(x.p("d/.").c_str())); }},

      // --- rename -------------------------------------------------------------------
      {"put r1", {"", "r1"}, [](Ctx& x) { return x.put("r1", "one"); }},
      {"put r2", {"", "r2"}, [](Ctx& x) { return x.put("r2", "two", 0600); }},
      {"rename file over file", {"", "r1", "r2"}, [](Ctx& x) { return R(::rename(x.p("r1").c_str(), x.p("r2").c_str())); }},
      {"slurp r2", {"r2"}, [](Ctx& x) { return x.slurp("r2"); }},
      {"mkdir rd1 rd2", {"", "rd1", "rd2"}, [](Ctx& x) {
         Outcome o = R(::mkdir(x.p("rd1").c_str(), 0751));
         return o.ret ? o : R(::mkdir(x.p("rd2").c_str(), 0755));
       }},
      {"rename dir over empty dir", {"", "rd1", "rd2"}, [](Ctx& x) { return R(::rename(x.p("rd1").c_str(), x.p("rd2").c_str())); }},
      {"mkdir rd3 + rd3/f, rd4", {"", "rd3", "rd4"}, [](Ctx& x) {
         Outcome o = R(::mkdir(x.p("rd3").c_str(), 0755));
         if (o.ret) return o;
         o = x.put("rd3/f", "in rd3");
         return o.ret ? o : R(::mkdir(x.p("rd4").c_str(), 0755));
       }},
      {"rename dir over non-empty dir -> ENOTEMPTY", {"", "rd3", "rd4"}, [](Ctx& x) {
         return R(::rename(x.p("rd4").c_str(), x.p("rd3").c_str()));
       }},
      {"rename file over dir -> EISDIR", {"r2", "rd3"}, [](Ctx& x) { return R(::rename(x.p("r2").c_str(), x.p("rd3").c_str())); }},
      {"rename dir over file -> ENOTDIR", {"r2", "rd3"}, [](Ctx& x) { return R(::rename(x.p("rd3").c_str(), x.p("r2").c_str())); }},
      {"rename dir into itself -> EINVAL", {"rd3"}, [](Ctx& x) { return R(::rename(x.p("rd3").c_str(), x.p("rd3/sub").c_str())); }},
      {"rename missing -> ENOENT", {""}, [](Ctx& x) { return R(::rename(x.p("missing").c_str(), x.p("zz").c_str())); }},
      {"rename to same name", {"r2"}, [](Ctx& x) { return R(::rename(x.p("r2").c_str(), x.p("r2").c_str())); }},
      {"RENAME_NOREPLACE onto existing -> EEXIST", {"r2", "a"}, [](Ctx& x) { return rename2(x, "r2", "a", RENAME_NOREPLACE); }},
      {"RENAME_NOREPLACE to new name", {"", "r2", "r5"}, [](Ctx& x) { return rename2(x, "r2", "r5", RENAME_NOREPLACE); }},
      {"RENAME_EXCHANGE file <-> dir", {"", "r5", "rd3"}, [](Ctx& x) { return rename2(x, "r5", "rd3", RENAME_EXCHANGE); }},
      {"after exchange: r5/f", {"r5", "r5/f", "rd3"}, [](Ctx& x) { return x.slurp("r5/f"); }},
      {"after exchange: rd3 content", {"rd3"}, [](Ctx& x) { return x.slurp("rd3"); }},
      {"RENAME_EXCHANGE with missing -> ENOENT", {"rd3"}, [](Ctx& x) { return rename2(x, "rd3", "missing", RENAME_EXCHANGE); }},
      {"RENAME_EXCHANGE|NOREPLACE -> EINVAL", {"rd3", "r5"}, [](Ctx& x) {
         return rename2(x, "rd3", "r5", RENAME_EXCHANGE | RENAME_NOREPLACE);
       }},
      {"rename dir across dirs", {"", "d", "r5", "d/moved"}, [](Ctx& x) { return R(::rename(x.p("r5").c_str(), x.p("d/moved").c_str())); }},
      {"slurp d/moved/f", {"d/moved", "d/moved/f"}, [](Ctx& x) { return x.slurp("d/moved/f"); }},

      // --- link -----------------------------------------------------------------------
      {"link a a2", {"", "a", "a2"}, [](Ctx& x) { return R(::link(x.p("a").c_str(), x.p("a2").c_str())); }},
      {"link a d/a3", {"d", "a", "d/a3"}, [](Ctx& x) { return R(::link(x.p("a").c_str(), x.p("d/a3").c_str())); }},
      {"link onto existing -> EEXIST", {"a", "a2"}, [](Ctx& x) { return R(::link(x.p("a").c_str(), x.p("a2").c_str())); }},
      {"link dir -> EPERM", {"d"}, [](Ctx& x) { return R(::link(x.p("d").c_str(), x.p("dlink").c_str())); }},
      {"link missing -> ENOENT", {""}, [](Ctx& x) { return R(::link(x.p("missing").c_str(), x.p("l2").c_str())); }},
      {"write via a2, read via a", {"a", "a2"}, [](Ctx& x) {
         Outcome o = x.open("L", "a2", O_WRONLY);
         if (o.ret) return o;
         o = x.pwrite("L", "linked!", 0);
         (void)x.close("L");
         return o.ret < 0 ? o : x.slurp("a");
       }},
      {"unlink a2", {"", "a", "a2"}, [](Ctx& x) { return R(::unlink(x.p("a2").c_str())); }},
      {"unlink d/a3", {"d", "a", "d/a3"}, [](Ctx& x) { return R(::unlink(x.p("d/a3").c_str())); }},

      // --- symlink / readlink ---------------------------------------------------------------
      {"symlink sl -> a", {"", "sl"}, [](Ctx& x) { return R(::symlink("a", x.p("sl").c_str())); }},
      {"readlink sl", {"sl"}, [](Ctx& x) {
         char buf[256];
         const ssize_t n = ::readlink(x.p("sl").c_str(), buf, sizeof buf);
         return R(n, n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "");
       }},
      {"read through symlink", {"sl", "a"}, [](Ctx& x) { return x.slurp("sl"); }},
      {"symlink long target", {"", "sl2"}, [](Ctx& x) { return R(::symlink(std::string(1000, 't').c_str(), x.p("sl2").c_str())); }},
      {"symlink onto existing -> EEXIST", {"sl"}, [](Ctx& x) { return R(::symlink("x", x.p("sl").c_str())); }},
      {"readlink of file -> EINVAL", {"a"}, [](Ctx& x) {
         char buf[16];
         return R(::readlink(x.p("a").c_str(), buf, sizeof buf));
       }},
      {"readlink into short buffer truncates", {"sl2"}, [](Ctx& x) {
         char buf[10];
         const ssize_t n = ::readlink(x.p("sl2").c_str(), buf, sizeof buf);
         return R(n, n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "");
       }},
      {"symlink dangling; open -> ENOENT", {"", "dangle"}, [](Ctx& x) {
         Outcome o = R(::symlink("nowhere", x.p("dangle").c_str()));
         return o.ret ? o : x.open("T", "dangle", O_RDONLY);
       }},
      {"O_CREAT through dangling symlink creates target", {"", "dangle", "nowhere"}, [](Ctx& x) {
         Outcome o = x.open("T", "dangle", O_CREAT | O_WRONLY, 0640);
         if (o.ret == 0) (void)x.close("T");
         return o;
       }},
      {"symlink to dir; create through it", {"", "dl", "d/via"}, [](Ctx& x) {
         Outcome o = R(::symlink("d", x.p("dl").c_str()));
         return o.ret ? o : x.put("dl/via", "via symlink");
       }},

      // --- chmod / chown / utimensat -----------------------------------------------------------
      {"chmod a 0600", {"a"}, [](Ctx& x) { return R(::chmod(x.p("a").c_str(), 0600)); }},
      {"fchmod A 04755", {"a"}, [](Ctx& x) { return R(::fchmod(x.fd("A"), 04755)); }},
      {"chown a 1234:5678 (clears setuid)", {"a"}, [](Ctx& x) { return R(::chown(x.p("a").c_str(), 1234, 5678)); }},
      {"chown a -1:-1", {"a"}, [](Ctx& x) { return R(::chown(x.p("a").c_str(), static_cast<uid_t>(-1), static_cast<gid_t>(-1))); }},
      {"fchown A 0:0", {"a"}, [](Ctx& x) { return R(::fchown(x.fd("A"), 0, 0)); }},
      {"chmod a 0", {"a"}, [](Ctx& x) { return R(::chmod(x.p("a").c_str(), 0)); }},
      {"root reads a mode-0 file", {"a"}, [](Ctx& x) { return x.slurp("a"); }},
      {"chmod a 0644", {"a"}, [](Ctx& x) { return R(::chmod(x.p("a").c_str(), 0644)); }},
      {"lchown symlink 42:43", {"sl", "a"}, [](Ctx& x) { return R(::lchown(x.p("sl").c_str(), 42, 43)); }},
      {"chmod dir 02775", {"d"}, [](Ctx& x) { return R(::chmod(x.p("d").c_str(), 02775)); }},
      {"chmod missing -> ENOENT", {""}, [](Ctx& x) { return R(::chmod(x.p("missing").c_str(), 0644)); }},
      {"utimensat exact ns", {"a"}, [](Ctx& x) {
         Outcome o = set_times(x, "a", {1000, 123456789}, {2000, 987654321});
         o.extra = times_of(x, "a");
         return o;
       }},
      {"utimensat atime UTIME_NOW, mtime UTIME_OMIT", {"a"}, [](Ctx& x) {
         Outcome o = set_times(x, "a", {0, UTIME_NOW}, {0, UTIME_OMIT});
         o.extra = mtime_of(x, "a");
         return o;
       }},
      {"utimensat atime UTIME_OMIT, mtime exact", {"a"}, [](Ctx& x) {
         Outcome o = set_times(x, "a", {0, UTIME_OMIT}, {3000, 1});
         o.extra = mtime_of(x, "a");  // atime is "now" from the step before
         return o;
       }},
      {"utimensat both UTIME_OMIT", {"a"}, [](Ctx& x) {
         Outcome o = set_times(x, "a", {0, UTIME_OMIT}, {0, UTIME_OMIT});
         o.extra = mtime_of(x, "a");
         return o;
       }},
      {"utimensat UTIME_NOW both", {"a"}, [](Ctx& x) { return set_times(x, "a", {0, UTIME_NOW}, {0, UTIME_NOW}); }},
      {"futimens A exact", {"a"}, [](Ctx& x) {
         const timespec ts[2] = {{5, 5}, {6, 999999999}};
         Outcome o = R(::futimens(x.fd("A"), ts));
         o.extra = times_of(x, "a");
         return o;
       }},
      {"utimensat symlink NOFOLLOW", {"sl", "a"}, [](Ctx& x) {
         Outcome o = set_times(x, "sl", {7, 7}, {8, 8}, AT_SYMLINK_NOFOLLOW);
         o.extra = times_of(x, "sl") + " / " + times_of(x, "a");
         return o;
       }},
      {"utimensat dir exact", {"d"}, [](Ctx& x) {
         Outcome o = set_times(x, "d", {9, 9}, {10, 10});
         o.extra = times_of(x, "d");
         return o;
       }},
      {"utimensat negative/big nsec -> EINVAL", {"a"}, [](Ctx& x) { return set_times(x, "a", {0, 1000000000}, {0, 0}); }},

      // --- xattrs ---------------------------------------------------------------------------------
      {"setxattr user.k", {"a"}, [](Ctx& x) { return R(::setxattr(x.p("a").c_str(), "user.k", "v1", 2, 0)); }},
      {"getxattr user.k", {"a"}, [](Ctx& x) { return xget(x, "a", "user.k"); }},
      {"getxattr size query", {"a"}, [](Ctx& x) { return xget(x, "a", "user.k", 0); }},
      {"getxattr short buffer -> ERANGE", {"a"}, [](Ctx& x) { return xget(x, "a", "user.k", 1); }},
      {"getxattr missing -> ENODATA", {"a"}, [](Ctx& x) { return xget(x, "a", "user.missing"); }},
      {"setxattr XATTR_CREATE existing -> EEXIST", {"a"}, [](Ctx& x) {
         return R(::setxattr(x.p("a").c_str(), "user.k", "v2", 2, XATTR_CREATE));
       }},
      {"setxattr XATTR_REPLACE missing -> ENODATA", {"a"}, [](Ctx& x) {
         return R(::setxattr(x.p("a").c_str(), "user.new", "v", 1, XATTR_REPLACE));
       }},
      {"setxattr XATTR_REPLACE existing", {"a"}, [](Ctx& x) {
         return R(::setxattr(x.p("a").c_str(), "user.k", "value-two", 9, XATTR_REPLACE));
       }},
      {"setxattr binary value", {"a"}, [](Ctx& x) {
         const char v[] = {'\0', '\x01', '\xff', '\n'};
         return R(::setxattr(x.p("a").c_str(), "user.bin", v, sizeof v, XATTR_CREATE));
       }},
      {"setxattr empty value", {"a"}, [](Ctx& x) { return R(::setxattr(x.p("a").c_str(), "user.empty", "", 0, 0)); }},
      {"getxattr binary", {"a"}, [](Ctx& x) { return xget(x, "a", "user.bin"); }},
      {"getxattr empty", {"a"}, [](Ctx& x) { return xget(x, "a", "user.empty"); }},
      {"listxattr", {"a"}, [](Ctx& x) { return xlist(x, "a"); }},
      {"listxattr size query", {"a"}, [](Ctx& x) { return R(::llistxattr(x.p("a").c_str(), nullptr, 0)); }},
      {"removexattr user.k", {"a"}, [](Ctx& x) { return R(::removexattr(x.p("a").c_str(), "user.k")); }},
      {"removexattr again -> ENODATA", {"a"}, [](Ctx& x) { return R(::removexattr(x.p("a").c_str(), "user.k")); }},
      {"setxattr on dir", {"d"}, [](Ctx& x) { return R(::setxattr(x.p("d").c_str(), "user.dir", "dv", 2, 0)); }},
      {"listxattr dir", {"d"}, [](Ctx& x) { return xlist(x, "d"); }},
      {"fsetxattr via fd", {"a"}, [](Ctx& x) { return R(::fsetxattr(x.fd("A"), "user.fd", "f", 1, 0)); }},
      {"fgetxattr via fd", {"a"}, [](Ctx& x) {
         char buf[16];
         const ssize_t n = ::fgetxattr(x.fd("A"), "user.fd", buf, sizeof buf);
         return R(n, n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "");
       }},
      {"lsetxattr user.* on symlink -> EPERM", {"sl"}, [](Ctx& x) { return R(::lsetxattr(x.p("sl").c_str(), "user.s", "v", 1, 0)); }},
      {"setxattr trusted.t (root)", {"a"}, [](Ctx& x) { return R(::setxattr(x.p("a").c_str(), "trusted.t", "tv", 2, 0)); }},
      {"getxattr trusted.t", {"a"}, [](Ctx& x) { return xget(x, "a", "trusted.t"); }},
      {"setxattr bad namespace -> EOPNOTSUPP", {"a"}, [](Ctx& x) { return R(::setxattr(x.p("a").c_str(), "bogus.k", "v", 1, 0)); }},

      // --- statfs ------------------------------------------------------------------------------------
      {"statvfs sanity", {""}, [](Ctx& x) {
         struct statvfs sv {};
         Outcome o = R(::statvfs(x.root().c_str(), &sv));
         o.extra = "namemax=" + std::to_string(sv.f_namemax) + " bsize=" + std::to_string(sv.f_bsize) +
                   " blocks>0=" + std::to_string(sv.f_blocks > 0) +
                   " bfree<=blocks=" + std::to_string(sv.f_bfree <= sv.f_blocks) +
                   " bavail<=bfree=" + std::to_string(sv.f_bavail <= sv.f_bfree) +
                   " files>0=" + std::to_string(sv.f_files > 0);
         return o;
       }},

      // --- special files -------------------------------------------------------------------------------
      {"mkfifo fifo", {"", "fifo"}, [](Ctx& x) { return R(::mkfifo(x.p("fifo").c_str(), 0640)); }},
      {"mkfifo again -> EEXIST", {"fifo"}, [](Ctx& x) { return R(::mkfifo(x.p("fifo").c_str(), 0640)); }},
      {"mknod socket", {"", "sock"}, [](Ctx& x) { return R(::mknod(x.p("sock").c_str(), S_IFSOCK | 0600, 0)); }},
      {"mknod char device 1,3", {"", "cdev"}, [](Ctx& x) { return R(::mknod(x.p("cdev").c_str(), S_IFCHR | 0644, makedev(1, 3))); }},
      {"mknod block device 7,0", {"", "bdev"}, [](Ctx& x) { return R(::mknod(x.p("bdev").c_str(), S_IFBLK | 0600, makedev(7, 0))); }},
      {"mknod regular", {"", "nodreg"}, [](Ctx& x) { return R(::mknod(x.p("nodreg").c_str(), S_IFREG | 0604, 0)); }},
      {"fifo nonblocking open for read", {"fifo"}, [](Ctx& x) {
         Outcome o = x.open("FI", "fifo", O_RDONLY | O_NONBLOCK);
         if (o.ret == 0) (void)x.close("FI");
         return o;
       }},
      {"fifo O_WRONLY|O_NONBLOCK without reader -> ENXIO", {"fifo"}, [](Ctx& x) { return x.open("FI", "fifo", O_WRONLY | O_NONBLOCK); }},

      // --- flock / posix locks --------------------------------------------------------------------------
      {"create lockf", {"", "lockf"}, [](Ctx& x) { return x.open("LK", "lockf", O_CREAT | O_RDWR, 0666); }},
      {"flock LOCK_EX", {"lockf"}, [](Ctx& x) { return R(::flock(x.fd("LK"), LOCK_EX)); }},
      {"other process flock LOCK_EX|LOCK_NB -> EWOULDBLOCK", {"lockf"}, [](Ctx& x) { return child_flock(x, "lockf", LOCK_EX | LOCK_NB); }},
      {"other process flock LOCK_SH|LOCK_NB -> EWOULDBLOCK", {"lockf"}, [](Ctx& x) { return child_flock(x, "lockf", LOCK_SH | LOCK_NB); }},
      {"flock LOCK_UN", {"lockf"}, [](Ctx& x) { return R(::flock(x.fd("LK"), LOCK_UN)); }},
      {"other process flock after unlock", {"lockf"}, [](Ctx& x) { return child_flock(x, "lockf", LOCK_EX | LOCK_NB); }},
      {"F_SETLK write 0..100", {"lockf"}, [](Ctx& x) { return setlk(x, "LK", F_WRLCK, 0, 100); }},
      {"other process F_SETLK 50..60 -> EAGAIN", {"lockf"}, [](Ctx& x) { return child_setlk(x, "lockf", F_WRLCK, 50, 10); }},
      {"other process F_SETLK read 0..10 -> EAGAIN", {"lockf"}, [](Ctx& x) { return child_setlk(x, "lockf", F_RDLCK, 0, 10); }},
      {"other process F_GETLK sees the lock", {"lockf"}, [](Ctx& x) { return child_getlk(x, "lockf", 0, 0); }},
      {"other process F_SETLK 200..300 (free)", {"lockf"}, [](Ctx& x) { return child_setlk(x, "lockf", F_WRLCK, 200, 100); }},
      {"F_SETLK unlock 0..100", {"lockf"}, [](Ctx& x) { return setlk(x, "LK", F_UNLCK, 0, 100); }},
      {"other process F_SETLK 50..60 after unlock", {"lockf"}, [](Ctx& x) { return child_setlk(x, "lockf", F_WRLCK, 50, 10); }},
      {"other process F_GETLK after unlock", {"lockf"}, [](Ctx& x) { return child_getlk(x, "lockf", 0, 0); }},
      {"F_SETLK again, closing another fd of the file drops it", {"lockf"}, [](Ctx& x) {
         Outcome o = setlk(x, "LK", F_WRLCK, 0, 0);
         if (o.ret) return o;
         o = x.open("LK2", "lockf", O_RDONLY);
         if (o.ret) return o;
         (void)x.close("LK2");  // POSIX: any close by the owner releases its locks
         return child_setlk(x, "lockf", F_WRLCK, 0, 10);
       }},
      {"close LK", {"lockf"}, [](Ctx& x) { return x.close("LK"); }},

      // --- open files survive rename and unlink -----------------------------------------------------------
      {"create keep", {"", "keep"}, [](Ctx& x) { return x.open("K", "keep", O_CREAT | O_RDWR, 0644); }},
      {"write K abc", {"keep"}, [](Ctx& x) { return x.write("K", "abc"); }},
      {"rename keep -> kept", {"", "keep", "kept"}, [](Ctx& x) { return R(::rename(x.p("keep").c_str(), x.p("kept").c_str())); }},
      {"write K def after rename", {"kept"}, [](Ctx& x) { return x.write("K", "def"); }},
      {"fstat K after rename", {"kept"}, [](Ctx& x) { return x.fstat("K"); }},
      {"slurp kept", {"kept"}, [](Ctx& x) { return x.slurp("kept"); }},
      {"unlink kept while open", {"", "kept"}, [](Ctx& x) { return R(::unlink(x.p("kept").c_str())); }},
      {"pwrite K zz@10 after unlink", {""}, [](Ctx& x) { return x.pwrite("K", "zz", 10); }},
      {"fstat K after unlink", {""}, [](Ctx& x) { return x.fstat("K"); }},
      {"pread K after unlink", {""}, [](Ctx& x) { return x.pread("K", 100, 0); }},
      {"ftruncate K 2 after unlink", {""}, [](Ctx& x) { return R(::ftruncate(x.fd("K"), 2)); }},
      {"fchmod K after unlink", {""}, [](Ctx& x) { return R(::fchmod(x.fd("K"), 0600)); }},
      {"fstat K after ftruncate+fchmod", {""}, [](Ctx& x) { return x.fstat("K"); }},
      {"fsync K after unlink", {""}, [](Ctx& x) { return R(::fsync(x.fd("K"))); }},
      {"close K", {""}, [](Ctx& x) { return x.close("K"); }},

      // --- directory renamed while a file inside is open -------------------------------------------------
      {"mkdir od; create od/f", {"", "od", "od/f"}, [](Ctx& x) {
         Outcome o = R(::mkdir(x.p("od").c_str(), 0755));
         return o.ret ? o : x.open("O", "od/f", O_CREAT | O_RDWR, 0644);
       }},
      {"write O 1", {"od/f"}, [](Ctx& x) { return x.write("O", "1"); }},
      {"rename od -> od2", {"", "od", "od2", "od2/f"}, [](Ctx& x) { return R(::rename(x.p("od").c_str(), x.p("od2").c_str())); }},
      {"write O 2 after dir rename", {"od2/f"}, [](Ctx& x) { return x.write("O", "2"); }},
      {"fstat O", {"od2/f"}, [](Ctx& x) { return x.fstat("O"); }},
      {"fsync O", {"od2/f"}, [](Ctx& x) { return R(::fsync(x.fd("O"))); }},
      {"slurp od2/f", {"od2/f"}, [](Ctx& x) { return x.slurp("od2/f"); }},
      {"open od/f -> ENOENT", {"od2"}, [](Ctx& x) { return x.open("T", "od/f", O_RDONLY); }},
      {"create od2/g next to open file", {"od2", "od2/g"}, [](Ctx& x) { return x.put("od2/g", "g"); }},
      {"close O", {"od2/f"}, [](Ctx& x) { return x.close("O"); }},

      // --- permissions as nobody (default_permissions) ----------------------------------------------------
      {"put secret 0600", {"", "secret"}, [](Ctx& x) { return x.put("secret", "top secret", 0600); }},
      {"mkdir rootdir 0755", {"", "rootdir"}, [](Ctx& x) { return R(::mkdir(x.p("rootdir").c_str(), 0755)); }},
      {"mkdir sticky 01777", {"", "sticky"}, [](Ctx& x) {
         Outcome o = R(::mkdir(x.p("sticky").c_str(), 0700));
         return o.ret ? o : R(::chmod(x.p("sticky").c_str(), 01777));
       }},
      {"put sticky/rootfile 0666", {"sticky", "sticky/rootfile"}, [](Ctx& x) { return x.put("sticky/rootfile", "root's", 0666); }},
      {"put suidw 06777", {"", "suidw"}, [](Ctx& x) { return x.put("suidw", "suid data", 06777); }},
      {"nobody: read 0600 root file -> EACCES", {"secret"}, [](Ctx& x) {
         return nobody([&] { return x.slurp("secret"); });
       }},
      {"nobody: create in 0755 root dir -> EACCES", {"rootdir"}, [](Ctx& x) {
         return nobody([&] { return R(::open(x.p("rootdir/new").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644) < 0 ? -1 : 0); });
       }},
      {"nobody: mkdir in 0755 root dir -> EACCES", {"rootdir"}, [](Ctx& x) {
         return nobody([&] { return R(::mkdir(x.p("rootdir/nd").c_str(), 0755)); });
       }},
      {"nobody: chmod another's file -> EPERM", {"secret"}, [](Ctx& x) {
         return nobody([&] { return R(::chmod(x.p("secret").c_str(), 0777)); });
       }},
      {"nobody: chown another's file -> EPERM", {"secret"}, [](Ctx& x) {
         return nobody([&] { return R(::chown(x.p("secret").c_str(), 65534, 65534)); });
       }},
      {"nobody: utimensat explicit on another's file -> EPERM", {"secret"}, [](Ctx& x) {
         return nobody([&] { return set_times(x, "secret", {1, 1}, {1, 1}); });
       }},
      {"nobody: utimensat UTIME_NOW without write access -> EACCES", {"secret"}, [](Ctx& x) {
         return nobody([&] { return set_times(x, "secret", {0, UTIME_NOW}, {0, UTIME_NOW}); });
       }},
      {"nobody: setxattr on another's file -> EACCES/EPERM", {"secret"}, [](Ctx& x) {
         return nobody([&] { return R(::setxattr(x.p("secret").c_str(), "user.n", "v", 1, 0)); });
       }},
      {"nobody: unlink root file in sticky dir -> EPERM", {"sticky", "sticky/rootfile"}, [](Ctx& x) {
         return nobody([&] { return R(::unlink(x.p("sticky/rootfile").c_str())); });
       }},
      {"nobody: rename root file in sticky dir -> EPERM", {"sticky", "sticky/rootfile"}, [](Ctx& x) {
         return nobody([&] { return R(::rename(x.p("sticky/rootfile").c_str(), x.p("sticky/moved").c_str())); });
       }},
      {"nobody: write to world-writable root file in sticky dir", {"sticky/rootfile"}, [](Ctx& x) {
         return nobody([&] {
           const int f = ::open(x.p("sticky/rootfile").c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
           if (f < 0) return R(-1);
           Outcome o = R(::write(f, "+nobody", 7));
           ::close(f);
           return o;
         });
       }},
      {"nobody: create own file in sticky dir", {"sticky", "sticky/nb"}, [](Ctx& x) {
         return nobody([&] { return x.put("sticky/nb", "nobody's", 0644); });
       }},
      {"nobody: mkdir own dir in sticky dir", {"sticky", "sticky/nbdir"}, [](Ctx& x) {
         return nobody([&] { return R(::mkdir(x.p("sticky/nbdir").c_str(), 0750)); });
       }},
      {"nobody: symlink in sticky dir", {"sticky", "sticky/nbsl"}, [](Ctx& x) {
         return nobody([&] { return R(::symlink("nb", x.p("sticky/nbsl").c_str())); });
       }},
      {"nobody: mkfifo in sticky dir", {"sticky", "sticky/nbfifo"}, [](Ctx& x) {
         return nobody([&] { return R(::mkfifo(x.p("sticky/nbfifo").c_str(), 0600)); });
       }},
      {"nobody: chmod own file", {"sticky/nb"}, [](Ctx& x) {
         return nobody([&] { return R(::chmod(x.p("sticky/nb").c_str(), 0600)); });
       }},
      {"nobody: chown own file to root -> EPERM", {"sticky/nb"}, [](Ctx& x) {
         return nobody([&] { return R(::chown(x.p("sticky/nb").c_str(), 0, 0)); });
       }},
      {"nobody: setxattr on own file", {"sticky/nb"}, [](Ctx& x) {
         return nobody([&] { return R(::setxattr(x.p("sticky/nb").c_str(), "user.mine", "m", 1, 0)); });
       }},
      {"nobody: utimensat explicit on own file", {"sticky/nb"}, [](Ctx& x) {
         return nobody([&] {
           Outcome o = set_times(x, "sticky/nb", {11, 11}, {12, 12});
           o.extra = times_of(x, "sticky/nb");
           return o;
         });
       }},
      {"nobody: write to setuid file clears setuid", {"suidw"}, [](Ctx& x) {
         return nobody([&] {
           const int f = ::open(x.p("suidw").c_str(), O_WRONLY | O_CLOEXEC);
           if (f < 0) return R(-1);
           Outcome o = R(::pwrite(f, "N", 1, 0));
           ::close(f);
           return o;
         });
       }},
      {"nobody: truncate root's 0600 file -> EACCES", {"secret"}, [](Ctx& x) {
         return nobody([&] { return R(::truncate(x.p("secret").c_str(), 0)); });
       }},
      {"nobody: link to root's 0600 file (protected_hardlinks)", {"sticky", "secret"}, [](Ctx& x) {
         return nobody([&] { return R(::link(x.p("secret").c_str(), x.p("sticky/hl").c_str())); });
       }},
      {"nobody: unlink own file in sticky dir", {"sticky", "sticky/nb"}, [](Ctx& x) {
         return nobody([&] { return R(::unlink(x.p("sticky/nb").c_str())); });
       }},
      {"root: unlink nobody's fifo in sticky dir", {"sticky", "sticky/nbfifo"}, [](Ctx& x) {
         return R(::unlink(x.p("sticky/nbfifo").c_str()));
       }},
      {"close A", {"a"}, [](Ctx& x) { return x.close("A"); }},
  };
  return s;
}

class PosixDiff : public ::testing::Test {
 protected:
  void SetUp() override {
    // nobody must be able to reach both roots.
    ASSERT_EQ(::chmod(tmp_.path().c_str(), 0755), 0);
    plain_ = tmp_.mkdir("plain", 0755);
    backing_ = tmp_.mkdir("backing", 0755);
    mnt_ = tmp_.mkdir("mnt", 0755);
  }
  TempDir tmp_{"mirrorfs-posix"};
  std::string plain_, backing_, mnt_;
};

TEST_F(PosixDiff, ScriptMatchesPlainDirectory) {
  const std::vector<Step> steps = script();
  std::vector<std::string> expected, actual;
  {
    Ctx plain(plain_);
    expected = run_script(plain, steps);
  }
  {
    MountGuard m(backing_, mnt_);
    ASSERT_TRUE(m.ok()) << m.error();
    {
      Ctx mirror(mnt_);
      actual = run_script(mirror, steps);
    }
    ASSERT_EQ(expected.size(), actual.size());
    if (std::getenv("MIRRORFS_POSIX_DUMP") != nullptr) {  // to review the script itself
      for (const std::string& line : expected) std::printf("%s\n", line.c_str());
    }
    int diffs = 0;
    for (std::size_t i = 0; i < steps.size(); ++i) {
      if (expected[i] != actual[i]) ++diffs;
      EXPECT_EQ(expected[i], actual[i]) << "step " << i << " (" << steps[i].name << "): plain vs mirrorfs";
    }
    EXPECT_EQ(diffs, 0);

    // The mounted view and the backing directory are the same tree. File
    // mtimes are checked by MtimeOfWrittenFileMatchesBacking on their own.
    CompareOptions same;
    same.mtime = false;
    const auto view = compare_trees(backing_, mnt_, same);
    EXPECT_TRUE(view.empty()) << "backing vs mount:\n" << join_lines(view);
  }
  // The backing directory ended like the plain one (times differ by design).
  CompareOptions opt;
  opt.mtime = false;
  opt.dir_mtime = false;
  const auto tree = compare_trees(plain_, backing_, opt);
  EXPECT_TRUE(tree.empty()) << "plain vs backing:\n" << join_lines(tree);
}

// With the writeback cache the kernel stamps mtime itself on write(); what
// the mount shows must be what the backing file (and so every replica) has.
TEST_F(PosixDiff, MtimeOfWrittenFileMatchesBacking) {
  MountGuard m(backing_, mnt_);
  ASSERT_TRUE(m.ok()) << m.error();
  {
    Ctx x(mnt_);
    ASSERT_EQ(x.open("W", "w", O_CREAT | O_EXCL | O_WRONLY, 0644).ret, 0);
    ASSERT_EQ(x.write("W", "hello").ret, 5);
    ASSERT_EQ(x.close("W").ret, 0);
    ASSERT_EQ(x.put("wc", "written then fchmod", 0600).ret, 0);
  }
  struct stat through {}, direct {};
  for (const char* name : {"w", "wc"}) {
    ASSERT_EQ(::stat((mnt_ + "/" + name).c_str(), &through), 0);
    ASSERT_EQ(::stat((backing_ + "/" + name).c_str(), &direct), 0);
    EXPECT_EQ(times_of_stat(through), times_of_stat(direct))
        << name << ": mtime through the mount vs in the backing directory";
  }
  const auto d = compare_trees(backing_, mnt_);
  EXPECT_TRUE(d.empty()) << join_lines(d);
}

// DESIGN "known traps": a passthrough with attribute caching showed a stale
// size forever (bindfs: 89609 for a 196-byte file) after a write straight to
// the backing directory. After the attribute timeout at the latest (default
// 1 s), the mount must show what the backing file holds.
TEST_F(PosixDiff, WriteStraightToBackingBecomesVisible) {
  MountGuard m(backing_, mnt_);
  ASSERT_TRUE(m.ok()) << m.error();
  Ctx through(mnt_), direct(backing_);
  ASSERT_EQ(through.put("f", std::string(89609, 'x')).ret, 0);
  ASSERT_EQ(through.put("g", "g").ret, 0);
  ASSERT_EQ(::link(through.p("g").c_str(), through.p("g2").c_str()), 0);
  struct stat st {};
  ASSERT_EQ(::stat(through.p("f").c_str(), &st), 0);
  ASSERT_EQ(st.st_size, 89609);
  ASSERT_EQ(through.slurp("f").ret, 89609);  // page cache filled too
  // Behind the kernel's back: shrink and rewrite f, add a link to g.
  ASSERT_EQ(::truncate(direct.p("f").c_str(), 0), 0);
  {
    const int fd = ::open(direct.p("f").c_str(), O_WRONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::write(fd, std::string(196, 'y').data(), 196), 196);
    ::close(fd);
  }
  ASSERT_EQ(::link(direct.p("g").c_str(), direct.p("g3").c_str()), 0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  std::string seen;
  for (;;) {
    struct stat f {}, g {};
    const Outcome content = through.slurp("f");
    const bool ok = ::stat(through.p("f").c_str(), &f) == 0 && ::stat(through.p("g").c_str(), &g) == 0 &&
                    f.st_size == 196 && g.st_nlink == 3 && content.extra == std::string(196, 'y');
    seen = "size " + std::to_string(f.st_size) + ", read " + std::to_string(content.ret) +
           " bytes, nlink of g " + std::to_string(g.st_nlink);
    if (ok) break;
    if (std::chrono::steady_clock::now() > deadline) {
      ADD_FAILURE() << "3 s after writing the backing file directly the mount still shows " << seen
                    << " (backing: size 196, nlink of g 3)";
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

// SOURCE == MOUNTPOINT: the over-mount in place serves what was there before.
TEST_F(PosixDiff, OvermountInPlaceServesExistingTree) {
  Ctx pre(backing_);
  ASSERT_EQ(pre.put("existing", "before mount").ret, 0);
  ASSERT_EQ(::mkdir(pre.p("sub").c_str(), 0750), 0);
  ASSERT_EQ(pre.put("sub/f", "nested", 0640).ret, 0);
  ASSERT_EQ(::symlink("existing", pre.p("sl").c_str()), 0);
  ASSERT_EQ(::setxattr(pre.p("existing").c_str(), "user.x", "1", 1, 0), 0);
  ASSERT_EQ(::link(pre.p("existing").c_str(), pre.p("hard").c_str()), 0);
  // A copy of the tree from before the mount, to compare the mounted view with.
  {
    Ctx copy(plain_);
    ASSERT_EQ(copy.put("existing", "before mount").ret, 0);
    ASSERT_EQ(::mkdir(copy.p("sub").c_str(), 0750), 0);
    ASSERT_EQ(copy.put("sub/f", "nested", 0640).ret, 0);
    ASSERT_EQ(::symlink("existing", copy.p("sl").c_str()), 0);
    ASSERT_EQ(::setxattr(copy.p("existing").c_str(), "user.x", "1", 1, 0), 0);
    ASSERT_EQ(::link(copy.p("existing").c_str(), copy.p("hard").c_str()), 0);
  }
  MountGuard m(backing_, backing_);
  ASSERT_TRUE(m.ok()) << m.error();
  CompareOptions opt;
  opt.mtime = false;
  opt.dir_mtime = false;
  const auto d = compare_trees(plain_, backing_, opt);
  EXPECT_TRUE(d.empty()) << join_lines(d);
  {
    Ctx through(backing_);
    EXPECT_EQ(through.put("new", "through the over-mount").ret, 0);
    EXPECT_EQ(through.slurp("existing").extra, "before mount");
  }
  EXPECT_TRUE(m.unmount());
  Ctx after(backing_);
  EXPECT_EQ(after.slurp("new").extra, "through the over-mount");
}

}  // namespace
}  // namespace mirrorfs::test
