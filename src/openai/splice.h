#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "openai/peek.h"

namespace sluice::openai {

// Edits to a raw request body, applied in one pass without re-serialising the JSON. The edited
// body is either materialised or handed to the writer as a list of pieces (zero copy): pieces
// point into the original body and into the edits' replacement strings.
class BodyEdits {
 public:
  // Replaces `model`'s string token with `new_model` (JSON-escaped here).
  void rewriteModel(const RequestPeek& peek, std::string_view new_model);
  // Makes `stream_options.include_usage` true. Returns true if the body changed, i.e. the client
  // did not ask for usage itself and the router must hide the usage chunk from it.
  bool requestUsage(const RequestPeek& peek);

  bool empty() const { return edits_.empty(); }
  size_t editedSize(size_t original_size) const;
  // Appends the edited body's pieces in order. Empty pieces are skipped.
  void pieces(std::string_view body, std::vector<std::string_view>& out) const;
  std::string apply(std::string_view body) const;

 private:
  struct Edit {
    size_t offset;
    size_t length;  // bytes of the original replaced (0 = pure insertion)
    std::string text;
  };
  void add(size_t offset, size_t length, std::string text);
  std::vector<Edit> edits_;  // sorted by offset, non-overlapping
};

}  // namespace sluice::openai
