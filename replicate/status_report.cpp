#include "replicate/status_report.hpp"

#include <cstdio>
#include <ctime>

namespace mirrorfs::replicate {

namespace {

std::string human_bytes(std::uint64_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

std::string clock_time(std::chrono::system_clock::time_point t) {
  const std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  ::localtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

std::int64_t unix_seconds(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

std::string seconds_json(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", s);
  return buf;
}

}  // namespace

std::string json_string(std::string_view raw) {
  std::string out = "\"";
  for (const char ch : raw) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(ch);
    } else if (c < 0x20 || c >= 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out.push_back(ch);
    }
  }
  return out + "\"";
}

std::string format_status_text(const MountSummary& m, const std::vector<ReplicatorStatus>& targets) {
  std::string out = "mirrorfs " + quoted(m.mountpoint) + " (source " + quoted(m.source) +
                    "), serving since " + clock_time(m.started) + "\n";
  if (targets.empty()) out += "no targets: nothing is replicated\n";
  for (std::size_t i = 0; i < targets.size(); ++i) {
    const ReplicatorStatus& t = targets[i];
    char lag[64];
    std::snprintf(lag, sizeof lag, "%.3f s", t.lag_seconds);
    out += "target " + std::to_string(i + 1) + ": " + t.target + "\n";
    out += std::string("  state:      ") + (t.connected ? "connected" : "DISCONNECTED") + "\n";
    out += std::string("  lag:        ") + lag + " (changes " + std::to_string(t.acked_seq) +
           " of " + std::to_string(t.last_seq) + " landed)\n";
    out += "  pending:    " + std::to_string(t.pending) + " journal entries\n";
    char secs[64];
    std::snprintf(secs, sizeof secs, "%.1f s", t.initial_seconds);
    std::string eta = "unknown";
    if (t.initial_eta_seconds >= 0) {
      char e[32];
      std::snprintf(e, sizeof e, "%.0f s", t.initial_eta_seconds);
      eta = e;
    }
    out += "  initial:    " + std::string(t.initial_sync_done ? "done" : "IN PROGRESS") + " (" +
           t.initial_mode + "), " + std::to_string(t.initial_scanned) + " entries scanned, " +
           std::to_string(t.initial_to_send) + " to send, " + std::to_string(t.initial_entries) +
           " shipped\n";
    out += "              " + human_bytes(t.initial_bytes_sent) + " sent of " +
           human_bytes(t.initial_bytes_to_send) + " file data to send, " +
           std::to_string(t.initial_checksums) + " checksums, " + secs +
           (t.initial_sync_done ? std::string() : ", ETA " + eta) + "\n";
    out += "  sent:       " + human_bytes(t.bytes_sent) + ", " + std::to_string(t.files_sent) +
           " files, " + std::to_string(t.batches) + " batches\n";
    out += "  last error: " +
           (t.last_error.empty() ? std::string("none")
                                 : clock_time(t.last_error_time) + " " + t.last_error) +
           "\n";
  }
  return out;
}

std::string format_status_json(const MountSummary& m, const std::vector<ReplicatorStatus>& targets) {
  std::string out = "{\"mountpoint\":" + json_string(m.mountpoint) +
                    ",\"source\":" + json_string(m.source) +
                    ",\"started\":" + std::to_string(unix_seconds(m.started)) + ",\"targets\":[";
  for (std::size_t i = 0; i < targets.size(); ++i) {
    const ReplicatorStatus& t = targets[i];
    char lag[32];
    std::snprintf(lag, sizeof lag, "%.6f", t.lag_seconds);
    if (i > 0) out += ",";
    out += "{\"target\":" + json_string(t.target) +
           ",\"connected\":" + (t.connected ? "true" : "false") + ",\"lag_seconds\":" + lag +
           ",\"pending\":" + std::to_string(t.pending) +
           ",\"initial_sync_done\":" + (t.initial_sync_done ? "true" : "false") +
           ",\"initial_entries\":" + std::to_string(t.initial_entries) +
           ",\"initial_mode\":" + json_string(t.initial_mode) +
           ",\"initial_scanned\":" + std::to_string(t.initial_scanned) +
           ",\"initial_to_send\":" + std::to_string(t.initial_to_send) +
           ",\"initial_bytes_to_send\":" + std::to_string(t.initial_bytes_to_send) +
           ",\"initial_bytes_sent\":" + std::to_string(t.initial_bytes_sent) +
           ",\"initial_checksums\":" + std::to_string(t.initial_checksums) +
           ",\"initial_seconds\":" + seconds_json(t.initial_seconds) +
           ",\"initial_eta_seconds\":" + seconds_json(t.initial_eta_seconds) +
           ",\"bytes_sent\":" + std::to_string(t.bytes_sent) +
           ",\"files_sent\":" + std::to_string(t.files_sent) +
           ",\"batches\":" + std::to_string(t.batches) +
           ",\"acked_seq\":" + std::to_string(t.acked_seq) +
           ",\"last_seq\":" + std::to_string(t.last_seq) +
           ",\"last_error\":" + json_string(t.last_error) + ",\"last_error_time\":" +
           (t.last_error.empty() ? std::string("null")
                                 : std::to_string(unix_seconds(t.last_error_time))) +
           "}";
  }
  return out + "]}\n";
}

}  // namespace mirrorfs::replicate
