// Global rate limits through a real redis-server started by the test on a free loopback port:
// two routers share the limit exactly; Redis going away gives each router its configured fail
// mode, and coming back restores the limit without a restart.
#include <csignal>
#include <cstdio>
#include <fstream>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "fakes/sim_fleet.h"
#include "fakes/test_client.h"
#include "server/server.h"

extern char** environ;

namespace sluice {
namespace {

using testing::freePort;

class RedisServer {
 public:
  explicit RedisServer(uint16_t port, std::string password = {})
      : port_(port), password_(std::move(password)) {}
  ~RedisServer() { stop(); }
  bool start() {
    std::string port = std::to_string(port_);
    std::vector<const char*> argv = {
        "redis-server", "--port", port.c_str(),   "--bind", "127.0.0.1",
        "--save",       "",       "--appendonly", "no"};
    if (!password_.empty()) {
      argv.push_back("--requirepass");
      argv.push_back(password_.c_str());
    }
    argv.push_back(nullptr);
    if (posix_spawnp(&pid_, "redis-server", nullptr, nullptr, const_cast<char**>(argv.data()),
                     environ) != 0) {
      pid_ = -1;
      return false;
    }
    return testing::waitFor([&] {
      int fd = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_port = htons(port_);
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
      ::close(fd);
      return ok;
    });
  }
  void stop() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }

 private:
  uint16_t port_;
  std::string password_;
  pid_t pid_ = -1;
};

std::string body(const std::string& model) {
  return R"({"model":")" + model +
         R"(","max_tokens":2,"messages":[{"role":"user","content":"hi"}]})";
}

TEST(RedisLimits, SharedAcrossRoutersWithFailModes) {
  if (::access("/usr/bin/redis-server", X_OK) != 0) {
    GTEST_SKIP() << "redis-server is not installed (scripts/install-deps.sh installs it)";
  }
  const uint16_t redis_port = freePort();
  RedisServer redis(redis_port);
  ASSERT_TRUE(redis.start());
  testing::SimFleet fleet;
  fleet.start(1, {}, {"m", "other"});
  auto config = [&](bool fail_open) {
    auto c = testing::loopbackConfig(fleet.endpoints());
    auto other = c.models[0];
    other.name = "other";
    c.models.push_back(other);
    config::RouterConfig::RateLimit rl;
    rl.name = "global-requests";
    rl.per = {"model"};
    rl.spec.requests = 10;
    rl.spec.unit = "hour";
    rl.global.redis = "127.0.0.1:" + std::to_string(redis_port);
    rl.global.lease = 2;
    rl.global.fail_open = fail_open;
    c.rate_limits.push_back(rl);
    return c;
  };
  server::Server a(config(false), base::RealTimeSource::instance(), 1);
  server::Server b(config(true), base::RealTimeSource::instance(), 2);
  ASSERT_TRUE(a.start());
  ASSERT_TRUE(b.start());
  auto post = [&](server::Server& s, const std::string& model) {
    auto r = testing::request(s.listenerPort(), "POST", "/v1/chat/completions", body(model));
    return r ? r->status : -1;
  };
  // Phase 1: 30 requests alternating between the routers; exactly 10 pass.
  int ok = 0, limited = 0;
  for (int i = 0; i < 30; ++i) {
    int status = post(i % 2 ? a : b, "m");
    ok += status == 200;
    limited += status == 429;
  }
  EXPECT_EQ(ok, 10);
  EXPECT_EQ(limited, 20);
  // Phase 2: Redis goes away. A fresh key ("other") cannot be checked: A (fail closed) refuses
  // with 503, B (fail open) serves.
  redis.stop();
  EXPECT_EQ(post(a, "other"), 503);
  EXPECT_EQ(post(b, "other"), 200);
  auto m = testing::request(a.metricsPort(), "GET", "/metrics");
  ASSERT_TRUE(m);
  EXPECT_THAT(m->body, ::testing::HasSubstr("sluice_redis_errors_total{address=\"127.0.0.1:" +
                                            std::to_string(redis_port) + "\"} 1"));
  // Phase 3: Redis comes back (empty); the limit works again without restarting the routers.
  ASSERT_TRUE(redis.start());
  EXPECT_TRUE(testing::waitFor([&] { return post(a, "other") == 200; }));
}

// A Redis that wants a password: the router authenticates from redis_auth.password_file (the
// limit holds); with a wrong password it cannot, and the limit's fail mode applies.
TEST(RedisLimits, AuthenticatesWithThePasswordFile) {
  if (::access("/usr/bin/redis-server", X_OK) != 0) {
    GTEST_SKIP() << "redis-server is not installed (scripts/install-deps.sh installs it)";
  }
  const uint16_t redis_port = freePort();
  RedisServer redis(redis_port, "s3cret-pw");
  ASSERT_TRUE(redis.start());
  testing::SimFleet fleet;
  fleet.start(1, {}, {"m"});
  const std::string dir = ::testing::TempDir();
  const std::string good = dir + "/redis-good-" + std::to_string(::getpid());
  const std::string bad = dir + "/redis-bad-" + std::to_string(::getpid());
  std::ofstream(good) << "s3cret-pw\n";  // a trailing newline, as `echo` writes it
  std::ofstream(bad) << "wrong\n";
  auto config = [&](const std::string& password_file) {
    auto c = testing::loopbackConfig(fleet.endpoints());
    config::RouterConfig::RateLimit rl;
    rl.name = "global-requests";
    rl.spec.requests = 3;
    rl.spec.unit = "hour";
    rl.global.redis = "127.0.0.1:" + std::to_string(redis_port);
    rl.global.lease = 1;
    rl.global.fail_open = false;
    c.rate_limits.push_back(rl);
    c.redis_auth.password_file = password_file;
    return c;
  };
  auto post = [&](server::Server& s) {
    auto r = testing::request(s.listenerPort(), "POST", "/v1/chat/completions", body("m"));
    return r ? r->status : -1;
  };
  {
    server::Server a(config(good), base::RealTimeSource::instance(), 1);
    ASSERT_TRUE(a.start());
    int ok = 0, limited = 0;
    for (int i = 0; i < 6; ++i) {
      int status = post(a);
      ok += status == 200;
      limited += status == 429;
    }
    EXPECT_EQ(ok, 3);
    EXPECT_EQ(limited, 3);
  }
  server::Server b(config(bad), base::RealTimeSource::instance(), 2);
  ASSERT_TRUE(b.start());
  EXPECT_EQ(post(b), 503);  // fail closed: the limit cannot be checked
  std::remove(good.c_str());
  std::remove(bad.c_str());
}

}  // namespace
}  // namespace sluice
