// The admin status page's data: the reload history, the pools view (the router's own load
// accounting beside the scraped engine signals), the embedded page files and their headers,
// and all of them served by a real in-process router. The page itself runs in Chromium in
// test/e2e/status_page.test.mjs.
#include <nlohmann/json.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "backends/engine_metrics.h"
#include "fakes/sim_fleet.h"
#include "fakes/test_client.h"
#include "router/snapshot.h"
#include "server/pools_view.h"
#include "server/reload_history.h"
#include "server/server.h"
#include "server/ui_page.h"

namespace sluice {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using json = nlohmann::json;

TEST(ReloadHistory, KeepsTheNewestFirstAndBoundsTheList) {
  server::ReloadHistory h;
  for (size_t i = 0; i < server::ReloadHistory::kKept + 5; ++i) {
    server::ReloadRecord r;
    r.at = base::SystemTime(std::chrono::milliseconds(1000 * i));
    r.trigger = i % 2 ? "objects" : "config file";
    r.applied = i != 3;
    r.version = i;
    h.add(std::move(r));
  }
  auto j = json::parse(h.json());
  EXPECT_EQ(j["total"], server::ReloadHistory::kKept + 5);
  ASSERT_EQ(j["reloads"].size(), server::ReloadHistory::kKept);
  EXPECT_EQ(j["reloads"][0]["version"], server::ReloadHistory::kKept + 4);
  EXPECT_EQ(j["reloads"][0]["unix_ms"], 1000 * (server::ReloadHistory::kKept + 4));
  EXPECT_EQ(j["reloads"].back()["version"], 5);
}

TEST(ReloadHistory, AnyBytesInAMessageStillMakeValidJson) {
  server::ReloadHistory h;
  server::ReloadRecord r;
  r.detail = std::string("bad \xff\xfe utf-8 \" </script>\n", 25);
  r.appeared = {"HTTPRoute/ns/\x01x: refused"};
  h.add(std::move(r));
  auto j = json::parse(h.json());  // throws on invalid JSON
  EXPECT_THAT(j["reloads"][0]["detail"].get<std::string>(), HasSubstr("</script>"));
  EXPECT_EQ(j["reloads"][0]["applied"], false);
}

config::RouterConfig oneModel() {
  config::RouterConfig c;
  config::RouterConfig::Model m;
  m.name = "llama";
  m.upstream_model = "sim-llama";
  m.endpoints = {{"127.0.0.1", 9001}, {"127.0.0.1", 9002}};
  c.models.push_back(m);
  return c;
}

TEST(PoolsView, ShowsLoadEjectionAndScrapedSignalsPerEndpoint) {
  router::EndpointRegistry registry;
  auto snap = router::buildSnapshot(oneModel(), 3, registry);
  ASSERT_TRUE(snap);
  const auto& eps = (*snap)->findModel("llama")->endpoints;
  router::Reservation held(eps[0].state.get(), 120);
  const base::MonoTime now{std::chrono::seconds(100)};
  const int64_t now_ns = now.time_since_epoch().count();
  ASSERT_TRUE(eps[1].state->onFailure(now_ns, 1, 5'000'000'000, 60'000'000'000));
  backends::MetricsView view;
  auto& m = view.endpoints["127.0.0.1:9001"];
  m.scraped = true;
  m.waiting = 4;
  m.running = 7;
  m.kv_usage = 0.5;
  m.updated = now - std::chrono::seconds(2);

  auto j = json::parse(server::poolsJson(**snap, &view, now));
  EXPECT_EQ(j["version"], 3);
  ASSERT_EQ(j["pools"].size(), 1u);
  const auto& pool = j["pools"][0];
  EXPECT_EQ(pool["kind"], "models");
  EXPECT_EQ(pool["name"], "llama");
  EXPECT_EQ(pool["upstream_model"], "sim-llama");
  ASSERT_EQ(pool["endpoints"].size(), 2u);
  const auto& busy = pool["endpoints"][0];
  EXPECT_EQ(busy["address"], "127.0.0.1:9001");
  EXPECT_EQ(busy["in_flight"], 1);
  EXPECT_EQ(busy["in_flight_tokens"], 120);
  EXPECT_EQ(busy["ejected"], false);
  EXPECT_EQ(busy["scrape"]["waiting"], 4);
  EXPECT_EQ(busy["scrape"]["running"], 7);
  EXPECT_EQ(busy["scrape"]["kv_usage"], 0.5);
  EXPECT_EQ(busy["scrape"]["age_seconds"], 2);
  EXPECT_TRUE(busy["scrape"]["ttft_seconds"].is_null());  // not reported: null, not -1
  const auto& out = pool["endpoints"][1];
  EXPECT_EQ(out["ejected"], true);
  EXPECT_EQ(out["ejections"], 1);
  EXPECT_DOUBLE_EQ(out["ejected_seconds"].get<double>(), 5.0);
  EXPECT_TRUE(out["scrape"].is_null());  // not in the view

  held.release();
  auto after = json::parse(server::poolsJson(**snap, nullptr, now));
  EXPECT_EQ(after["metrics_fetcher"], false);
  EXPECT_EQ(after["pools"][0]["endpoints"][0]["in_flight"], 0);
}

TEST(UiPage, ServesItsThreeFilesUnderUiOnly) {
  for (const char* path : {"/ui", "/ui/", "/ui/index.html"}) {
    const auto* page = server::findUiAsset(path);
    ASSERT_NE(page, nullptr) << path;
    EXPECT_THAT(std::string(page->type), StartsWith("text/html"));
    EXPECT_THAT(std::string(page->body), HasSubstr("/ui/status.js"));
  }
  ASSERT_NE(server::findUiAsset("/ui/status.js"), nullptr);
  EXPECT_THAT(std::string(server::findUiAsset("/ui/status.js")->type),
              StartsWith("text/javascript"));
  ASSERT_NE(server::findUiAsset("/ui/status.css"), nullptr);
  EXPECT_EQ(server::findUiAsset("/ui/../metrics"), nullptr);
  EXPECT_EQ(server::findUiAsset("/ui/status.js.map"), nullptr);
  EXPECT_EQ(server::findUiAsset("/"), nullptr);
  for (const auto& a : server::uiAssets()) {
    EXPECT_EQ(std::string(a.body).find("http://"), std::string::npos) << a.path;
    EXPECT_EQ(std::string(a.body).find("https://"), std::string::npos) << a.path;
  }
  EXPECT_THAT(std::string(server::uiHeaders()), HasSubstr("default-src 'none'; script-src 'self'"));
}

class StatusPageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fleet_.start(2);
    config_ = testing::loopbackConfig(fleet_.endpoints());
    config_.metrics_fetcher.enabled = true;
    config_.metrics_fetcher.interval = std::chrono::milliseconds(10);
    router_ = std::make_unique<server::Server>(config_, base::RealTimeSource::instance(), 7);
    ASSERT_TRUE(router_->start());
  }
  void TearDown() override { router_->drainAndStop(); }

  testing::SimFleet fleet_;
  config::RouterConfig config_;
  std::unique_ptr<server::Server> router_;
};

TEST_F(StatusPageTest, TheAdminListenerServesThePageAndItsData) {
  auto page = testing::request(router_->adminPort(), "GET", "/ui");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_THAT(page->header("content-type"), StartsWith("text/html"));
  EXPECT_THAT(page->header("content-security-policy"), HasSubstr("default-src 'none'"));
  EXPECT_EQ(page->header("x-content-type-options"), "nosniff");
  EXPECT_EQ(page->header("cache-control"), "no-store");
  EXPECT_EQ(page->body, std::string(server::findUiAsset("/ui")->body));
  // HEAD: the length of the file, no body (the next response on the connection is intact).
  testing::TestConnection conn(router_->adminPort());
  ASSERT_TRUE(
      conn.send("HEAD /ui/status.js HTTP/1.1\r\nHost: x\r\n\r\n"
                "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
  auto head = conn.readHead();
  ASSERT_TRUE(head);
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->header("content-length"),
            std::to_string(server::findUiAsset("/ui/status.js")->body.size()));
  auto next = conn.readResponse();
  ASSERT_TRUE(next);
  EXPECT_EQ(next->body, "ok\n");
  EXPECT_EQ(testing::request(router_->metricsPort(), "GET", "/ui")->status, 404);

  auto r = testing::request(router_->listenerPort(), "POST", "/v1/completions",
                            R"({"model":"m","prompt":"x","max_tokens":1})");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  auto missing = testing::request(router_->listenerPort(), "POST", "/v1/completions",
                                  R"({"model":"nope","prompt":"x","max_tokens":1})");
  ASSERT_EQ(missing->status, 404);
  // A request is counted once its response is out: read until both are.
  uint64_t ok = 0, client_errors = 0, picks = 0;
  ASSERT_TRUE(testing::waitFor([&] {
    auto traffic =
        json::parse(testing::request(router_->adminPort(), "GET", "/debug/traffic")->body);
    ok = client_errors = picks = 0;
    for (const auto& s : traffic["series"]) {
      ok += s["status_2xx"].get<uint64_t>();
      client_errors += s["status_4xx"].get<uint64_t>();
    }
    for (const auto& [address, n] : traffic["picks"].items()) {
      picks += n.get<uint64_t>();
    }
    return ok == 1 && client_errors == 1;
  }));
  EXPECT_EQ(picks, 1u);

  ASSERT_TRUE(testing::waitFor([&] {
    auto pools = json::parse(testing::request(router_->adminPort(), "GET", "/debug/pools")->body);
    const auto& eps = pools["pools"][0]["endpoints"];
    return eps.size() == 2 && !eps[0]["scrape"].is_null() && eps[0]["scrape"]["scraped"] == true;
  }));
}

TEST_F(StatusPageTest, ReloadsAreListedWithTheirTriggerAndOutcome) {
  auto cfg = config_;
  cfg.models[0].name = "m2";
  ASSERT_TRUE(router_->reload(cfg));
  cfg.models[0].endpoints = {{"no-such-host.invalid", 1}};
  EXPECT_FALSE(router_->reload(cfg));
  auto j = json::parse(testing::request(router_->adminPort(), "GET", "/debug/reloads")->body);
  ASSERT_EQ(j["reloads"].size(), 3u);
  EXPECT_EQ(j["total"], 3);
  const auto& refused = j["reloads"][0];
  EXPECT_EQ(refused["trigger"], "config file");
  EXPECT_EQ(refused["applied"], false);
  EXPECT_THAT(refused["detail"].get<std::string>(), HasSubstr("no-such-host.invalid"));
  const auto& applied = j["reloads"][1];
  EXPECT_EQ(applied["applied"], true);
  EXPECT_EQ(refused["version"], applied["version"]);  // the refused one changed nothing
  EXPECT_THAT(applied["detail"].get<std::string>(), HasSubstr("1 configured model(s)"));
  EXPECT_EQ(j["reloads"][2]["trigger"], "start");
}

}  // namespace
}  // namespace sluice
