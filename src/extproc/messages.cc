#include "extproc/messages.h"

#include "base/strings.h"

namespace sluice::extproc {

std::string_view headerValue(const envoy::config::core::v3::HeaderValue& h) {
  return h.raw_value().empty() ? std::string_view(h.value()) : std::string_view(h.raw_value());
}

const envoy::config::core::v3::HeaderValue* findHeader(
    const envoy::config::core::v3::HeaderMap& headers, std::string_view lower_name) {
  for (const auto& h : headers.headers()) {
    if (base::iequals(h.key(), lower_name)) {
      return &h;
    }
  }
  return nullptr;
}

void setHeader(pb::HeaderMutation& m, std::string_view name, std::string_view value) {
  auto* opt = m.add_set_headers();
  opt->mutable_header()->set_key(std::string(name));
  opt->mutable_header()->set_raw_value(std::string(value));
  opt->set_append_action(envoy::config::core::v3::HeaderValueOption::OVERWRITE_IF_EXISTS_OR_ADD);
}

std::vector<std::string> metadataAddresses(const pb::ProcessingRequest& req, std::string_view ns,
                                           std::string_view key, bool& present) {
  std::vector<std::string> out;
  present = false;
  const auto& fm = req.metadata_context().filter_metadata();
  auto s = fm.find(std::string(ns));
  if (s == fm.end()) {
    return out;
  }
  auto f = s->second.fields().find(std::string(key));
  if (f == s->second.fields().end()) {
    return out;
  }
  present = true;
  auto addAll = [&](std::string_view text) {
    for (auto& part : base::splitList(text)) {
      out.push_back(std::move(part));
    }
  };
  if (f->second.has_list_value()) {
    for (const auto& v : f->second.list_value().values()) {
      if (v.has_string_value()) {
        addAll(v.string_value());
      }
    }
  } else if (f->second.has_string_value()) {
    addAll(f->second.string_value());
  }
  return out;
}

void setDestinationMetadata(pb::ProcessingResponse& resp, std::string_view value) {
  auto& lb = (*resp.mutable_dynamic_metadata()->mutable_fields())[std::string(kLbNamespace)];
  (*lb.mutable_struct_value()->mutable_fields())[std::string(kDestinationHeader)].set_string_value(
      std::string(value));
}

void setImmediate(pb::ProcessingResponse& resp, int status, std::string_view json_body,
                  std::string_view details) {
  auto* imm = resp.mutable_immediate_response();
  imm->mutable_status()->set_code(static_cast<envoy::type::v3::StatusCode>(status));
  imm->set_body(std::string(json_body));
  imm->set_details(std::string(details));
  setHeader(*imm->mutable_headers(), "content-type", "application/json");
}

}  // namespace sluice::extproc
