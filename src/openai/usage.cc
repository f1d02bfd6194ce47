#include "openai/usage.h"

#include <simdjson.h>

#include "base/padded_buffer.h"

namespace sluice::openai {
namespace {

namespace od = simdjson::ondemand;

std::optional<Usage> readUsage(od::value value) {
  od::object obj;
  if (value.get_object().get(obj)) {
    return std::nullopt;  // null or not an object
  }
  Usage usage;
  bool any = false;
  uint64_t extra_input = 0;
  for (auto field_result : obj) {
    od::field field;
    std::string_view key;
    if (std::move(field_result).get(field) || field.unescaped_key().get(key)) {
      return std::nullopt;
    }
    uint64_t n = 0;
    if (key == "prompt_tokens" || key == "input_tokens") {
      if (field.value().get_uint64().get(n) == simdjson::SUCCESS) {
        usage.input_tokens = n;
        any = true;
      }
    } else if (key == "cache_read_input_tokens" || key == "cache_creation_input_tokens") {
      // Anthropic counts cached prompt tokens apart from input_tokens.
      if (field.value().get_uint64().get(n) == simdjson::SUCCESS) {
        extra_input += n;
      }
    } else if (key == "completion_tokens" || key == "output_tokens") {
      if (field.value().get_uint64().get(n) == simdjson::SUCCESS) {
        usage.output_tokens = n;
        any = true;
      }
    }
  }
  if (!any) {
    return std::nullopt;
  }
  usage.input_tokens += extra_input;
  return usage;
}

}  // namespace

ChunkInfo inspectJson(std::string_view json) {
  thread_local od::parser parser;
  thread_local base::PaddedBuffer scratch;
  scratch.clear();
  scratch.append(json);
  ChunkInfo info;
  od::document doc;
  if (parser
          .iterate(simdjson::padded_string_view(scratch.data(), scratch.size(),
                                                scratch.capacity() + base::PaddedBuffer::kPadding))
          .get(doc)) {
    return info;
  }
  od::object root;
  if (doc.get_object().get(root)) {
    return info;
  }
  info.valid_json = true;
  for (auto field_result : root) {
    od::field field;
    std::string_view key;
    if (std::move(field_result).get(field) || field.unescaped_key().get(key)) {
      info.valid_json = false;
      return info;
    }
    if (key == "usage") {
      if (auto u = readUsage(field.value())) {
        info.usage = u;
      }
    } else if (key == "choices") {
      od::array arr;
      if (field.value().get_array().get(arr) == simdjson::SUCCESS) {
        bool empty = false;
        if (arr.is_empty().get(empty) == simdjson::SUCCESS) {
          info.choices_empty = empty;
        }
      }
    } else if (key == "response" || key == "message") {
      // Responses API streaming: {"type":"response.completed","response":{...,"usage":{...}}};
      // Anthropic's stream start: {"type":"message_start","message":{...,"usage":{...}}}.
      od::object response;
      if (field.value().get_object().get(response) == simdjson::SUCCESS) {
        for (auto inner_result : response) {
          od::field inner;
          std::string_view inner_key;
          if (std::move(inner_result).get(inner) || inner.unescaped_key().get(inner_key)) {
            break;
          }
          if (inner_key == "usage") {
            if (auto u = readUsage(inner.value())) {
              info.usage = u;
            }
          }
        }
      }
    }
  }
  return info;
}

}  // namespace sluice::openai
