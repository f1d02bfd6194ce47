#pragma once

// Authentication: API keys (stored as SHA-256 hashes, compared in constant time) and JWTs
// (RS256, ES256, HS256 through OpenSSL) against a key set, with issuer, audience and time
// checks. Pure functions over bytes: no I/O here, nothing is logged, and no secret is kept in
// clear text.

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/result.h"

namespace sluice::filters {

struct Identity {
  std::string id;      // user or key name; "" = anonymous
  std::string tenant;  // optional
  std::string method;  // "api-key" | "jwt" | ""
  std::string tag;     // identityTag(id), for logs
};

using Sha256 = std::array<uint8_t, 32>;
Sha256 sha256(std::string_view data);
std::string toHex(const uint8_t* data, size_t n);
bool parseSha256Hex(std::string_view hex, Sha256& out);
// A short, non-reversible tag for logs: the first 12 hex digits of SHA-256(id).
std::string identityTag(std::string_view id);

struct ApiKeyEntry {
  Sha256 hash{};
  Identity identity;
  std::vector<std::string> models;  // allowed; empty = every model
  size_t limits = SIZE_MAX;         // index into the chain's key limits, if any
  std::string limit_prefix;         // bucket key prefix for its limits
  std::string limit_name;           // "key <id>", in refusals
};

class ApiKeyStore {
 public:
  void add(ApiKeyEntry entry);
  // The entry whose key hashes to SHA-256(presented), compared in constant time.
  const ApiKeyEntry* find(std::string_view presented) const;
  size_t size() const { return entries_.size(); }

 private:
  std::vector<ApiKeyEntry> entries_;
  std::unordered_map<std::string, size_t> by_hash_;  // 32 raw bytes -> entry
};

// One verification key from a JWKS.
struct Jwk {
  enum class Type { Rsa, Ec, Oct };
  Type type = Type::Rsa;
  std::string kid;
  std::string alg;             // optional in the JWKS; when set, the token's alg must equal it
  std::shared_ptr<void> pkey;  // EVP_PKEY for RSA and EC
  std::string secret;          // oct (HS256)
};

class JwtKeys {
 public:
  // A JWKS document ({"keys":[...]}); keys of other types or curves are skipped.
  static base::Result<JwtKeys> fromJwks(std::string_view json);
  void add(Jwk key) { keys_.push_back(std::move(key)); }
  // HS256 from a shared secret (its bytes, not base64).
  void addHmac(std::string secret, std::string kid = "");
  const std::vector<Jwk>& keys() const { return keys_; }

 private:
  std::vector<Jwk> keys_;
};

struct JwtPolicy {
  std::string issuer;                  // "" = not checked
  std::vector<std::string> audiences;  // empty = not checked; else aud must contain one
  std::string identity_claim = "sub";
  std::string tenant_claim;         // "" = none
  std::chrono::seconds leeway{60};  // clock skew allowed on exp, nbf and iat
};

// Verifies a compact JWS. `now` is unix seconds. The error says what failed, never echoing
// the token.
base::Result<Identity> verifyJwt(std::string_view token, const JwtKeys& keys,
                                 const JwtPolicy& policy, int64_t now);

bool looksLikeJwt(std::string_view credential);

}  // namespace sluice::filters
