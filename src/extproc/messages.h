#pragma once

// Reading and building the ext_proc messages the Inference Extension's protocol uses: header
// values (raw_value or value), header mutations, the endpoint keys in metadata (the subset
// hint, the destination, the served endpoint) and immediate responses.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "envoy/service/ext_proc/v3/external_processor.pb.h"

namespace sluice::extproc {

namespace pb = envoy::service::ext_proc::v3;

// The protocol's keys (gateway-api-inference-extension, docs/proposals/004).
inline constexpr std::string_view kDestinationHeader = "x-gateway-destination-endpoint";
inline constexpr std::string_view kServedKey = "x-gateway-destination-endpoint-served";
inline constexpr std::string_view kSubsetKey = "x-gateway-destination-endpoint-subset";
inline constexpr std::string_view kLbNamespace = "envoy.lb";
inline constexpr std::string_view kSubsetNamespace = "envoy.lb.subset_hint";
inline constexpr size_t kMaxBodyChunk = 62000;  // StreamedBodyResponse chunks

// A header's value: Envoy sends raw_value (bytes); older senders use value.
std::string_view headerValue(const envoy::config::core::v3::HeaderValue& h);
// The value of a header in the map by lower-case name, or null when absent.
const envoy::config::core::v3::HeaderValue* findHeader(
    const envoy::config::core::v3::HeaderMap& headers, std::string_view lower_name);

// Sets (overwrites) a header in a mutation.
void setHeader(pb::HeaderMutation& m, std::string_view name, std::string_view value);

// The addresses under `ns`/`key` in the request's metadata: a list of strings, or one string
// of comma-separated addresses. `present` tells whether the key was there at all.
std::vector<std::string> metadataAddresses(const pb::ProcessingRequest& req, std::string_view ns,
                                           std::string_view key, bool& present);

// dynamic_metadata["envoy.lb"]["x-gateway-destination-endpoint"] = value.
void setDestinationMetadata(pb::ProcessingResponse& resp, std::string_view value);

// An ImmediateResponse with a JSON body (OpenAI's error shape, say).
void setImmediate(pb::ProcessingResponse& resp, int status, std::string_view json_body,
                  std::string_view details);

}  // namespace sluice::extproc
