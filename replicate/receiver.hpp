// The receiving end of replication: applies protocol Requests under a root
// directory. Used in-process by the local transport and by `mirrorfs agent
// ROOT` (run_agent) at the far end of an ssh/pipe transport.
//
// Every request is untrusted. Paths are checked (no absolute paths, no "."
// or "..", no empty components, no NUL, names <= 255 bytes, paths <= 4095),
// parents are opened with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) from
// the root fd, and the final name is operated on with *at() calls that never
// follow a symlink. Every request re-resolves its path, so a directory swapped
// for a symlink between requests fails with ELOOP instead of escaping.
//
// Files: BeginFile stages ".mirrorfs.tmp.<random>" in the parent directory;
// Write/Truncate go to it; CommitFile applies meta (when meta.mode != 0),
// fsyncs and renames it over the path. A Delta stream is patched against the
// current file into a temp the same way; it must be applied to the very file
// the path's Signature described (dev, ino, size, mtime, ctime, remembered
// until the next Barrier), else it fails ESTALE (the sender then ships the
// file whole): a namespace op between the two must not get a delta patched
// onto the wrong basis. Writes without BeginFile go in place. Zero blocks of
// a patched file are left as holes.
// Barrier fsyncs every file and directory touched since the previous one.
// meta.mode == 0 means "no metadata" wherever a request carries meta.
//
// Thread safety: none; one Receiver per session, used from one thread.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include <spdlog/logger.h>

#include "fs/api/fd.hpp"
#include "fs/api/result.hpp"
#include "replicate/delta.hpp"
#include "replicate/protocol.hpp"

namespace mirrorfs::replicate {

class Receiver {
 public:
  explicit Receiver(Fd root, std::shared_ptr<spdlog::logger> log);
  ~Receiver();
  Receiver(const Receiver&) = delete;
  Receiver& operator=(const Receiver&) = delete;

  // Applies one request; never throws. A failure is a Reply with err != 0.
  [[nodiscard]] Reply handle(const Request& req) noexcept;

  // Identity of the file a Signature read (present = false: nothing was there).
  struct Basis {
    bool present = false;
    dev_t dev = 0;
    ino_t ino = 0;
    off_t size = 0;
    timespec mtime{}, ctime{};
  };

 private:
  struct Staged {  // BeginFile .. CommitFile
    Fd dir;        // where the temp lives
    std::string tmp;
    Fd file;
  };
  struct Patching {  // Delta chunks .. kLast
    Fd dir;
    std::string tmp;
    Fd file, basis;
    std::unique_ptr<PatchStream> stream;
  };

  Result<std::string> dispatch(const Request& r);
  Result<std::string> op_hello(const Request& r);
  Result<void> op_mkdir(const Request& r);
  Result<void> op_begin(const Request& r);
  Result<void> op_write(const Request& r);
  Result<void> op_truncate(const Request& r);
  Result<void> op_commit(const Request& r);
  Result<std::string> op_signature(const Request& r);
  Result<void> op_delta(const Request& r);
  Result<void> start_delta(const std::string& path);
  Result<void> op_punch(const Request& r);
  Result<void> finish_delta(const std::string& path, Patching& p, const Meta& meta);
  Result<void> op_set_meta(const Request& r);
  Result<void> op_symlink(const Request& r);
  Result<void> op_link(const Request& r);
  Result<void> op_mknod(const Request& r);
  Result<void> op_rename(const Request& r);
  Result<void> op_remove(const Request& r);
  Result<void> op_barrier();
  Result<std::string> op_stat(const Request& r);
  Result<std::string> op_checksum(const Request& r);
  Result<std::string> op_list(const Request& r);

  // Marks fd (file or directory) for the next Barrier; takes a dup if needed.
  Result<void> touch(int fd);
  // Gives the entry just made at tmp (in parent_fd) its metadata and moves
  // it over name; on failure the temp is removed.
  Result<void> install_temp(int parent_fd, const std::string& tmp, const std::string& name,
                            const Meta& meta);
  Result<void> touch_owned(Fd fd);
  void forget_under(const std::string& path);  // drops staged state at/below path
  void rekey(const std::string& from, const std::string& to, bool exchange);

  Fd root_;
  std::shared_ptr<spdlog::logger> log_;
  std::map<std::string, Staged> staged_;
  std::map<std::string, Patching> patching_;
  std::map<std::string, Basis> signed_;  // Signature -> Delta; cleared at Barrier
  std::map<std::pair<dev_t, ino_t>, Fd> dirty_;  // fsync at the next Barrier
};

// `mirrorfs agent ROOT`: serves frames read from in_fd, replies on out_fd,
// until EOF on in_fd. Logs to stderr only (stdout carries frames).
// Returns the process exit code: 0 after a clean EOF, 1 on an I/O error or
// an unusable root, 2 on a protocol error.
int run_agent(const std::string& root, int in_fd, int out_fd);

// ---- helpers shared by the receiver's source files (and its tests) ----
namespace target {

// A path's parent directory (opened O_RDONLY|O_DIRECTORY beneath the root)
// and final name. For the root itself (path "", allow_root) fd is the root
// and name is ".".
struct Parent {
  Fd owned;
  int fd = -1;
  std::string name;
};

[[nodiscard]] Result<void> check_path(std::string_view path);
[[nodiscard]] Result<Parent> locate(int root, std::string_view path, bool allow_root = false);
// Opens name in dir only if it is a regular file (never a symlink, fifo or
// device): O_PATH first, fstat, then reopen through /proc/self/fd.
[[nodiscard]] Result<Fd> open_regular(int dir, const std::string& name, int flags);
[[nodiscard]] Result<Fd> create_temp(int dir, std::string& tmp_name);
[[nodiscard]] std::string temp_name();
// Removes a file or a whole tree without following symlinks; absent is ok.
[[nodiscard]] Result<void> remove_tree(int dir, const std::string& name);
// renameat(dir, tmp -> name); a directory in the way is removed first.
[[nodiscard]] Result<void> replace_with(int tmp_dir, const std::string& tmp, int dir,
                                        const std::string& name);
[[nodiscard]] Result<void> pwrite_all(int fd, std::string_view data, std::uint64_t offset);
[[nodiscard]] Result<void> pwrite_zeros(int fd, std::uint64_t offset, std::uint64_t length);

[[nodiscard]] Result<void> apply_meta_fd(int fd, const Meta& m);
[[nodiscard]] Result<void> apply_meta_at(int dir, const std::string& name, const Meta& m);
[[nodiscard]] Result<StatInfo> stat_at(int dir, const std::string& name);
// xxh64 (seed 0) of a file's whole content, read with pread from fd; with
// layout, the data extents (SEEK_DATA/SEEK_HOLE) are hashed after it.
[[nodiscard]] Result<std::uint64_t> xxh64_fd(int fd, const std::string& path, bool layout = false);
// The entries of the directory open at dir_fd (. and .. left out), as List
// replies them; checksums of regular files if asked. E2BIG once the encoded
// listing would exceed max_bytes.
[[nodiscard]] Result<std::string> list_dir(int dir_fd, const std::string& path, bool checksums,
                                           std::size_t max_bytes);

}  // namespace target
}  // namespace mirrorfs::replicate
