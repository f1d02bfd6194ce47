// JWT and JWKS parsing: any bytes are refused with a reason or verified, never a crash.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "filters/auth.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sluice::filters;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  static const JwtKeys kKeys = [] {
    JwtKeys k;
    k.addHmac("fuzz-secret");
    return k;
  }();
  JwtPolicy policy;
  policy.issuer = "iss";
  policy.audiences = {"aud"};
  auto r = verifyJwt(text, kKeys, policy, 1'800'000'000);
  if (!r && r.error().message.empty()) {
    std::abort();
  }
  auto jwks = JwtKeys::fromJwks(text);
  if (!jwks && jwks.error().message.empty()) {
    std::abort();
  }
  (void)looksLikeJwt(text);
  return 0;
}
