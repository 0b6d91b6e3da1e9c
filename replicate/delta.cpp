// librsync 2.3 streaming jobs over fds and strings. A job is cranked with
// rs_job_iter over caller buffers until RS_DONE; RS_BLOCKED means "give me
// more input or more output space". Every fd access is pread/pwrite with
// EINTR and short transfers handled.
#include "replicate/delta.hpp"

#include <librsync.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

namespace mirrorfs::replicate {
namespace {

constexpr std::size_t kBuf = 256 * 1024;

struct JobFree {
  void operator()(rs_job_t* j) const noexcept { rs_job_free(j); }
};
using Job = std::unique_ptr<rs_job_t, JobFree>;
struct SigFree {
  void operator()(rs_signature_t* s) const noexcept { rs_free_sumset(s); }
};
using Sig = std::unique_ptr<rs_signature_t, SigFree>;

Result<std::size_t> pread_full(int fd, char* buf, std::size_t n, off_t off) {
  std::size_t got = 0;
  while (got < n) {
    const ssize_t r = ::pread(fd, buf + got, n - got, off + static_cast<off_t>(got));
    if (r == 0) break;
    if (r < 0) {
      if (errno == EINTR) continue;
      return fail_errno("pread", "delta input");
    }
    got += static_cast<std::size_t>(r);
  }
  return got;
}

Result<void> pwrite_full(int fd, const char* buf, std::size_t n, off_t off) {
  std::size_t done = 0;
  while (done < n) {
    const ssize_t r = ::pwrite(fd, buf + done, n - done, off + static_cast<off_t>(done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return fail_errno("pwrite", "delta output");
    }
    done += static_cast<std::size_t>(r);
  }
  return {};
}

// Writes buf at off, leaving every all-zero piece within a kHoleBlock-aligned
// block unwritten: into a fresh (empty) file, zero blocks stay holes.
constexpr std::size_t kHoleBlock = 4096;

bool all_zero(const char* p, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i)
    if (p[i] != 0) return false;
  return true;
}

Result<void> pwrite_sparse(int fd, const char* buf, std::size_t n, off_t off) {
  std::size_t done = 0;
  while (done < n) {
    const auto at = static_cast<std::size_t>(off) + done;
    const std::size_t piece = std::min(n - done, kHoleBlock - at % kHoleBlock);
    std::size_t run = 0;  // consecutive pieces that hold data, written at once
    while (done + run < n) {
      const auto at2 = static_cast<std::size_t>(off) + done + run;
      const std::size_t k = std::min(n - done - run, kHoleBlock - at2 % kHoleBlock);
      if (all_zero(buf + done + run, k)) break;
      run += k;
    }
    if (run == 0) {
      done += piece;
      continue;
    }
    if (Result<void> w = pwrite_full(fd, buf + done, run, off + static_cast<off_t>(done)); !w) return w;
    done += run;
  }
  return {};
}

tl::unexpected<Error> rs_fail(const char* what, rs_result r) {
  const int code = (r == RS_IO_ERROR) ? EIO : (r == RS_MEM_ERROR) ? ENOMEM : EPROTO;
  return fail(code, std::string("librsync ") + what + ": " + rs_strerror(r));
}

// Pull model: read(buf, n) -> Result<size_t> (0 at EOF), write(buf, n) -> Result<void>.
template <class Read, class Write>
Result<void> run_job(rs_job_t* job, Read&& read, Write&& write, const char* what) {
  std::vector<char> in(kBuf), out(kBuf);
  std::size_t have = 0;
  bool eof = false;
  for (;;) {
    if (!eof && have < in.size()) {
      Result<std::size_t> n = read(in.data() + have, in.size() - have);
      if (!n) return tl::unexpected(n.error());
      eof = (*n == 0);
      have += *n;
    }
    rs_buffers_t b{};
    b.next_in = in.data();
    b.avail_in = have;
    b.eof_in = eof ? 1 : 0;
    b.next_out = out.data();
    b.avail_out = out.size();
    const rs_result r = rs_job_iter(job, &b);
    if (b.avail_in > 0 && b.avail_in < have)
      std::copy(in.begin() + static_cast<std::ptrdiff_t>(have - b.avail_in),
                in.begin() + static_cast<std::ptrdiff_t>(have), in.begin());
    const bool progress = b.avail_in != have || b.avail_out != out.size();
    have = b.avail_in;
    if (Result<void> w = write(out.data(), out.size() - b.avail_out); !w) return w;
    if (r == RS_DONE) return {};
    if (r != RS_BLOCKED) return rs_fail(what, r);
    if (!progress && (eof || have == in.size()))
      return fail(EPROTO, std::string("librsync ") + what + ": stalled (truncated input?)");
  }
}

auto fd_reader(const Fd& fd) {
  return [fd = fd.get(), off = off_t{0}](char* buf, std::size_t n) mutable -> Result<std::size_t> {
    Result<std::size_t> got = pread_full(fd, buf, n, off);
    if (got) off += static_cast<off_t>(*got);
    return got;
  };
}

auto string_reader(std::string_view s) {
  return [s](char* buf, std::size_t n) mutable -> Result<std::size_t> {
    const std::size_t k = std::min(n, s.size());
    std::copy_n(s.data(), k, buf);
    s.remove_prefix(k);
    return k;
  };
}

auto string_writer(std::string& out) {
  return [&out](const char* buf, std::size_t n) -> Result<void> {
    out.append(buf, n);
    return {};
  };
}

rs_result copy_from_basis(void* opaque, rs_long_t pos, std::size_t* len, void** buf) {
  const int fd = *static_cast<const int*>(opaque);
  if (fd < 0 || pos < 0) return RS_IO_ERROR;
  Result<std::size_t> got = pread_full(fd, static_cast<char*>(*buf), *len, static_cast<off_t>(pos));
  if (!got) return RS_IO_ERROR;
  if (*got == 0) return RS_INPUT_ENDED;
  *len = *got;
  return RS_DONE;
}

Result<std::string> signature_of_reader(rs_long_t size, auto&& read) {
  rs_magic_number magic = RS_BLAKE2_SIG_MAGIC;
  std::size_t block_len = 0, strong_len = 0;
  if (const rs_result r = rs_sig_args(size, &magic, &block_len, &strong_len); r != RS_DONE)
    return rs_fail("sig_args", r);
  Job job(rs_sig_begin(block_len, strong_len, magic));
  if (!job) return fail(ENOMEM, "rs_sig_begin");
  std::string sig;
  if (Result<void> r = run_job(job.get(), read, string_writer(sig), "signature"); !r)
    return tl::unexpected(r.error());
  return sig;
}

Result<Sig> load_signature(const std::string& sig) {
  rs_signature_t* raw = nullptr;
  Job job(rs_loadsig_begin(&raw));
  if (!job) return fail(ENOMEM, "rs_loadsig_begin");
  Result<void> r = run_job(job.get(), string_reader(sig),
                           [](const char*, std::size_t) -> Result<void> { return {}; }, "loadsig");
  Sig owned(raw);
  if (!r) return tl::unexpected(r.error());
  if (!owned) return fail(EPROTO, "librsync loadsig: no signature");
  if (const rs_result b = rs_build_hash_table(owned.get()); b != RS_DONE)
    return rs_fail("build_hash_table", b);
  return owned;
}

}  // namespace

Result<std::string> signature_of(const Fd& fd) {
  struct stat st {};
  if (::fstat(fd.get(), &st) == -1) return fail_errno("fstat", "signature input");
  return signature_of_reader(static_cast<rs_long_t>(st.st_size), fd_reader(fd));
}

Result<std::string> delta_of(const std::string& sig, const Fd& fd) {
  Result<Sig> loaded = [&]() -> Result<Sig> {
    if (!sig.empty()) return load_signature(sig);
    // No basis on the target: a delta against an empty file (all literals).
    Result<std::string> empty = signature_of_reader(0, string_reader({}));
    if (!empty) return tl::unexpected(empty.error());
    return load_signature(*empty);
  }();
  if (!loaded) return tl::unexpected(loaded.error());
  Job job(rs_delta_begin(loaded->get()));
  if (!job) return fail(ENOMEM, "rs_delta_begin");
  std::string delta;
  if (Result<void> r = run_job(job.get(), fd_reader(fd), string_writer(delta), "delta"); !r)
    return tl::unexpected(r.error());
  return delta;
}

Result<void> patch(const Fd& basis, const std::string& delta, const Fd& out) {
  PatchStream stream(basis, out);
  if (Result<void> r = stream.feed(delta); !r) return r;
  return stream.finish();
}

// ---- PatchStream: push model over the same job ----

struct PatchStream::Impl {
  int basis_fd;
  int out_fd;
  off_t out_off = 0;
  Job job;
  std::string pending;  // input librsync has not consumed yet
  std::vector<char> obuf = std::vector<char>(kBuf);
  bool done = false, broken = false;

  Result<void> pump(std::string_view in, bool eof);
  // Trailing zeros were skipped: the output must still be out_off long.
  Result<void> extend_to_end() const {
    struct stat st {};
    if (::fstat(out_fd, &st) == -1) return fail_errno("fstat", "patch output");
    if (st.st_size < out_off && ::ftruncate(out_fd, out_off) == -1)
      return fail_errno("ftruncate", "patch output");
    return {};
  }
};

Result<void> PatchStream::Impl::pump(std::string_view in, bool eof) {
  for (;;) {
    rs_buffers_t b{};
    b.next_in = const_cast<char*>(in.data());  // librsync never writes through next_in
    b.avail_in = in.size();
    b.eof_in = eof ? 1 : 0;
    b.next_out = obuf.data();
    b.avail_out = obuf.size();
    const rs_result r = rs_job_iter(job.get(), &b);
    const std::size_t produced = obuf.size() - b.avail_out;
    const bool progress = produced > 0 || b.avail_in != in.size();
    in.remove_prefix(in.size() - b.avail_in);
    if (Result<void> w = pwrite_sparse(out_fd, obuf.data(), produced, out_off); !w) return w;
    out_off += static_cast<off_t>(produced);
    if (r == RS_DONE) {
      done = true;
      if (Result<void> e = extend_to_end(); !e) return e;
      if (!in.empty()) return fail(EPROTO, "librsync patch: data after the end of the delta");
      pending.clear();
      return {};
    }
    if (r != RS_BLOCKED) return rs_fail("patch", r);
    if (!progress) break;
  }
  if (eof) return fail(EPROTO, "librsync patch: truncated delta");
  pending = std::string(in);  // may alias pending: construct first, then assign
  return {};
}

PatchStream::PatchStream(const Fd& basis, const Fd& out)
    : impl_(std::make_unique<Impl>(Impl{basis.get(), out.get(), 0, nullptr, {}})) {
  impl_->job.reset(rs_patch_begin(&copy_from_basis, &impl_->basis_fd));
}

PatchStream::~PatchStream() = default;

Result<void> PatchStream::feed(std::string_view chunk) {
  Impl& s = *impl_;
  if (s.broken || !s.job) return fail(EPROTO, "librsync patch: stream unusable");
  if (s.done) return chunk.empty() ? Result<void>{} : fail(EPROTO, "librsync patch: data after end");
  Result<void> r;
  if (s.pending.empty()) {
    r = s.pump(chunk, false);
  } else {
    s.pending.append(chunk);
    const std::string in = std::move(s.pending);
    s.pending.clear();
    r = s.pump(in, false);
  }
  if (!r) s.broken = true;
  return r;
}

Result<void> PatchStream::finish() {
  Impl& s = *impl_;
  if (s.broken || !s.job) return fail(EPROTO, "librsync patch: stream unusable");
  if (s.done) return {};
  const std::string in = std::move(s.pending);
  s.pending.clear();
  Result<void> r = s.pump(in, true);
  if (!r) s.broken = true;
  return r;
}

}  // namespace mirrorfs::replicate
