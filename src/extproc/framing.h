#pragma once

// gRPC's length-prefixed message framing over HTTP/2 DATA (PROTOCOL-HTTP2.md): a 1-byte
// compressed flag, a 4-byte big-endian length, then the message. Messages are read whole, up
// to a bound; compressed messages are refused (we never advertise an encoding).

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace google::protobuf {
class MessageLite;
}  // namespace google::protobuf

namespace sluice::extproc {

// Appends `m` as one framed message.
void appendFrame(std::string& out, const google::protobuf::MessageLite& m);

class Deframer {
 public:
  explicit Deframer(size_t max_message) : max_message_(max_message) {}
  enum class Next { kMessage, kNeedMore, kError };
  void feed(std::string_view bytes);
  // The next whole message into `message` (valid until the next feed or next call), or what is
  // wrong with the stream in `error`.
  Next next(std::string_view& message, std::string& error);
  // Bytes of a message begun but not finished.
  size_t pending() const { return buf_.size() - off_; }

 private:
  size_t max_message_;
  std::string buf_;
  size_t off_ = 0;
};

}  // namespace sluice::extproc
