#include "k8s/informer.h"

#include <algorithm>

#include <fmt/core.h>

#include "base/log.h"

namespace sluice::k8s {

using json = nlohmann::json;

std::string_view stateName(InformerState s) {
  switch (s) {
    case InformerState::Starting:
      return "starting";
    case InformerState::Synced:
      return "synced";
    case InformerState::Missing:
      return "not served (CRD not installed?)";
    case InformerState::Failing:
      return "failing";
  }
  return "?";
}

Informer::Informer(ApiClient& client, const ResourceType& type, Options options, Handler handler,
                   uint64_t seed)
    : client_(client),
      type_(type),
      options_(std::move(options)),
      handler_(std::move(handler)),
      random_(seed) {}

void Informer::stop() {
  stopped_ = true;
  if (timer_) {
    timer_->cancel();
  }
}

void Informer::setState(InformerState s, const std::string& detail) {
  if (s == InformerState::Synced || s == InformerState::Missing) {
    synced_ = true;  // a resource the server does not serve has nothing to wait for
  }
  if (s != state_) {
    state_ = s;
    handler_.state(type_, s, detail);
  }
}

std::chrono::milliseconds Informer::nextBackoff() {
  backoff_ = backoff_.count() == 0 ? options_.backoff_initial
                                   : std::min(options_.backoff_max, backoff_ * 2);
  // Full jitter over the upper half, so replicas restarted together do not retry in step.
  const auto half = backoff_.count() / 2;
  return std::chrono::milliseconds(half + static_cast<int64_t>(random_.uniform(half + 1)));
}

awaitable<void> Informer::sleep(std::chrono::milliseconds d) {
  auto ex = co_await asio::this_coro::executor;
  timer_ = std::make_unique<SteadyTimer>(ex, d);
  error_code ec;
  co_await timer_->async_wait(asio::redirect_error(use_awaitable, ec));
}

std::string Informer::query(bool watch, const std::string& cont) const {
  std::string q;
  auto add = [&](std::string_view k, const std::string& v) {
    q += q.empty() ? '?' : '&';
    q += k;
    q += '=';
    q += queryEscape(v);
  };
  if (!options_.label_selector.empty()) {
    add("labelSelector", options_.label_selector);
  }
  if (!options_.field_selector.empty()) {
    add("fieldSelector", options_.field_selector);
  }
  if (watch) {
    add("watch", "1");
    add("resourceVersion", rv_);
    add("allowWatchBookmarks", "true");
    const auto t = options_.watch_timeout.count();
    add("timeoutSeconds", std::to_string(t + static_cast<int64_t>(random_.uniform(t + 1))));
  } else {
    add("limit", std::to_string(options_.page_size));
    if (!cont.empty()) {
      add("continue", cont);
    }
  }
  return q;
}

awaitable<bool> Informer::list(Response& failure) {
  std::vector<json> items;
  std::string cont;
  const std::string path = type_.collectionPath(options_.ns);
  do {
    auto res = co_await client_.request("GET", path + query(false, cont));
    if (stopped_) {
      co_return false;
    }
    if (res.status == 410 && !cont.empty()) {
      // The continue token expired mid-list: start over.
      items.clear();
      cont.clear();
      continue;
    }
    if (!res.ok()) {
      failure = std::move(res);
      co_return false;
    }
    json page = json::parse(res.body, nullptr, false);
    if (!page.is_object()) {
      failure = Response{res.status, {}, fmt::format("list {}: not a JSON object", type_.id())};
      co_return false;
    }
    auto& meta = page["metadata"];
    cont = meta.is_object() && meta.value("continue", json()).is_string()
               ? meta["continue"].get<std::string>()
               : std::string();
    if (meta.is_object() && meta.value("resourceVersion", json()).is_string()) {
      rv_ = meta["resourceVersion"].get<std::string>();
    }
    if (auto& list = page["items"]; list.is_array()) {
      for (auto& item : list) {
        items.push_back(std::move(item));
      }
    }
  } while (!cont.empty());
  ++stats_.lists;
  handler_.replace(type_, std::move(items));
  co_return true;
}

bool Informer::onLine(std::string_view line) {
  json ev = json::parse(line, nullptr, false);
  if (!ev.is_object() || !ev["type"].is_string() || !ev["object"].is_object()) {
    ++stats_.errors;
    SLUICE_LOG(Warn, "k8s", "watch {}: malformed event ignored", type_.id());
    return true;
  }
  const std::string type = ev["type"].get<std::string>();
  json& obj = ev["object"];
  if (type == "ERROR") {
    const json c = obj.value("code", json());
    const int64_t code = c.is_number_integer() ? c.get<int64_t>() : 0;
    if (code == 410) {
      relist_ = true;
    } else {
      ++stats_.errors;
      SLUICE_LOG(Warn, "k8s", "watch {}: error event {}: {}", type_.id(), code,
                 obj.value("message", json()).dump());
    }
    return false;
  }
  if (auto& meta = obj["metadata"]; meta.is_object() && meta["resourceVersion"].is_string()) {
    rv_ = meta["resourceVersion"].get<std::string>();
  }
  if (type == "BOOKMARK") {
    ++stats_.bookmarks;
    return true;
  }
  if (type != "ADDED" && type != "MODIFIED" && type != "DELETED") {
    ++stats_.errors;
    return true;
  }
  ++stats_.events;
  handler_.event(type_, type, std::move(obj));
  return true;
}

awaitable<Response> Informer::watch() {
  ++stats_.watches;
  const auto idle = options_.watch_timeout * 2 + std::chrono::seconds(60);
  co_return co_await client_.stream(
      type_.collectionPath(options_.ns) + query(true, {}),
      [this](std::string_view line) { return !stopped_ && onLine(line); },
      std::chrono::duration_cast<std::chrono::milliseconds>(idle));
}

awaitable<void> Informer::run() {
  while (!stopped_) {
    bool failed = false;
    try {
      co_await runOnce();
    } catch (const std::exception& e) {
      // Whatever the server sent, the informer lives on: relist after a pause.
      ++stats_.errors;
      relist_ = true;
      failed = true;
      setState(InformerState::Failing, e.what());
    }
    if (failed && !stopped_) {
      co_await sleep(nextBackoff());
    }
  }
}

// One list (when needed) and one watch.
awaitable<void> Informer::runOnce() {
  if (relist_) {
    Response failure;
    if (!co_await list(failure)) {
      if (stopped_) {
        co_return;
      }
      ++stats_.errors;
      if (failure.status == 404) {
        setState(InformerState::Missing, failure.describe());
        co_await sleep(options_.missing_retry);
      } else {
        setState(InformerState::Failing, failure.describe());
        co_await sleep(nextBackoff());
      }
      co_return;
    }
    if (stats_.lists > 1) {
      ++stats_.relists;
    }
    relist_ = false;
    setState(InformerState::Synced, {});
  }
  auto res = co_await watch();
  if (stopped_) {
    co_return;
  }
  if (res.status == 410) {
    relist_ = true;
    co_return;
  }
  if (res.ok() && res.error.empty()) {
    backoff_ = {};  // the server ended the watch (timeoutSeconds): resume at once
    setState(InformerState::Synced, {});
    co_return;
  }
  if (relist_) {
    co_return;  // a 410 ERROR event
  }
  ++stats_.errors;
  if (res.status == 404) {
    relist_ = true;  // the CRD went away
  }
  setState(InformerState::Failing, res.describe());
  co_await sleep(nextBackoff());
}

}  // namespace sluice::k8s
