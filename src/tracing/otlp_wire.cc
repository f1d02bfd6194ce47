#include "tracing/otlp_wire.h"

#include <cstring>

namespace sluice::tracing {

namespace {

constexpr uint32_t kVarint = 0, kFixed64 = 1, kLen = 2, kFixed32 = 5;
constexpr size_t kLengthRoom = 5;  // a length below 2^35

size_t varintSize(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

// Fixed-width fields are little-endian on the wire, whatever the host.
void appendLittleEndian(std::string& out, uint64_t v, size_t bytes) {
  char b[8];
  for (size_t i = 0; i < bytes; ++i) {
    b[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  }
  out.append(b, bytes);
}

}  // namespace

void WireWriter::appendVarint(std::string& out, uint64_t v) {
  char b[10];
  size_t n = 0;
  while (v >= 0x80) {
    b[n++] = static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  b[n++] = static_cast<char>(v);
  out.append(b, n);
}

void WireWriter::varintField(uint32_t field, uint64_t v) {
  tag(field, kVarint);
  appendVarint(out_, v);
}

void WireWriter::fixed32Field(uint32_t field, uint32_t v) {
  tag(field, kFixed32);
  appendLittleEndian(out_, v, 4);
}

void WireWriter::fixed64Field(uint32_t field, uint64_t v) {
  tag(field, kFixed64);
  appendLittleEndian(out_, v, 8);
}

void WireWriter::bytesField(uint32_t field, std::string_view v) {
  tag(field, kLen);
  appendVarint(out_, v.size());
  out_.append(v);
}

size_t WireWriter::begin(uint32_t field) {
  tag(field, kLen);
  const size_t mark = out_.size();
  out_.append(kLengthRoom, '\0');
  return mark;
}

void WireWriter::end(size_t mark) {
  const size_t body = out_.size() - mark - kLengthRoom;
  const size_t len = varintSize(body);
  char* at = out_.data() + mark;
  for (uint64_t v = body, i = 0; i < len; ++i, v >>= 7) {
    at[i] = static_cast<char>((v & 0x7f) | (i + 1 < len ? 0x80 : 0));
  }
  if (len < kLengthRoom) {
    std::memmove(at + len, at + kLengthRoom, body);
    out_.resize(out_.size() - (kLengthRoom - len));
  }
}

void WireWriter::attribute(std::string_view key, std::string_view value) {
  const size_t kv = begin(otlp_field::kAttributes);
  bytesField(otlp_field::kKey, key);
  const size_t any = begin(otlp_field::kValue);
  bytesField(otlp_field::kStringValue, value);
  end(any);
  end(kv);
}

void WireWriter::attribute(std::string_view key, int64_t value) {
  const size_t kv = begin(otlp_field::kAttributes);
  bytesField(otlp_field::kKey, key);
  const size_t any = begin(otlp_field::kValue);
  varintField(otlp_field::kIntValue, static_cast<uint64_t>(value));
  end(any);
  end(kv);
}

}  // namespace sluice::tracing
