#pragma once

// A protobuf wire-format writer for the OTLP messages Sluice sends: workers encode their spans
// straight into OTLP `Span` bytes (no message objects, no allocation beyond the reused buffer),
// and the exporter wraps them in the request envelope without decoding them again. Field
// numbers are those of proto/ (OpenTelemetry's); unit tests decode the output with libprotobuf.
//
// The writer appends to a std::string through a cursor: the string is grown ahead in large
// steps and trimmed to what was written by finish() (or the destructor), so a field costs a
// bounds check and a few stores, not a string append per tag and per length. The string is
// not to be read while its writer is open.

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace sluice::tracing {

class WireWriter {
 public:
  explicit WireWriter(std::string& out) : out_(out), pos_(out.size()) {}
  // Writes from the start of `arena`, whose bytes are all room: it keeps its size (so the next
  // use grows nothing) and the bytes written are data()[0, size()).
  struct Arena {};
  WireWriter(std::string& arena, Arena) : out_(arena), pos_(0), trim_(false) {}
  ~WireWriter() {
    if (trim_) {
      finish();
    }
  }
  WireWriter(const WireWriter&) = delete;
  WireWriter& operator=(const WireWriter&) = delete;

  // Trims the string to the bytes written; returns its size. The writer may go on writing.
  size_t finish() {
    out_.resize(pos_);
    return pos_;
  }
  size_t size() const { return pos_; }
  const char* data() const { return out_.data(); }
  // `n` bytes the caller fills later through at(): their offset.
  size_t reserveRaw(size_t n) {
    room(n);
    pos_ += n;
    return pos_ - n;
  }
  char* at(size_t offset) { return out_.data() + offset; }

  void varintField(uint32_t field, uint64_t v);
  void fixed32Field(uint32_t field, uint32_t v);
  void fixed64Field(uint32_t field, uint64_t v);
  void bytesField(uint32_t field, std::string_view v);
  // The tag and length of a length-delimited field whose `length` bytes the caller sends
  // separately.
  void lengthPrefix(uint32_t field, size_t length);
  // A length-delimited submessage: begin() returns a mark, end(mark) writes its length (the
  // body is moved down over the unused part of the length's room: canonical varints).
  size_t begin(uint32_t field);
  void end(size_t mark);

  // Span.attributes (field 9): a KeyValue with a string or an integer AnyValue, written with
  // its lengths computed ahead (no submessage marks).
  void attribute(std::string_view key, std::string_view value);
  void attribute(std::string_view key, int64_t value);

  static void appendVarint(std::string& out, uint64_t v);
  static size_t varintSize(uint64_t v) {
    size_t n = 1;
    while (v >= 0x80) {
      v >>= 7;
      ++n;
    }
    return n;
  }

 private:
  // Room for `n` more bytes at the cursor.
  char* room(size_t n) {
    if (out_.size() - pos_ < n) {
      grow(n);
    }
    return out_.data() + pos_;
  }
  void grow(size_t n);
  static char* putVarint(char* p, uint64_t v) {
    while (v >= 0x80) {
      *p++ = static_cast<char>((v & 0x7f) | 0x80);
      v >>= 7;
    }
    *p++ = static_cast<char>(v);
    return p;
  }
  static char* putTag(char* p, uint32_t field, uint32_t wire_type) {
    return putVarint(p, (static_cast<uint64_t>(field) << 3) | wire_type);
  }
  static char* putBytes(char* p, std::string_view v) {
    std::memcpy(p, v.data(), v.size());
    return p + v.size();
  }
  void advance(const char* p) { pos_ = static_cast<size_t>(p - out_.data()); }

  std::string& out_;
  size_t pos_;  // the cursor; out_ may hold unwritten room past it until finish()
  bool trim_ = true;
};

// OTLP field numbers used by the encoder and the exporter.
namespace otlp_field {
// ExportTraceServiceRequest / ResourceSpans / ScopeSpans
constexpr uint32_t kResourceSpans = 1, kResource = 1, kScopeSpans = 2, kScope = 1, kSpans = 2;
// Span
constexpr uint32_t kTraceId = 1, kSpanId = 2, kTraceState = 3, kParentSpanId = 4, kName = 5,
                   kKind = 6, kStart = 7, kEnd = 8, kAttributes = 9, kStatus = 15, kFlags = 16;
// Status, KeyValue, AnyValue
constexpr uint32_t kStatusMessage = 2, kStatusCode = 3, kKey = 1, kValue = 2, kStringValue = 1,
                   kIntValue = 3;
}  // namespace otlp_field

}  // namespace sluice::tracing
