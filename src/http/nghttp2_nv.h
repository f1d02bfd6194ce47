#pragma once

// Shared by nghttp2's users (the HTTP/2 client and the gRPC server). One header for nghttp2's
// submit calls (the HTTP/2 client and the gRPC server): nghttp2 copies name and value, so views of
// temporaries are fine for the duration of the call.

#include <nghttp2/nghttp2.h>
#include <string>
#include <string_view>

namespace sluice::http {

inline nghttp2_nv nghttp2Header(std::string_view name, std::string_view value) {
  nghttp2_nv out;
  out.name = reinterpret_cast<uint8_t*>(const_cast<char*>(name.data()));
  out.namelen = name.size();
  out.value = reinterpret_cast<uint8_t*>(const_cast<char*>(value.data()));
  out.valuelen = value.size();
  out.flags = NGHTTP2_NV_FLAG_NONE;
  return out;
}

// Appends what the session has to send, up to about `max` bytes; false on a session error.
inline bool takeOutput(nghttp2_session* session, std::string& out, size_t max) {
  while (out.size() < max) {
    const uint8_t* data = nullptr;
    const ssize_t n = nghttp2_session_mem_send(session, &data);
    if (n < 0) {
      return false;
    }
    if (n == 0) {
      break;
    }
    out.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
  }
  return true;
}

}  // namespace sluice::http
