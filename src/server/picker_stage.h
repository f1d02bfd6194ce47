#pragma once

// The gateway side of the Inference Extension protocol: a request to an InferencePool with an
// endpointPickerRef is shown to that picker over ext_proc (gRPC over a pooled HTTP/2 connection
// on the request's worker), and the picker's answer is followed: its ordered destination list
// becomes the request's endpoints (the attempt loop walks it on retries), its header mutations
// and body (a rewritten model) are what goes upstream, and its immediate responses are the
// client's answer. The stream stays open through the response: the served endpoint goes back
// in the response phase (envoy.lb / x-gateway-destination-endpoint-served), the picker's
// response-header mutations reach the client, and the end of the response ends the stream
// (the picker then releases the request's load).

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backends/h2_client.h"
#include "config/manifest.h"
#include "extproc/framing.h"
#include "server/exchange.h"

namespace sluice::server {

// One request's ext_proc stream to its pool's picker.
struct PickerCall {
  std::shared_ptr<backends::H2Stream> stream;
  std::unique_ptr<extproc::Deframer> deframer;
  std::string frames;                        // the request phase, as sent (the stream reads it)
  std::string picker;                        // the picker endpoint, for messages
  bool healthy = true;                       // answered so far: ended cleanly, else reset
  config::HeaderModifier response_mutation;  // from the response phase, for the client head
  bool response_reported = false;
  ~PickerCall();  // ends the stream: the request is complete for the picker
};

struct PickerAnswer {
  enum class Kind { kFollow, kImmediate, kUnavailable };
  Kind kind = Kind::kUnavailable;
  std::string error;                      // kUnavailable: why (the failure mode decides)
  std::vector<std::string> destinations;  // kFollow: "ip:port", in order
  std::optional<std::string> body;        // kFollow: the body to send, when the picker changed it
  int status = 0;                         // kImmediate
  std::string immediate_body;
  std::vector<std::pair<std::string, std::string>> immediate_headers;
};

// A header a picker may set on the client's response: a token name, a value without CR, LF or
// NUL, and none of the framing or hop-by-hop headers the router owns.
bool pickerMaySet(std::string_view name, std::string_view value);

// Shows the request to the pool's picker; applies its request header mutations to `x.req`.
awaitable<void> askPicker(Exchange& x, const router::Backend& pool, PickerCall& call,
                          PickerAnswer& out);

// The response phase: the response head and the endpoint that produced it; the picker's
// answer fills call.response_mutation. A picker that fails here does not fail the response.
awaitable<void> reportServed(Exchange& x, PickerCall& call, const bhttp::response_header<>& head,
                             std::string_view served);

}  // namespace sluice::server
