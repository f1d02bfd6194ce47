#include "openai/prompt_render.h"

#include <simdjson.h>

namespace sluice::openai {
namespace {

namespace od = simdjson::ondemand;

constexpr char kMessage = '\x1e';  // record separator: a new message
constexpr char kField = '\x1f';    // unit separator: a new field inside a message

bool appendRaw(od::value v, std::string& out) {
  od::json_type type;
  if (v.type().get(type)) {
    return false;
  }
  std::string_view raw;
  if (type == od::json_type::array) {
    od::array a;
    if (v.get_array().get(a) || a.raw_json().get(raw)) {
      return false;
    }
  } else if (type == od::json_type::object) {
    od::object o;
    if (v.get_object().get(o) || o.raw_json().get(raw)) {
      return false;
    }
  } else {
    raw = v.raw_json_token();
  }
  out.append(raw);
  return true;
}

// A content value: a string, or an array of parts whose text is kept and whose other parts
// (images, audio) keep their raw JSON.
bool appendContent(od::value v, std::string& out) {
  std::string_view text;
  if (v.get_string().get(text) == simdjson::SUCCESS) {
    out.append(text);
    return true;
  }
  od::array parts;
  if (v.get_array().get(parts)) {
    return appendRaw(v, out);
  }
  for (auto part_result : parts) {
    od::object part;
    if (std::move(part_result).get_object().get(part)) {
      return false;
    }
    std::string_view t;
    bool had_text = false;
    for (auto f_result : part) {
      od::field f;
      std::string_view key;
      if (std::move(f_result).get(f) || f.unescaped_key().get(key)) {
        return false;
      }
      if (key == "text" && f.value().get_string().get(t) == simdjson::SUCCESS) {
        out.append(t);
        had_text = true;
      } else if (key != "type" && !had_text) {
        out += kField;
        if (!appendRaw(f.value(), out)) {
          return false;
        }
      }
    }
  }
  return true;
}

bool renderMessages(od::array messages, std::string& out) {
  for (auto m_result : messages) {
    od::object m;
    if (std::move(m_result).get_object().get(m)) {
      return false;
    }
    std::string_view role, name, tool_call_id;
    std::string content, tool_calls;
    for (auto f_result : m) {
      od::field f;
      std::string_view key;
      if (std::move(f_result).get(f) || f.unescaped_key().get(key)) {
        return false;
      }
      if (key == "role") {
        if (f.value().get_string().get(role)) {
          return false;
        }
      } else if (key == "name") {
        if (f.value().get_string().get(name)) {
          name = {};  // not a string: left out of the key
        }
      } else if (key == "tool_call_id") {
        if (f.value().get_string().get(tool_call_id)) {
          tool_call_id = {};
        }
      } else if (key == "content") {
        if (!appendContent(f.value(), content)) {
          return false;
        }
      } else if (key == "tool_calls") {
        if (!appendRaw(f.value(), tool_calls)) {
          return false;
        }
      }
    }
    // A fixed field order, whatever order the client wrote them in.
    out += kMessage;
    out.append(role);
    out += kField;
    out.append(name);
    out += kField;
    out.append(tool_call_id);
    out += kField;
    out += content;
    out += kField;
    out += tool_calls;
  }
  return true;
}

}  // namespace

void renderPrompt(const RequestPeek& peek, std::string_view body, size_t capacity,
                  std::string& out) {
  out.clear();
  if (peek.tools.valid()) {
    out.append(body.substr(peek.tools.offset, peek.tools.length));
    out += kMessage;
  }
  if (!peek.prompt.valid()) {
    return;
  }
  const std::string_view raw = body.substr(peek.prompt.offset, peek.prompt.length);
  thread_local od::parser parser;
  od::document doc;
  // The prompt's span lies inside the padded body, so it can be parsed in place.
  const size_t room = capacity - peek.prompt.offset;
  bool ok = parser.iterate(simdjson::padded_string_view(raw.data(), raw.size(), room)).get(doc) ==
            simdjson::SUCCESS;
  if (ok && peek.prompt_field == PromptField::Messages) {
    od::array messages;
    const size_t mark = out.size();
    ok = doc.get_array().get(messages) == simdjson::SUCCESS && renderMessages(messages, out);
    if (!ok) {
      out.resize(mark);
    }
  } else if (ok) {
    std::string_view text;
    ok = doc.get_string().get(text) == simdjson::SUCCESS;
    if (ok) {
      out.append(text);
    }
  }
  if (!ok) {
    out.append(raw);  // not the shape expected: the raw JSON is still a stable key
  }
}

}  // namespace sluice::openai
