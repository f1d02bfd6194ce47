#include "tracing/otlp_wire.h"

#include <algorithm>
#include <bit>

namespace sluice::tracing {

namespace {

constexpr uint32_t kVarint = 0, kFixed64 = 1, kLen = 2, kFixed32 = 5;
constexpr size_t kLengthRoom = 5;  // a length below 2^35
constexpr size_t kTagRoom = 5;     // a field number below 2^29
constexpr size_t kMinGrowth = 1024;

// Fixed-width fields are little-endian on the wire, whatever the host.
char* putLittleEndian(char* p, uint64_t v, size_t bytes) {
  if constexpr (std::endian::native == std::endian::little) {
    std::memcpy(p, &v, bytes);
    return p + bytes;
  }
  for (size_t i = 0; i < bytes; ++i) {
    *p++ = static_cast<char>((v >> (8 * i)) & 0xff);
  }
  return p;
}

}  // namespace

void WireWriter::grow(size_t n) {
  // To the string's capacity first (no allocation), then doubling.
  const size_t want = std::max({pos_ + n, out_.capacity(), 2 * out_.size(), pos_ + kMinGrowth});
  out_.resize(want);
}

void WireWriter::appendVarint(std::string& out, uint64_t v) {
  char b[10];
  out.append(b, static_cast<size_t>(putVarint(b, v) - b));
}

void WireWriter::varintField(uint32_t field, uint64_t v) {
  char* p = room(kTagRoom + 10);
  advance(putVarint(putTag(p, field, kVarint), v));
}

void WireWriter::fixed32Field(uint32_t field, uint32_t v) {
  char* p = room(kTagRoom + 4);
  advance(putLittleEndian(putTag(p, field, kFixed32), v, 4));
}

void WireWriter::fixed64Field(uint32_t field, uint64_t v) {
  char* p = room(kTagRoom + 8);
  advance(putLittleEndian(putTag(p, field, kFixed64), v, 8));
}

void WireWriter::bytesField(uint32_t field, std::string_view v) {
  char* p = room(kTagRoom + kLengthRoom + v.size());
  advance(putBytes(putVarint(putTag(p, field, kLen), v.size()), v));
}

void WireWriter::lengthPrefix(uint32_t field, size_t length) {
  char* p = room(kTagRoom + 10);
  advance(putVarint(putTag(p, field, kLen), length));
}

size_t WireWriter::begin(uint32_t field) {
  char* p = putTag(room(kTagRoom + kLengthRoom), field, kLen);
  advance(p + kLengthRoom);
  return pos_ - kLengthRoom;
}

void WireWriter::end(size_t mark) {
  const size_t body = pos_ - mark - kLengthRoom;
  char* at = out_.data() + mark;
  char* after = putVarint(at, body);
  const auto len = static_cast<size_t>(after - at);
  if (len < kLengthRoom) {
    std::memmove(after, at + kLengthRoom, body);
    pos_ -= kLengthRoom - len;
  }
}

void WireWriter::attribute(std::string_view key, std::string_view value) {
  // KeyValue { key = 1; value = 2 (AnyValue { string_value = 1 }) }, all lengths known here.
  const size_t any = 1 + varintSize(value.size()) + value.size();
  const size_t kv = 1 + varintSize(key.size()) + key.size() + 1 + varintSize(any) + any;
  char* p = room(kTagRoom + kLengthRoom + kv);
  p = putVarint(putTag(p, otlp_field::kAttributes, kLen), kv);
  p = putBytes(putVarint(putTag(p, otlp_field::kKey, kLen), key.size()), key);
  p = putVarint(putTag(p, otlp_field::kValue, kLen), any);
  advance(putBytes(putVarint(putTag(p, otlp_field::kStringValue, kLen), value.size()), value));
}

void WireWriter::attribute(std::string_view key, int64_t value) {
  const auto v = static_cast<uint64_t>(value);
  const size_t any = 1 + varintSize(v);
  const size_t kv = 1 + varintSize(key.size()) + key.size() + 1 + varintSize(any) + any;
  char* p = room(kTagRoom + kLengthRoom + kv);
  p = putVarint(putTag(p, otlp_field::kAttributes, kLen), kv);
  p = putBytes(putVarint(putTag(p, otlp_field::kKey, kLen), key.size()), key);
  p = putVarint(putTag(p, otlp_field::kValue, kLen), any);
  advance(putVarint(putTag(p, otlp_field::kIntValue, kVarint), v));
}

}  // namespace sluice::tracing
