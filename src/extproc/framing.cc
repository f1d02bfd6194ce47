#include "extproc/framing.h"

#include <google/protobuf/message_lite.h>

#include <fmt/format.h>

namespace sluice::extproc {

void appendFrame(std::string& out, const google::protobuf::MessageLite& m) {
  const size_t n = m.ByteSizeLong();
  const size_t at = out.size();
  out.resize(at + 5 + n);
  auto* p = reinterpret_cast<uint8_t*>(out.data() + at);
  p[0] = 0;  // not compressed
  p[1] = static_cast<uint8_t>(n >> 24);
  p[2] = static_cast<uint8_t>(n >> 16);
  p[3] = static_cast<uint8_t>(n >> 8);
  p[4] = static_cast<uint8_t>(n);
  m.SerializeWithCachedSizesToArray(p + 5);
}

void Deframer::feed(std::string_view bytes) {
  if (off_ > 0 && off_ == buf_.size()) {
    buf_.clear();
    off_ = 0;
  } else if (off_ > 64 * 1024 && off_ > buf_.size() / 2) {
    buf_.erase(0, off_);
    off_ = 0;
  }
  buf_.append(bytes);
}

Deframer::Next Deframer::next(std::string_view& message, std::string& error) {
  const size_t have = buf_.size() - off_;
  if (have < 5) {
    return Next::kNeedMore;
  }
  const auto* p = reinterpret_cast<const uint8_t*>(buf_.data() + off_);
  if (p[0] != 0) {
    error = p[0] == 1 ? "compressed messages are not accepted (no grpc-encoding is supported)"
                      : fmt::format("invalid message flag {}", p[0]);
    return Next::kError;
  }
  const size_t n = (size_t{p[1]} << 24) | (size_t{p[2]} << 16) | (size_t{p[3]} << 8) | p[4];
  if (n > max_message_) {
    error = fmt::format("a message of {} bytes is over the limit of {}", n, max_message_);
    return Next::kError;
  }
  if (have < 5 + n) {
    return Next::kNeedMore;
  }
  message = std::string_view(buf_.data() + off_ + 5, n);
  off_ += 5 + n;
  return Next::kMessage;
}

}  // namespace sluice::extproc
