// libFuzzer target for the protocol decoders: the agent reads frames from a
// peer it does not trust, so no input may crash, hang or make a decoder
// allocate more than the input's size.
//
// The input is read the way the agent reads its stdin: frame after frame
// (frame_length, then the payload by frame type). Every payload is given to
// every decoder; whatever decodes must survive an encode/decode round trip
// unchanged (else abort(): libFuzzer reports it).
//
// Build (clang): cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER=clang++
//                  -DMIRRORFS_FUZZ=ON -DMIRRORFS_TESTS=OFF
//                cmake --build build-fuzz --target protocol_fuzz
// Run:           build-fuzz/tests/fuzz/protocol_fuzz -max_total_time=60
//                  -max_len=65536 tests/fuzz/corpus
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "replicate/protocol.hpp"

namespace {

using namespace mirrorfs::replicate;
using mirrorfs::Result;

void check_request(std::string_view payload) {
  Result<Request> r = decode_request(payload);
  if (!r) return;
  std::string again;
  encode_request(*r, again);
  if (again.size() != request_frame_size(*r)) std::abort();
  Result<Request> back = decode_request(std::string_view(again).substr(kFrameHeader));
  if (!back || !(*back == *r)) std::abort();
}

void check_reply(std::string_view payload) {
  Result<Reply> r = decode_reply(payload);
  if (!r) return;
  std::string again;
  encode_reply(*r, again);
  if (again.size() != reply_frame_size(*r)) std::abort();
  Result<Reply> back = decode_reply(std::string_view(again).substr(kFrameHeader));
  if (!back || !(*back == *r)) std::abort();
}

void check_data(std::string_view data) {
  if (Result<StatInfo> s = decode_stat(data); s) {
    Result<StatInfo> back = decode_stat(encode_stat(*s));
    if (!back || !(*back == *s)) std::abort();
  }
  if (Result<std::uint64_t> v = decode_u64(data); v && *decode_u64(encode_u64(*v)) != *v)
    std::abort();
  if (Result<std::vector<ListEntry>> l = decode_listing(data); l) {
    const std::string again = encode_listing(*l);
    Result<std::vector<ListEntry>> back = decode_listing(again);
    if (!back || !(*back == *l) || again != data) std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  while (!in.empty()) {
    Result<std::size_t> n = frame_length(in);
    if (!n || *n == 0 || *n > in.size()) {
      check_data(in);  // a tail that is no whole frame: still feed the data decoders
      break;
    }
    const std::string_view payload = in.substr(kFrameHeader, *n - kFrameHeader);
    check_request(payload);
    check_reply(payload);
    check_data(payload);
    in.remove_prefix(*n);
  }
  return 0;
}
