#pragma once

// One header for nghttp2's submit calls (the HTTP/2 client and the gRPC server): nghttp2
// copies name and value, so views of temporaries are fine for the duration of the call.

#include <nghttp2/nghttp2.h>

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

}  // namespace sluice::http
