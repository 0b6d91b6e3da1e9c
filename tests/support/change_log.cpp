#include "tests/support/change_log.hpp"

#include <charconv>

#include "fs/api/result.hpp"
#include "tests/support/process.hpp"

namespace mirrorfs::test {
namespace {

template <class T>
bool parse_num(const std::string& s, T& out) {
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size() && !s.empty();
}

}  // namespace

std::string to_string(const ChangeRecord& r) {
  std::string s = r.kind + " " + mirrorfs::quoted(r.path);
  if (!r.to_path.empty() || r.kind == "Renamed" || r.kind == "Linked") s += " -> " + mirrorfs::quoted(r.to_path);
  if (r.kind == "Data") {
    s += " [" + std::to_string(r.offset) + ", " +
         (r.length == ChangeRecord::kToEnd ? std::string("EOF") : "+" + std::to_string(r.length)) + ")";
  } else if (r.offset != 0 || r.length != 0) {
    s += " off=" + std::to_string(r.offset) + " len=" + std::to_string(r.length);
  }
  if (r.flags != 0) s += " flags=" + std::to_string(r.flags);
  return s;
}

std::vector<ChangeRecord> ChangeLogReader::take_new() {
  const std::string all = read_file(path_);
  std::vector<ChangeRecord> out;
  std::size_t pos = consumed_;
  for (;;) {
    std::vector<std::string> f;
    std::size_t p = pos;
    while (f.size() < 6) {
      const std::size_t nul = all.find('\0', p);
      if (nul == std::string::npos) break;
      f.push_back(all.substr(p, nul - p));
      p = nul + 1;
    }
    if (f.size() < 6) break;  // incomplete tail: not flushed yet
    ChangeRecord r;
    r.kind = f[0];
    r.path = f[1];
    r.to_path = f[2];
    if (!parse_num(f[3], r.offset) || !parse_num(f[4], r.length) || !parse_num(f[5], r.flags)) {
      r.kind = "<malformed: " + mirrorfs::quoted(f[3]) + " " + mirrorfs::quoted(f[4]) + " " + mirrorfs::quoted(f[5]) + ">";
    }
    out.push_back(std::move(r));
    pos = p;
  }
  consumed_ = pos;
  return out;
}

}  // namespace mirrorfs::test
