#include "options.hpp"

#include <algorithm>
#include <charconv>
#include <set>

namespace mirrorfs {

namespace {

std::vector<std::string> split_options(std::string_view s) {
  std::vector<std::string> out;
  std::string cur;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      cur.push_back(s[++i]);
    } else if (s[i] == ',') {
      if (!cur.empty()) out.push_back(std::move(cur));
      cur.clear();
    } else {
      cur.push_back(s[i]);
    }
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  return out;
}

bool is_fstab_only(std::string_view key) {
  static const std::set<std::string_view> kDropped = {"_netdev", "nofail", "noauto", "auto",
                                                      "defaults", "user", "users", "nouser",
                                                      "owner", "group", "comment"};
  return kDropped.count(key) > 0 || key.starts_with("x-");
}

Result<bool> parse_bool(std::string_view key, std::string_view v) {
  if (v == "yes" || v == "true" || v == "1" || v == "on") return true;
  if (v == "no" || v == "false" || v == "0" || v == "off") return false;
  return fail(EINVAL, "option " + std::string(key) + "=" + std::string(v) +
                          ": expected yes or no");
}

Result<double> parse_seconds(std::string_view key, std::string_view v) {
  double d = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), d);
  if (ec != std::errc() || p != v.data() + v.size() || d < 0)
    return fail(EINVAL, "option " + std::string(key) + "=" + std::string(v) +
                            ": expected a number of seconds");
  return d;
}

Result<void> need_value(std::string_view key, std::string_view v) {
  if (v.empty()) return fail(EINVAL, "option " + std::string(key) + " needs a value");
  return {};
}

// Options of ours that are recognised but not built yet: refusing them is
// better than silently ignoring what the user asked for.
bool is_planned(std::string_view key) {
  static const std::set<std::string_view> kPlanned = {
      "sync", "exclude", "exclude_from", "bwlimit", "transport", "sync_timeout", "force"};
  return kPlanned.count(key) > 0;
}

Result<void> apply_one(std::string_view key, std::string_view value, bool has_value,
                       MountOptions& o) {
  auto set_ms = [&](std::chrono::milliseconds& dst) -> Result<void> {
    auto d = parse_duration(value);
    if (!d) return fail(EINVAL, "option " + std::string(key) + ": " + d.error().what);
    dst = *d;
    return {};
  };
  if (key == "target") {
    if (auto r = need_value(key, value); !r) return r;
    o.targets.emplace_back(value);
  } else if (key == "delay") {
    return set_ms(o.delay);
  } else if (key == "drain_timeout") {
    return set_ms(o.drain_timeout);
  } else if (key == "delete") {
    auto b = parse_bool(key, value);
    if (!b) return tl::unexpected(b.error());
    o.delete_extra = *b;
  } else if (key == "initial_sync") {
    if (value == "quick") {
      o.initial_sync = InitialSync::Quick;
    } else if (value == "checksum") {
      o.initial_sync = InitialSync::Checksum;
    } else if (value == "none") {
      o.initial_sync = InitialSync::None;
    } else {
      return fail(EINVAL, "option initial_sync=" + std::string(value) +
                              ": expected quick, checksum or none");
    }
  } else if (key == "scan") {
    auto b = parse_bool(key, value);
    if (!b) return tl::unexpected(b.error());
    o.scan = *b;
  } else if (key == "state_dir") {
    if (auto r = need_value(key, value); !r) return r;
    if (value.front() != '/')
      return fail(EINVAL, "option state_dir=" + std::string(value) + ": expected an absolute path");
    o.state_dir = value;
  } else if (key == "writeback") {
    auto b = parse_bool(key, value);
    if (!b) return tl::unexpected(b.error());
    o.writeback_cache = *b;
  } else if (key == "ssh" || key == "agent" || key == "change_log" || key == "log_level") {
    if (auto r = need_value(key, value); !r) return r;
    std::string& dst = key == "ssh" ? o.ssh : key == "agent" ? o.agent
                     : key == "change_log" ? o.change_log : o.log_level;
    dst = value;
    if (key == "log_level" && value != "trace" && value != "debug" && value != "info" &&
        value != "warn" && value != "error" && value != "off")
      return fail(EINVAL, "option log_level=" + std::string(value) +
                              ": expected trace, debug, info, warn, error or off");
  } else if (key == "attr_timeout" || key == "entry_timeout") {
    auto d = parse_seconds(key, value);
    if (!d) return tl::unexpected(d.error());
    (key == "attr_timeout" ? o.attr_timeout : o.entry_timeout) = *d;
  } else if (key == "threads") {
    unsigned n = 0;
    auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
    if (ec != std::errc() || p != value.data() + value.size() || n == 0 || n > 1024)
      return fail(EINVAL, "option threads=" + std::string(value) + ": expected 1..1024");
    o.threads = n;
  } else if (is_planned(key)) {
    return fail(ENOTSUP, "option " + std::string(key) + " is not supported yet");
  } else if (is_fstab_only(key)) {
    // mount(8)/systemd options: meaningful to them, not to FUSE.
  } else {
    o.fuse_options.push_back(has_value ? std::string(key) + "=" + std::string(value)
                                       : std::string(key));
  }
  return {};
}

}  // namespace

Result<std::chrono::milliseconds> parse_duration(std::string_view s) {
  double v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || v < 0) return fail(EINVAL, "bad duration '" + std::string(s) + "'");
  const std::string_view unit(p, static_cast<std::size_t>(s.data() + s.size() - p));
  double ms;
  if (unit.empty() || unit == "ms") ms = v;
  else if (unit == "s") ms = v * 1000;
  else if (unit == "m") ms = v * 60000;
  else return fail(EINVAL, "bad duration unit in '" + std::string(s) + "' (ms, s or m)");
  return std::chrono::milliseconds(static_cast<std::int64_t>(ms));
}

Result<void> apply_option_string(std::string_view opts, MountOptions& out) {
  for (const std::string& opt : split_options(opts)) {
    const auto eq = opt.find('=');
    const std::string_view key = std::string_view(opt).substr(0, eq);
    const std::string_view value =
        eq == std::string::npos ? std::string_view() : std::string_view(opt).substr(eq + 1);
    if (key.empty()) return fail(EINVAL, "empty option name in '" + opt + "'");
    if (auto r = apply_one(key, value, eq != std::string::npos, out); !r) return r;
  }
  return {};
}

void add_default_fuse_options(MountOptions& o, bool as_root) {
  auto has = [&](std::string_view k) {
    return std::any_of(o.fuse_options.begin(), o.fuse_options.end(),
                       [&](const std::string& s) { return s == k || s.starts_with(std::string(k) + "="); });
  };
  if (!has("subtype")) o.fuse_options.emplace_back("subtype=mirrorfs");
  if (!has("fsname")) {
    std::string escaped;  // libfuse splits -o on commas; a backslash protects one
    for (char ch : o.source) {
      if (ch == ',' || ch == '\\') escaped.push_back('\\');
      escaped.push_back(ch);
    }
    o.fuse_options.push_back("fsname=" + escaped);
  }
  if (as_root) {
    if (!has("allow_other")) o.fuse_options.emplace_back("allow_other");
    if (!has("default_permissions")) o.fuse_options.emplace_back("default_permissions");
  }
}

}  // namespace mirrorfs
