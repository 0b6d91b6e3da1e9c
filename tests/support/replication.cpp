#include "tests/support/replication.hpp"

#include <thread>

#include "tests/support/process.hpp"

namespace mirrorfs::test {

namespace {

// The value after "key": in one JSON object (our own flat output).
std::string field(const std::string& obj, const std::string& key) {
  const std::string k = "\"" + key + "\":";
  const auto p = obj.find(k);
  if (p == std::string::npos) return {};
  auto b = p + k.size();
  if (obj[b] == '"') {  // string: up to the next unescaped quote
    std::string out;
    for (auto i = b + 1; i < obj.size() && obj[i] != '"'; ++i) {
      if (obj[i] == '\\' && i + 1 < obj.size()) ++i;
      out.push_back(obj[i]);
    }
    return out;
  }
  auto e = obj.find_first_of(",}", b);
  return obj.substr(b, e - b);
}

std::uint64_t num(const std::string& obj, const std::string& key) {
  const std::string v = field(obj, key);
  return v.empty() ? 0 : std::stoull(v);
}

}  // namespace

std::vector<TargetState> read_status(const std::string& mountpoint, std::string* err) {
  auto r = run_command({MIRRORFS_BIN, "status", mountpoint, "--json"}, std::chrono::seconds(10));
  std::vector<TargetState> out;
  if (!r.ok()) {
    if (err) *err = "mirrorfs status failed: " + r.output;
    return out;
  }
  auto pos = r.output.find("\"targets\":[");
  if (pos == std::string::npos) return out;
  while ((pos = r.output.find("{\"target\"", pos)) != std::string::npos) {
    const auto end = r.output.find('}', pos);
    const std::string obj = r.output.substr(pos, end - pos + 1);
    TargetState t;
    t.connected = field(obj, "connected") == "true";
    t.pending = num(obj, "pending");
    t.acked_seq = num(obj, "acked_seq");
    t.last_seq = num(obj, "last_seq");
    t.bytes_sent = num(obj, "bytes_sent");
    t.files_sent = num(obj, "files_sent");
    t.last_error = field(obj, "last_error");
    out.push_back(t);
    pos = end;
  }
  return out;
}

bool wait_drained(const std::string& mountpoint, std::chrono::milliseconds timeout,
                  std::string* why) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int level_in_a_row = 0;
  std::string last;
  while (std::chrono::steady_clock::now() < deadline) {
    auto st = read_status(mountpoint, &last);
    bool level = !st.empty();
    for (const auto& t : st) {
      if (!t.connected || t.pending != 0 || t.acked_seq != t.last_seq) level = false;
      last = "connected=" + std::to_string(t.connected) + " pending=" + std::to_string(t.pending) +
             " acked=" + std::to_string(t.acked_seq) + "/" + std::to_string(t.last_seq) +
             " last_error=" + t.last_error;
    }
    level_in_a_row = level ? level_in_a_row + 1 : 0;
    if (level_in_a_row >= 2) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (why) *why = "not drained: " + last;
  return false;
}

std::uint64_t bytes_sent(const std::string& mountpoint) {
  std::uint64_t sum = 0;
  for (const auto& t : read_status(mountpoint)) sum += t.bytes_sent;
  return sum;
}

}  // namespace mirrorfs::test
