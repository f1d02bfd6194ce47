#include "server/epp_pick.h"

#include <algorithm>

#include <fmt/format.h>

#include "base/padded_buffer.h"
#include "openai/peek.h"
#include "openai/splice.h"
#include "server/completion.h"
#include "server/route_stage.h"
#include "server/worker.h"

namespace sluice::server {

using openai::ErrorKind;

namespace {

std::string quoted(std::string_view s) {
  std::string out = "\"";
  base::appendJsonEscaped(out, s);
  out.push_back('"');
  return out;
}

// The pool's endpoints named by the subset hint ("ip:port", or a bare IP for every port).
void subsetOf(const router::Backend& pool, const std::vector<std::string>& subset,
              router::Backend& out) {
  out.model = pool.model;
  out.kind = pool.kind;
  out.name = pool.name;
  out.engine = pool.engine;
  out.scheduler = pool.scheduler;
  out.endpoints.clear();
  for (const auto& ep : pool.endpoints) {
    const std::string_view addr = ep.address;
    const std::string_view ip = addr.substr(0, addr.rfind(':'));
    for (const auto& s : subset) {
      std::string_view want = s;
      if (want.size() > 2 && want.front() == '[' && want.back() == ']') {
        want = want.substr(1, want.size() - 2);  // a bare IPv6 address in brackets
      }
      if (want == addr || want == ip ||
          (ip.size() > 2 && ip.front() == '[' && want == ip.substr(1, ip.size() - 2))) {
        out.endpoints.push_back(ep);
        break;
      }
    }
  }
}

}  // namespace

const router::Backend* servedPool(const router::Snapshot& snap) {
  const auto& epp = snap.config.epp;
  const std::string key = epp.pool_namespace + "/" + epp.pool_name;
  for (const auto& b : snap.routes->backends) {
    if (b && b->kind == "InferencePool" && b->name == key) {
      return &snap.current(*b);
    }
  }
  return nullptr;
}

awaitable<void> pickEndpoints(Exchange& x, const PickInput& in, PickResult& out) {
  Worker& w = x.session.worker;
  const auto& epp = x.gen->snapshot->config.epp;
  auto refuse = [&](ErrorKind kind, std::string message) {
    out.refusal = FlowRefusal{kind, std::move(message), kind == ErrorKind::RateLimited};
  };
  const router::Backend* pool = servedPool(*x.gen->snapshot);
  if (pool == nullptr) {
    refuse(ErrorKind::NoEndpoints,
           fmt::format("the InferencePool {}/{} is not known", epp.pool_namespace, epp.pool_name));
    co_return;
  }
  out.pool = pool;
  const std::string_view body = x.req.body().view();
  openai::RequestPeek peek;
  if (!body.empty()) {
    auto peeked = openai::peekRequest(body, x.req.body().capacity() + base::PaddedBuffer::kPadding);
    if (!peeked) {
      refuse(ErrorKind::InvalidRequest, peeked.error().message);
      co_return;
    }
    peek = std::move(*peeked);
  }
  x.stream = peek.stream;
  RouteChoice route;
  route.backend = pool;
  applyPoolPolicy(x, *pool, peek, route);
  x.model_label = peek.model.empty() ? std::string(metrics::kNoModel) : peek.model;
  labelExchange(x, *pool, peek.model, route.upstream_model, !peek.model.empty());
  router::Backend subset;
  if (in.subset_present) {
    subsetOf(*pool, in.subset, subset);
    if (subset.endpoints.empty()) {
      refuse(ErrorKind::NoEndpoints, "no endpoint of the subset hint is in the pool");
      co_return;
    }
    route.backend = &subset;
  }
  if (route.backend->endpoints.empty()) {
    refuse(ErrorKind::NoEndpoints, "the InferencePool has no ready endpoint");
    co_return;
  }
  std::optional<FlowRefusal> refused = co_await waitForFlow(x, *pool, in.abandoned);
  if (refused) {
    out.refusal = std::move(refused);
    co_return;
  }
  schedule(x, route, peek, 1 + epp.fallbacks, out.schedule);
  const auto& candidates = out.schedule.candidates;
  if (candidates.empty()) {
    refuse(ErrorKind::RateLimited, "no endpoint of the pool can take the request now");
    co_return;
  }
  out.profile = &x.gen->profiles->forModel(pool->model);
  for (const auto* ep : candidates) {
    out.destinations.push_back(ep->address);
  }
  out.reservation =
      router::Reservation(candidates.front()->state.get(),
                          out.schedule.expectedWork(0, w.scheduler().index().blockBytes()));
  if (!route.upstream_model.empty() && route.upstream_model != peek.model &&
      peek.model_token.valid()) {
    openai::BodyEdits edits;
    edits.rewriteModel(peek, route.upstream_model);
    out.body = edits.apply(body);
    out.names = {quoted(route.upstream_model), quoted(peek.model)};
  }
}

void moveToServed(Exchange& x, PickResult& r, std::string_view served) {
  x.endpoint = std::string(served);
  if (r.pool == nullptr || r.destinations.empty() || r.destinations.front() == served) {
    return;
  }
  const auto& endpoints = r.pool->endpoints;
  auto it = std::find_if(endpoints.begin(), endpoints.end(),
                         [&](const router::Endpoint& e) { return e.address == served; });
  if (it == endpoints.end()) {
    return;  // not one of the pool's: nothing of ours to move
  }
  Worker& w = x.session.worker;
  const auto& cands = r.schedule.candidates;
  const size_t i = static_cast<size_t>(std::find(cands.begin(), cands.end(), &*it) - cands.begin());
  const size_t block = w.scheduler().index().blockBytes();
  const int64_t work = i < cands.size()
                           ? r.schedule.expectedWork(i, block)
                           : static_cast<int64_t>(r.schedule.info.expectedWorkOn(0, block));
  r.reservation = router::Reservation(it->state.get(), work);
  if (r.profile != nullptr) {
    const auto* view = w.metricsView();
    w.scheduler().onDispatch(*r.profile, r.schedule.info, r.schedule.cycle, *it,
                             view ? view->find(it->address) : nullptr);
  }
}

}  // namespace sluice::server
