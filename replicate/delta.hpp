// librsync wrapped for whole buffers and files: signature, delta, patch.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "fs/api/fd.hpp"
#include "fs/api/result.hpp"

namespace mirrorfs::replicate {

// Signature of the file behind fd (read from offset 0), librsync's
// recommended block size for its length, RS_BLAKE2_SIG_MAGIC.
[[nodiscard]] Result<std::string> signature_of(const Fd& fd);
// Delta that turns a file with signature `sig` into the content behind fd.
[[nodiscard]] Result<std::string> delta_of(const std::string& sig, const Fd& fd);
// Writes basis + delta into out (from offset 0); out must be empty (zero
// blocks are skipped, so they stay holes, and the size is set at the end);
// it is not synced.
[[nodiscard]] Result<void> patch(const Fd& basis, const std::string& delta, const Fd& out);

// Streaming patch, for a delta that arrives in chunks (the receiver's Delta
// op): memory stays bounded whatever the file size. basis may be an invalid
// Fd (no basis: the delta must then hold literal data only); both fds must
// outlive the stream. Output is written sequentially from offset 0 into an
// empty out, all-zero 4 KiB blocks left as holes (see patch()).
// Not thread-safe. An Error from feed()/finish() leaves the stream unusable.
class PatchStream {
 public:
  PatchStream(const Fd& basis, const Fd& out);
  ~PatchStream();
  PatchStream(const PatchStream&) = delete;
  PatchStream& operator=(const PatchStream&) = delete;

  [[nodiscard]] Result<void> feed(std::string_view chunk);
  // Ends the input; Error(EPROTO) if the delta was truncated or corrupt.
  [[nodiscard]] Result<void> finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mirrorfs::replicate
