// Mount option parsing: table of accepted and rejected inputs.
#include <gtest/gtest.h>

#include "options.hpp"

namespace mirrorfs {
namespace {

TEST(Options, ParsesReplicationOptions) {
  MountOptions o;
  ASSERT_TRUE(apply_option_string("target=/b1,target=ssh://u@h:2222/d,delay=250ms,delete=no", o));
  EXPECT_EQ(o.targets, (std::vector<std::string>{"/b1", "ssh://u@h:2222/d"}));
  EXPECT_EQ(o.delay, std::chrono::milliseconds(250));
  EXPECT_FALSE(o.delete_extra);
  EXPECT_EQ(o.initial_sync, InitialSync::Quick);
  ASSERT_TRUE(apply_option_string("initial_sync=none", o));
  EXPECT_EQ(o.initial_sync, InitialSync::None);
  ASSERT_TRUE(apply_option_string("initial_sync=checksum,scan=no,state_dir=/tmp/st", o));
  EXPECT_EQ(o.initial_sync, InitialSync::Checksum);
  EXPECT_FALSE(o.scan);
  EXPECT_EQ(o.state_dir, "/tmp/st");
  ASSERT_TRUE(apply_option_string("ssh=ssh -p 22 -i /k,agent=/usr/bin/mirrorfs,log_level=debug", o));
  EXPECT_EQ(o.ssh, "ssh -p 22 -i /k");
  EXPECT_EQ(o.agent, "/usr/bin/mirrorfs");
  EXPECT_EQ(o.log_level, "debug");
  EXPECT_TRUE(o.fuse_options.empty());
}

TEST(Options, DropsFstabOnlyOptionsAndPassesFuseOnes) {
  MountOptions o;
  ASSERT_TRUE(apply_option_string(
      "defaults,_netdev,nofail,noauto,x-systemd.requires=network-online.target,ro,fsname=x", o));
  EXPECT_EQ(o.fuse_options, (std::vector<std::string>{"ro", "fsname=x"}));
}

TEST(Options, BackslashEscapesComma) {
  MountOptions o;
  ASSERT_TRUE(apply_option_string("target=/a\\,b,delay=1s", o));
  EXPECT_EQ(o.targets, (std::vector<std::string>{"/a,b"}));
  EXPECT_EQ(o.delay, std::chrono::milliseconds(1000));
}

TEST(Options, RejectsBadValuesWithTheOptionName) {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"delay=fast", "delay"},        {"delay=5h", "delay"},
      {"delete=maybe", "delete"},     {"target=", "target"},
      {"log_level=loud", "log_level"}, {"threads=0", "threads"},
      {"attr_timeout=-1", "attr_timeout"}, {"=x", "empty option"},
      {"bwlimit=5M", "bwlimit"},      {"writeback=2", "writeback"},
      {"initial_sync=full", "initial_sync"}, {"initial_sync=maybe", "initial_sync"},
      {"state_dir=rel/dir", "state_dir"}, {"state_dir=", "state_dir"},
      {"scan=often", "scan"},
  };
  for (const auto& [input, word] : bad) {
    MountOptions o;
    auto r = apply_option_string(input, o);
    ASSERT_FALSE(r) << input;
    EXPECT_NE(r.error().what.find(word), std::string::npos) << input << " -> " << r.error().what;
  }
}

TEST(Options, DefaultFuseOptions) {
  MountOptions o;
  o.source = "/data,x";
  add_default_fuse_options(o, true);
  EXPECT_EQ(o.fuse_options, (std::vector<std::string>{"subtype=mirrorfs", "fsname=/data\\,x",
                                                      "allow_other", "default_permissions"}));
  MountOptions user;
  user.source = "/d";
  add_default_fuse_options(user, false);
  EXPECT_EQ(user.fuse_options.size(), 2u);
}

TEST(Options, Durations) {
  EXPECT_EQ(*parse_duration("0"), std::chrono::milliseconds(0));
  EXPECT_EQ(*parse_duration("15"), std::chrono::milliseconds(15));
  EXPECT_EQ(*parse_duration("2s"), std::chrono::milliseconds(2000));
  EXPECT_EQ(*parse_duration("1m"), std::chrono::milliseconds(60000));
  EXPECT_EQ(*parse_duration("0.5s"), std::chrono::milliseconds(500));
  EXPECT_FALSE(parse_duration("-1s"));
  EXPECT_FALSE(parse_duration("s"));
}

}  // namespace
}  // namespace mirrorfs
