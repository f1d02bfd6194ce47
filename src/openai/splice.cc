#include "openai/splice.h"

#include <algorithm>

#include "base/strings.h"

namespace sluice::openai {

void BodyEdits::add(size_t offset, size_t length, std::string text) {
  Edit edit{offset, length, std::move(text)};
  auto it = std::upper_bound(edits_.begin(), edits_.end(), offset,
                             [](size_t off, const Edit& e) { return off < e.offset; });
  edits_.insert(it, std::move(edit));
}

void BodyEdits::rewriteModel(const RequestPeek& peek, std::string_view new_model) {
  add(peek.model_token.offset, peek.model_token.length, base::jsonQuote(new_model));
}

bool BodyEdits::requestUsage(const RequestPeek& peek) {
  if (peek.include_usage.has_value()) {
    if (*peek.include_usage) {
      return false;
    }
    add(peek.include_usage_token.offset, peek.include_usage_token.length, "true");
    return true;
  }
  if (peek.has_stream_options) {
    // Insert right after '{'.
    add(peek.stream_options.offset + 1, 0,
        peek.stream_options_empty ? "\"include_usage\":true" : "\"include_usage\":true,");
    return true;
  }
  // The body has at least "model", so the object is never empty here.
  add(peek.object_close, 0, ",\"stream_options\":{\"include_usage\":true}");
  return true;
}

size_t BodyEdits::editedSize(size_t original_size) const {
  size_t size = original_size;
  for (const auto& e : edits_) {
    size = size - e.length + e.text.size();
  }
  return size;
}

void BodyEdits::pieces(std::string_view body, std::vector<std::string_view>& out) const {
  size_t pos = 0;
  for (const auto& e : edits_) {
    if (e.offset > pos) {
      out.push_back(body.substr(pos, e.offset - pos));
    }
    if (!e.text.empty()) {
      out.push_back(e.text);
    }
    pos = e.offset + e.length;
  }
  if (pos < body.size()) {
    out.push_back(body.substr(pos));
  }
}

std::string BodyEdits::apply(std::string_view body) const {
  std::string out;
  out.reserve(editedSize(body.size()));
  std::vector<std::string_view> parts;
  pieces(body, parts);
  for (auto p : parts) {
    out.append(p);
  }
  return out;
}

}  // namespace sluice::openai
