#include "server/trace_stage.h"

#include <charconv>
#include <cstring>

#include <fmt/core.h>

#include "server/exchange.h"
#include "server/worker.h"
#include "tracing/otlp_wire.h"

namespace sluice::server {

namespace {

int64_t monoNs(base::MonoTime t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

template <size_t N>
std::array<uint8_t, N> randomId(base::Random& random) {
  std::array<uint8_t, N> id{};
  do {
    for (size_t i = 0; i < N; i += 8) {
      const uint64_t v = random.next();
      std::memcpy(id.data() + i, &v, std::min<size_t>(8, N - i));
    }
  } while (std::all_of(id.begin(), id.end(), [](uint8_t b) { return b == 0; }));
  return id;
}

bool sampleNew(base::Random& random, double ratio) {
  if (ratio >= 1) {
    return true;
  }
  if (ratio <= 0) {
    return false;
  }
  return static_cast<double>(random.next() >> 11) * 0x1.0p-53 < ratio;
}

std::string_view header(const Request& req, std::string_view name) {
  auto it = req.find(beast::string_view(name.data(), name.size()));
  return it == req.end() ? std::string_view()
                         : std::string_view(it->value().data(), it->value().size());
}

}  // namespace

void startTrace(Exchange& x) {
  Worker& w = x.session.worker;
  if (w.context().tracer == nullptr) {
    return;
  }
  const auto parent = tracing::parseTraceparent(header(x.req, "traceparent"));
  const double ratio = x.gen->snapshot->config.tracing.sampling;
  if (parent ? !parent->sampled() : !sampleNew(w.random(), ratio)) {
    return;  // not recorded: a traceparent goes upstream as it came
  }
  const auto trace_id = parent ? parent->trace_id : randomId<16>(w.random());
  const int64_t wall = std::chrono::duration_cast<std::chrono::nanoseconds>(
                           w.context().time.systemNow().time_since_epoch())
                           .count();
  x.trace = std::make_unique<tracing::RequestTrace>(parent ? &*parent : nullptr, trace_id,
                                                    randomId<8>(w.random()), monoNs(x.start), wall,
                                                    header(x.req, "tracestate"));
}

size_t traceOpen(Exchange& x, std::string_view name, tracing::SpanKind kind) {
  if (!x.trace) {
    return kNoSpan;
  }
  Worker& w = x.session.worker;
  return x.trace->open(name, kind, randomId<8>(w.random()),
                       monoNs(w.context().time.monotonicNow()));
}

void traceClose(Exchange& x, size_t span, bool error) {
  if (x.trace && span != kNoSpan) {
    x.trace->close(span, monoNs(x.session.worker.context().time.monotonicNow()), error);
  }
}

tracing::SpanData* traceSpan(Exchange& x, size_t span) {
  return x.trace && span != kNoSpan ? &x.trace->span(span) : nullptr;
}

void appendUpstreamTrace(const Exchange& x, std::string& head) {
  if (!x.trace) {
    return;
  }
  head += "traceparent: ";
  tracing::appendTraceparent(head, x.trace->traceId(), x.trace->spans().front().id, 1);
  head += "\r\n";
  if (!x.trace->tracestate().empty()) {
    head += "tracestate: ";
    head += x.trace->tracestate();
    head += "\r\n";
  }
}

size_t traceAttempt(Exchange& x, size_t i, std::string_view address, std::string* head) {
  const size_t span = traceOpen(x, "upstream", tracing::SpanKind::Client);
  tracing::SpanData* s = traceSpan(x, span);
  if (s == nullptr) {
    return kNoSpan;
  }
  s->attributes.reserve(3);
  s->set("sluice.attempt", static_cast<int64_t>(i));
  const auto colon = address.rfind(':');
  s->set("server.address", address.substr(0, colon));
  int64_t port = 0;
  if (colon != std::string_view::npos &&
      std::from_chars(address.data() + colon + 1, address.data() + address.size(), port).ec ==
          std::errc()) {
    s->set("server.port", port);
  }
  static constexpr std::string_view kName = "\r\ntraceparent: ";
  if (head != nullptr) {
    if (auto at = head->find(kName); at != std::string::npos) {
      tracing::writeHex(head->data() + at + kName.size() + tracing::kTraceparentSpanOffset,
                        s->id.data(), s->id.size());
    }
  }
  return span;
}

namespace {

// The server span's attributes, written straight from the request into the OTLP bytes.
void serverAttributes(const Exchange& x, tracing::WireWriter& a) {
  auto text = [&](std::string_view key, std::string_view value) {
    if (!value.empty()) {
      a.attribute(key, value);
    }
  };
  a.attribute("http.request.method", x.method);
  a.attribute("url.path", x.path);
  a.attribute("http.response.status_code", static_cast<int64_t>(x.status));
  a.attribute("network.protocol.version", x.http10 ? "1.0" : "1.1");
  a.attribute("client.address", x.session.client_ip);
  a.attribute("sluice.request_id", x.request_id);
  text("gen_ai.request.model", x.requested_model);
  text("sluice.upstream_model", x.upstream_model);
  if (x.listener != nullptr) {
    text("sluice.gateway", x.listener->gateway);
  }
  text("sluice.route", x.route_qualified);
  if (x.series != nullptr) {
    text("sluice.backend", x.series->backend);  // "Kind/ns/name", as the metrics label it
  } else if (x.backend != nullptr && !x.backend->kind.empty()) {
    a.attribute("sluice.backend", fmt::format("{}/{}", x.backend->kind, x.backend->name));
  }
  text("sluice.endpoint", x.endpoint);
  text("sluice.objective", x.objective);
  if (x.usage.input_tokens > 0 || x.usage.output_tokens > 0) {
    a.attribute("gen_ai.usage.input_tokens", static_cast<int64_t>(x.usage.input_tokens));
    a.attribute("gen_ai.usage.output_tokens", static_cast<int64_t>(x.usage.output_tokens));
  }
}

}  // namespace

void finishTrace(Exchange& x) {
  if (!x.trace) {
    return;
  }
  Worker& w = x.session.worker;
  tracing::SpanData& s = x.trace->server();
  const bool inference = x.path.substr(0, 4) == "/v1/";
  std::string name(x.method);
  if (inference) {
    name.reserve(x.method.size() + 1 + x.path.size());
    name += ' ';
    name += x.path;
  }
  x.trace->nameServer(std::move(name));
  if (x.status >= 500 || x.status == 0) {
    s.error = true;
    s.error_message =
        x.error_type.empty() ? fmt::format("HTTP {}", x.status) : std::string(x.error_type);
  }
  if (x.ttft_ms >= 0) {
    const size_t ttft = x.trace->open("first_token", tracing::SpanKind::Internal,
                                      randomId<8>(w.random()), s.start_ns);
    x.trace->close(ttft, s.start_ns + static_cast<int64_t>(x.ttft_ms * 1e6));
  }
  x.trace->finish(monoNs(w.context().time.monotonicNow()));
  w.context().tracer->submit(w.index(), *x.trace,
                             [&x](tracing::WireWriter& a) { serverAttributes(x, a); });
}

std::string traceIdHex(const Exchange& x) {
  return x.trace ? tracing::hex(x.trace->traceId()) : std::string();
}

std::string spanIdHex(const Exchange& x) {
  return x.trace ? tracing::hex(x.trace->spans().front().id) : std::string();
}

}  // namespace sluice::server
