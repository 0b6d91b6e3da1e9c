// Mount options: what `mirrorfs SOURCE MOUNTPOINT -o ...` and mount.mirrorfs
// accept. Pure parsing, no I/O: unit-tested in tests/unit/options_test.cpp.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "fs/api/result.hpp"

namespace mirrorfs {

enum class InitialSync { None, Quick, Checksum };

struct MountOptions {
  std::string source, mountpoint;
  bool foreground = false;
  bool fuse_debug = false;

  std::vector<std::string> targets;                  // target= (repeatable)
  std::chrono::milliseconds delay{2};                // delay=  batching window
  bool delete_extra = true;                          // delete=yes|no
  InitialSync initial_sync = InitialSync::Quick;     // initial_sync=quick|checksum|none
  std::string state_dir = "/var/lib/mirrorfs";       // state_dir= what targets hold, per mount
  bool scan = true;                                  // scan=yes|no  inotify fallback scanner
  std::string ssh = "ssh";                           // ssh=    command and options
  std::string agent = "mirrorfs";                    // agent=  remote binary
  std::chrono::milliseconds drain_timeout{30000};    // drain_timeout= on unmount
  std::string log_level = "info";                    // log_level=
  std::string change_log;                            // change_log= (debugging, tests)

  double attr_timeout = 1.0;                         // attr_timeout= seconds
  double entry_timeout = 1.0;                        // entry_timeout= seconds
  bool writeback_cache = false;                      // writeback=yes|no
  unsigned threads = 16;                             // threads= max FUSE workers

  std::vector<std::string> fuse_options;             // everything else, for libfuse
};

// Splits "a=1,b,c=x\,y" into options (a backslash escapes a comma) and applies
// each to out. Fstab-only options (_netdev, nofail, noauto, auto, defaults,
// user, users, nouser, x-*, comment=) are accepted and dropped. Unknown
// options without '=' that libfuse knows are passed on; bad values are an
// Error naming the option.
[[nodiscard]] Result<void> apply_option_string(std::string_view opts, MountOptions& out);

// Adds what every mount gets: subtype=mirrorfs, fsname=SOURCE and, when the
// daemon runs as root, allow_other and default_permissions.
void add_default_fuse_options(MountOptions& o, bool as_root);

// "250ms", "2s", "1m", "0" (a bare number is milliseconds).
[[nodiscard]] Result<std::chrono::milliseconds> parse_duration(std::string_view s);

}  // namespace mirrorfs
