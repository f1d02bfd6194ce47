#include "openai/peek.h"

#include <simdjson.h>

namespace sluice::openai {
namespace {

namespace od = simdjson::ondemand;

od::parser& threadParser() {
  // One parser per thread: workers never share it, and it keeps its buffers between requests.
  thread_local od::parser parser;
  return parser;
}

bool isSpace(char c) {
  return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

Span spanOf(std::string_view body, std::string_view token) {
  while (!token.empty() && isSpace(token.back())) {
    token.remove_suffix(1);
  }
  return Span{static_cast<size_t>(token.data() - body.data()), token.size()};
}

// The raw JSON of any value, consuming it.
simdjson::error_code rawValue(od::value& v, std::string_view& out) {
  od::json_type type;
  if (auto err = v.type().get(type)) {
    return err;
  }
  switch (type) {
    case od::json_type::array: {
      od::array arr;
      if (auto err = v.get_array().get(arr)) {
        return err;
      }
      return arr.raw_json().get(out);
    }
    case od::json_type::object: {
      od::object obj;
      if (auto err = v.get_object().get(obj)) {
        return err;
      }
      return obj.raw_json().get(out);
    }
    default:
      out = v.raw_json_token();
      return simdjson::SUCCESS;
  }
}

// A JSON null; anything malformed counts as "not null" and fails its own type check later.
bool isNull(od::value& v) {
  bool null = false;
  return v.is_null().get(null) == simdjson::SUCCESS && null;
}

base::Error invalid(std::string message) {
  return base::Error{std::move(message)};
}

}  // namespace

base::Result<RequestPeek> peekRequest(std::string_view body, size_t capacity) {
  RequestPeek peek;
  size_t end = body.size();
  while (end > 0 && isSpace(body[end - 1])) {
    --end;
  }
  if (end == 0) {
    return invalid("request body is empty; expected a JSON object");
  }
  if (body[end - 1] != '}') {
    return invalid("request body is not a JSON object");
  }
  peek.object_close = end - 1;

  od::document doc;
  if (threadParser()
          .iterate(simdjson::padded_string_view(body.data(), body.size(), capacity))
          .get(doc)) {
    return invalid("request body is not valid JSON");
  }
  od::object root;
  if (doc.get_object().get(root)) {
    return invalid("request body is not a JSON object");
  }
  bool have_max_completion = false;
  for (auto field_result : root) {
    od::field field;
    if (std::move(field_result).get(field)) {
      return invalid("request body is not valid JSON");
    }
    std::string_view key;
    if (field.unescaped_key().get(key)) {
      return invalid("request body is not valid JSON");
    }
    od::value value = field.value();
    if (key == "model") {
      std::string_view model;
      if (value.get_string().get(model)) {
        return invalid("'model' must be a string");
      }
      peek.model.assign(model);
      peek.model_token = spanOf(body, value.raw_json_token());
    } else if (key == "stream") {
      bool stream = false;
      if (isNull(value)) {
        stream = false;
      } else if (value.get_bool().get(stream)) {
        return invalid("'stream' must be a boolean");
      }
      peek.stream = stream;
    } else if (key == "stream_options") {
      if (isNull(value)) {
        continue;
      }
      // A repeated key replaces the earlier one entirely (the last one is what engines read).
      peek.stream_options_empty = true;
      peek.include_usage.reset();
      peek.include_usage_token = {};
      peek.stream_options = spanOf(body, value.raw_json_token());
      od::object options;
      if (value.get_object().get(options)) {
        return invalid("'stream_options' must be an object");
      }
      peek.has_stream_options = true;
      for (auto option_result : options) {
        od::field option;
        std::string_view option_key;
        if (std::move(option_result).get(option) || option.unescaped_key().get(option_key)) {
          return invalid("request body is not valid JSON");
        }
        peek.stream_options_empty = false;
        if (option_key == "include_usage") {
          od::value flag = option.value();
          bool include = false;
          if (flag.get_bool().get(include)) {
            return invalid("'stream_options.include_usage' must be a boolean");
          }
          peek.include_usage = include;
          peek.include_usage_token = spanOf(body, flag.raw_json_token());
        }
      }
      std::string_view options_raw;
      if (options.raw_json().get(options_raw) == simdjson::SUCCESS) {
        peek.stream_options = spanOf(body, options_raw);
      }
    } else if (key == "max_tokens" || key == "max_completion_tokens") {
      if (isNull(value)) {
        continue;
      }
      uint64_t n = 0;
      if (value.get_uint64().get(n)) {
        return invalid(std::string("'") + std::string(key) + "' must be a non-negative integer");
      }
      bool is_completion = key == "max_completion_tokens";
      if (is_completion || !have_max_completion) {
        peek.max_tokens = n;
      }
      have_max_completion = have_max_completion || is_completion;
    } else if (key == "user") {
      std::string_view user;
      if (value.get_string().get(user) == simdjson::SUCCESS) {
        peek.user.assign(user);
      }
    } else if (key == "tools") {
      std::string_view raw;
      if (rawValue(value, raw)) {
        return invalid("request body is not valid JSON");
      }
      peek.tools = spanOf(body, raw);
    } else if (key == "messages" || key == "prompt" || key == "input") {
      std::string_view raw;
      if (rawValue(value, raw)) {
        return invalid("request body is not valid JSON");
      }
      PromptField f = key == "messages" ? PromptField::Messages
                      : key == "prompt" ? PromptField::Prompt
                                        : PromptField::Input;
      // messages wins over the others if a body carries several.
      if (peek.prompt_field == PromptField::None || f == PromptField::Messages) {
        peek.prompt_field = f;
        peek.prompt = spanOf(body, raw);
      }
    }
  }
  // After the root object, a readable location means bytes follow it.
  const char* trailing = nullptr;
  if (doc.current_location().get(trailing) == simdjson::SUCCESS) {
    return invalid("request body has trailing data after the JSON object");
  }
  if (!peek.model_token.valid()) {
    return invalid("you must provide a model parameter");
  }
  if (peek.model.empty()) {
    return invalid("'model' must not be empty");
  }
  return peek;
}

}  // namespace sluice::openai
