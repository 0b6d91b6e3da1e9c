// Transports: target URL parsing, the local transport, and process
// transports against a real agent. The test binary doubles as an agent:
// run as `<this binary> agent ROOT` it serves run_agent() (see AgentMode),
// so the pipe/ssh paths are tested without depending on main.cpp; one test
// also runs the real mirrorfs binary (MIRRORFS_BIN).
#include "replicate/transport.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "replicate/receiver.hpp"

namespace mirrorfs::replicate {
namespace {

namespace stdfs = std::filesystem;

// Before gtest's main: `<self> agent ROOT` becomes an agent process.
struct AgentMode {
  AgentMode() {
    std::ifstream in("/proc/self/cmdline", std::ios::binary);
    std::vector<std::string> args;
    for (std::string a; std::getline(in, a, '\0');) args.push_back(a);
    if (args.size() == 3 && args[1] == "agent") ::_exit(run_agent(args[2], 0, 1));
  }
} const agent_mode;

std::string self_exe() { return stdfs::read_symlink("/proc/self/exe"); }

std::string slurp(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct TempDir {
  TempDir() {
    char tmpl[] = "/tmp/mirrorfs-tr-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    stdfs::remove_all(path, ec);
  }
  std::string path;
};

TEST(ParseTarget, Table) {
  struct Row {
    const char* url;
    TargetSpec::Kind kind;
    const char *path, *host, *user;
    int port;
  };
  const Row rows[] = {
      {"/backup/data", TargetSpec::Kind::Local, "/backup/data", "", "", 0},
      {"file:///backup/data", TargetSpec::Kind::Local, "/backup/data", "", "", 0},
      {"server2:/data", TargetSpec::Kind::Ssh, "/data", "server2", "", 0},
      {"backup@server2:/d a", TargetSpec::Kind::Ssh, "/d a", "server2", "backup", 0},
      {"ssh://u@h:2222/p", TargetSpec::Kind::Ssh, "/p", "h", "u", 2222},
      {"ssh://h/p/q", TargetSpec::Kind::Ssh, "/p/q", "h", "", 0},
      {"ssh://[::1]:22/p", TargetSpec::Kind::Ssh, "/p", "::1", "", 22},
      {"[::1]:/p", TargetSpec::Kind::Ssh, "/p", "::1", "", 0},
  };
  for (const Row& r : rows) {
    SCOPED_TRACE(r.url);
    Result<TargetSpec> s = parse_target(r.url);
    ASSERT_TRUE(s) << s.error().what;
    EXPECT_EQ(s->kind, r.kind);
    EXPECT_EQ(s->url, r.url);
    EXPECT_EQ(s->path, r.path);
    EXPECT_EQ(s->host, r.host);
    EXPECT_EQ(s->user, r.user);
    EXPECT_EQ(s->port, r.port);
  }
  for (const char* bad : {"", "relative/path", "./a:b", "file://host/p", "file://", "ssh://",
                          "ssh://host", "ssh://host:0/p", "ssh://host:99999/p", "ssh://host:x/p",
                          "ssh://-oProxyCommand=x/p", "-oProxyCommand=x:/p", "host:relative",
                          "host:", ":/p", "ftp://h/p", "ssh://@h/p", "ssh://[::1/p", "h:2222:/p"}) {
    Result<TargetSpec> s = parse_target(bad);
    EXPECT_FALSE(s) << "accepted " << bad;
    if (!s) {
      EXPECT_EQ(s.error().code, EINVAL);
    }
  }
}

TEST(SshArgv, SplitsSshAndQuotesTheRemoteCommand) {
  TargetSpec s = *parse_target("ssh://backup@h:2222/data dir/it's");
  s.ssh = "ssh  -i key -o StrictHostKeyChecking=no";
  const std::vector<std::string> want = {"ssh", "-i", "key", "-o", "StrictHostKeyChecking=no",
                                         "-p", "2222", "-l", "backup", "h", "mirrorfs", "agent",
                                         "'/data dir/it'\\''s'"};
  EXPECT_EQ(ssh_argv(s), want);
}

std::vector<Request> sample_batch() {
  std::vector<Request> reqs(4);
  reqs[0].op = Op::Mkdir;
  reqs[0].path = "d";
  reqs[1].op = Op::BeginFile;
  reqs[1].path = "d/f";
  reqs[2].op = Op::Write;
  reqs[2].path = "d/f";
  reqs[2].data = "hello";
  reqs[3].op = Op::CommitFile;
  reqs[3].path = "d/f";
  return reqs;
}

TEST(LocalTransport, AppliesAndCounts) {
  TempDir dir;
  Result<std::unique_ptr<Transport>> t = connect(*parse_target("file://" + dir.path));
  ASSERT_TRUE(t) << t.error().what;
  const std::uint64_t after_hello = (*t)->bytes_sent();
  EXPECT_GT(after_hello, 0u);
  const std::vector<Request> reqs = sample_batch();
  Result<std::vector<Reply>> replies = (*t)->exchange(reqs);
  ASSERT_TRUE(replies);
  ASSERT_EQ(replies->size(), reqs.size());
  for (const Reply& r : *replies) EXPECT_EQ(r.err, 0) << r.message;
  EXPECT_EQ(slurp(dir.path + "/d/f"), "hello");
  std::uint64_t frames = 0;
  for (const Request& r : reqs) frames += request_frame_size(r);
  EXPECT_EQ((*t)->bytes_sent() - after_hello, frames);
  EXPECT_FALSE(connect(*parse_target(dir.path + "/absent")));
}

void pipelined_batch(Transport& t, const std::string& root) {
  // Far more than a socket buffer each way, in one exchange: must not deadlock.
  std::vector<Request> reqs = sample_batch();
  for (int i = 0; i < 300; ++i) {
    Request w;
    w.op = Op::Write;
    w.path = "big";
    w.offset = static_cast<std::uint64_t>(i) * 65536;
    w.data.assign(65536, static_cast<char>('a' + i % 26));
    if (i == 0) {
      Request b = w;
      b.op = Op::BeginFile;
      b.data.clear();
      reqs.push_back(b);
    }
    reqs.push_back(std::move(w));
    Request st;
    st.op = Op::Stat;
    st.path = "d";
    reqs.push_back(std::move(st));  // replies with some bytes each
  }
  Request c;
  c.op = Op::CommitFile;
  c.path = "big";
  reqs.push_back(c);
  Result<std::vector<Reply>> replies = t.exchange(reqs);
  ASSERT_TRUE(replies) << replies.error().what;
  ASSERT_EQ(replies->size(), reqs.size());
  for (const Reply& r : *replies) ASSERT_EQ(r.err, 0) << r.message;
  EXPECT_EQ(stdfs::file_size(root + "/big"), 300u * 65536);
  EXPECT_EQ(slurp(root + "/d/f"), "hello");
  EXPECT_GT(t.bytes_sent(), 300u * 65536);
  EXPECT_GT(t.bytes_received(), 300u * 10);
}

TEST(ProcessTransport, AgentOverAPipe) {
  TempDir dir;
  Result<std::unique_ptr<Transport>> t = connect_process({self_exe(), "agent", dir.path});
  ASSERT_TRUE(t) << t.error().what;
  pipelined_batch(**t, dir.path);
  Request bad;
  bad.op = Op::Mkdir;
  bad.path = "../escape";
  Result<std::vector<Reply>> r = (*t)->exchange(std::span<const Request>(&bad, 1));
  ASSERT_TRUE(r);  // one op failing is a Reply, not a broken session
  EXPECT_EQ(r->front().err, EINVAL);
}

TEST(ProcessTransport, CancelBreaksTheSession) {
  TempDir dir;
  Result<std::unique_ptr<Transport>> t = connect_process({self_exe(), "agent", dir.path});
  ASSERT_TRUE(t) << t.error().what;
  (*t)->cancel();
  Result<std::vector<Reply>> r = (*t)->exchange(sample_batch());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ECANCELED);
  r = (*t)->exchange(sample_batch());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EPIPE);  // broken until reconnected
}

TEST(ProcessTransport, SshThroughAFakeSsh) {
  TempDir dir;
  const std::string root = dir.path + "/it's a root";
  stdfs::create_directory(root);
  // Behaves like ssh + sshd: drops options and host, runs the rest via sh -c.
  const std::string fake = dir.path + "/fake-ssh";
  std::ofstream(fake) << "#!/bin/sh\n"
                         "while [ $# -gt 0 ]; do case \"$1\" in -p|-l|-i|-o) shift 2;; -*) shift;; "
                         "*) break;; esac; done\n"
                         "shift\nexec /bin/sh -c \"$*\"\n";
  stdfs::permissions(fake, stdfs::perms::owner_all);
  TargetSpec spec = *parse_target("ssh://someone@somehost:2222" + root);
  spec.ssh = fake + " -o StrictHostKeyChecking=no";
  spec.agent = self_exe();
  Result<std::unique_ptr<Transport>> t = connect(spec);
  ASSERT_TRUE(t) << t.error().what;
  Result<std::vector<Reply>> r = (*t)->exchange(sample_batch());
  ASSERT_TRUE(r);
  EXPECT_EQ(slurp(root + "/d/f"), "hello");
}

TEST(ProcessTransport, ClearErrors) {
  Result<std::unique_ptr<Transport>> gone =
      connect_process({"/bin/sh", "-c", "echo 'ssh: connect to host x: Connection refused' >&2; exit 255"});
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, ECONNRESET);
  EXPECT_NE(gone.error().what.find("Connection refused"), std::string::npos) << gone.error().what;
  EXPECT_NE(gone.error().what.find("exit status 255"), std::string::npos) << gone.error().what;

  Result<std::unique_ptr<Transport>> chatty =
      connect_process({"/bin/sh", "-c", "echo Welcome to server2; cat >/dev/null"});
  ASSERT_FALSE(chatty);
  EXPECT_EQ(chatty.error().code, EPROTO);

  Result<std::unique_ptr<Transport>> missing = connect_process({"/nonexistent/mirrorfs", "agent", "/"});
  ASSERT_FALSE(missing);

  Result<std::unique_ptr<Transport>> no_root = connect_process({self_exe(), "agent", "/nonexistent/root"});
  ASSERT_FALSE(no_root);
  EXPECT_EQ(no_root.error().code, ENOENT) << no_root.error().what;
}

class FakeTransport final : public Transport {
 public:
  Result<std::vector<Reply>> exchange(std::span<const Request>) override {
    return std::vector<Reply>{{EPROTONOSUPPORT, "sender speaks protocol 1, this agent speaks 2", {}}};
  }
  std::uint64_t bytes_sent() const noexcept override { return 0; }
  std::uint64_t bytes_received() const noexcept override { return 0; }
};

TEST(Handshake, VersionMismatchIsAClearError) {
  FakeTransport t;
  Result<void> h = handshake(t, "target x");
  ASSERT_FALSE(h);
  EXPECT_EQ(h.error().code, EPROTONOSUPPORT);
  EXPECT_NE(h.error().what.find("protocol version mismatch"), std::string::npos);
}

// Needs main.cpp to wire `mirrorfs agent ROOT` to run_agent().
TEST(ProcessTransport, RealMirrorfsAgent) {
  ASSERT_TRUE(stdfs::exists(MIRRORFS_BIN)) << MIRRORFS_BIN << " is not built";
  TempDir dir;
  Result<std::unique_ptr<Transport>> t = connect_process({MIRRORFS_BIN, "agent", dir.path});
  ASSERT_TRUE(t) << t.error().what;
  pipelined_batch(**t, dir.path);
}

}  // namespace
}  // namespace mirrorfs::replicate
