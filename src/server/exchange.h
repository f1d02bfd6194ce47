#pragma once

// The state of one request on its way through the stages of the request path (client I/O,
// routing, admission, flow control, mirrors, the attempt loop, the relay, completion): what
// the access log and metrics need, the route result, and the filters' state. Internal to
// src/server.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <boost/beast/http/message.hpp>

#include "base/clock.h"
#include "filters/filter_chain.h"
#include "filters/flow_control.h"
#include "http/padded_body.h"
#include "metrics/metrics.h"
#include "openai/usage.h"
#include "router/route_table.h"
#include "server/generation.h"
#include "server/session.h"
#include "tracing/request_trace.h"

namespace sluice::server {

namespace bhttp = boost::beast::http;

using Request = bhttp::request<http::PaddedBody>;

constexpr size_t kMaxPipelinedBytes = 64 * 1024;

constexpr size_t kMaxUsageCopyBytes = 4 * 1024 * 1024;

// Output tokens assumed for load accounting when a request sets no max_tokens.
constexpr uint64_t kDefaultExpectedOutput = 256;

// What happened to one request; feeds metrics and the access log.
struct Exchange {
  Exchange(Session& s, Request& r, GenerationPtr g) : session(s), req(r), gen(std::move(g)) {}
  Session& session;
  Request& req;
  // The configuration this request is served by, whatever reloads happen meanwhile.
  const GenerationPtr gen;
  std::string_view method;
  std::string_view target;   // origin-form: an absolute-form target's path and query
  std::string owned_target;  // backs `target` when it is not a slice of the request's
  std::string_view path;
  std::string request_id;
  base::MonoTime start{};
  bool keep_alive = true;
  bool http10 = false;

  int status = 0;
  std::string_view error_type;
  std::string model_label{metrics::kNoModel};
  std::string endpoint;
  int attempts = 0;
  openai::Usage usage;
  double ttft_ms = -1;
  bool stream = false;
  metrics::ModelSeries* series = nullptr;  // once the model is known
  std::string decision;                    // opt-in access-log field
  std::string_view host;                   // Host without the port, lower case
  std::string_view authority;  // host[:port] as received (absolute-form target, else Host)
  int32_t priority = 0;        // InferenceObjective priority (filters use it)
  std::optional<base::MonoTime> deadline;  // HTTPRoute timeouts.request
  // Filters: the chain this request was admitted by, and what it reserved.
  std::shared_ptr<const filters::FilterChain> filters;
  filters::Admission admission;
  bool strip_credentials = false;  // auth consumed them; they do not go upstream
  bool served = false;             // an upstream produced the response
  std::string identity_tag;
  // Flow control: the queue this request holds a slot in, released when it ends.
  std::shared_ptr<filters::FlowQueue> flow;
  const router::Backend* flow_backend = nullptr;
  double queue_ms = -1;        // waited in a flow-control queue
  int rate_limited = -1;       // refused by a rate limit counting this Reservation::Kind
  uint64_t output_budget = 0;  // stop_streams_over_budget: events allowed; 0 = unlimited
  bool over_budget = false;
  // The pool's endpoint picker this request follows (its stream is open until the end).
  struct PickerCall* picker = nullptr;

  // Which Gateway API objects served it, for the access log, the metrics labels and tracing
  // (all owned by `gen`).
  const router::ListenerRoutes* listener = nullptr;
  std::string_view route_kind;       // HTTPRoute | ModelRoute
  std::string_view route;            // ns/name
  std::string_view route_qualified;  // "HTTPRoute/ns/name"
  int route_rule = -1;
  const router::Backend* backend = nullptr;
  std::string requested_model;                           // the body's model, as the client sent it
  std::string upstream_model;                            // the model sent upstream, when it differs
  std::string_view objective;                            // the InferenceObjective that applied
  std::string_view upstream_protocol;                    // http/1.1 | h2c | https | provider
  metrics::ObjectiveSeries* objective_series = nullptr;  // inference_objective_*
  // Its spans, when the request is traced and sampled (trace_stage.h); null otherwise.
  std::unique_ptr<tracing::RequestTrace> trace;
};

// Where routing sent a request and what the route asks to be done on the way.
struct RouteChoice {
  const router::Backend* backend = nullptr;
  std::string upstream_model;  // the model sent upstream; empty = the client's, unchanged
  const router::RouteAction* action = nullptr;  // the HTTPRoute rule, when one matched
  const router::MatchEntry* entry = nullptr;
  std::string rewritten_path;  // URLRewrite, with the query kept
  bool lora = false;           // the model is a LoRA adapter (a ModelRoute's loraAdapters)
  const router::ModelRewrite* rewrite = nullptr;  // the InferenceModelRewrite that chose it
};

// Request headers for route matching, by lower-case name.
class BeastHeaders final : public router::HeaderLookup {
 public:
  explicit BeastHeaders(const Request& req) : req_(req) {}
  std::optional<std::string_view> get(std::string_view lower_name) const override {
    auto it = req_.find(beast::string_view(lower_name.data(), lower_name.size()));
    if (it == req_.end()) {
      return std::nullopt;
    }
    return std::string_view(it->value().data(), it->value().size());
  }

 private:
  const Request& req_;
};

}  // namespace sluice::server
