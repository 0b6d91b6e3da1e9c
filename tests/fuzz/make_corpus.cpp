// Writes the seed corpus of protocol_fuzz: one file per representative
// session (a Hello, then typical requests, then replies), encoded with the
// real encoders so the seeds follow the format as it changes.
//   make_corpus DIR
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "replicate/protocol.hpp"

using namespace mirrorfs::replicate;

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_corpus DIR\n");
    return 2;
  }
  Meta meta;
  meta.mode = 0100644;
  meta.uid = 1000;
  meta.mtime_sec = 1700000000;
  meta.mtime_nsec = 123456789;
  meta.with_xattrs = true;
  meta.xattrs = {{"user.k", "v"}};
  std::vector<std::vector<Request>> sessions = {
      {{Op::Hello, "", "", kProtocolVersion, 0, {}, ""}},
      {{Op::Mkdir, "d", "", 0, 0, meta, ""}, {Op::BeginFile, "d/f", "", 0, 0, {}, ""},
       {Op::Write, "d/f", "", 0, 0, {}, "hello"}, {Op::CommitFile, "d/f", "", 0, 0, meta, ""}},
      {{Op::Signature, "big", "", 0, 0, {}, ""}, {Op::Delta, "big", "", 0, kLast, {}, "rs\x02\x36"}},
      {{Op::Rename, "a", "b", 0, 1, {}, ""}, {Op::Link, "b", "c", 0, 0, {}, ""},
       {Op::Remove, "a/../x", "", 0, 0, {}, ""}, {Op::Barrier, "", "", 0, 0, {}, ""}},
      {{Op::Punch, "f", "", 4096, 0, {}, encode_u64(8192)}, {Op::Stat, "f", "", 0, 0, {}, ""},
       {Op::Symlink, "l", "/etc/passwd", 0, 0, {}, ""}, {Op::Mknod, "p", "", 0, 0, meta, ""}},
  };
  int n = 0;
  for (const auto& s : sessions) {
    std::string out;
    for (const Request& r : s) encode_request(r, out);
    std::ofstream(std::string(argv[1]) + "/request-" + std::to_string(n++), std::ios::binary) << out;
  }
  StatInfo st;
  st.size = 42;
  st.nlink = 2;
  st.meta = meta;
  std::string out;
  encode_reply({0, "", encode_stat(st)}, out);
  encode_reply({2, "ENOENT: no such file", ""}, out);
  std::ofstream(std::string(argv[1]) + "/reply-0", std::ios::binary) << out;
  return 0;
}
