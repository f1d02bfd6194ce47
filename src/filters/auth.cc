#include "filters/auth.h"

#include <fmt/core.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/sha.h>
#include <simdjson.h>

#include "base/strings.h"

namespace sluice::filters {

namespace {

constexpr size_t kMaxTokenBytes = 16 * 1024;

std::optional<std::string> base64UrlDecode(std::string_view in) {
  return base::base64Decode(in, false);
}

struct PkeyDeleter {
  void operator()(void* p) const { EVP_PKEY_free(static_cast<EVP_PKEY*>(p)); }
};

// A public key of `type` ("RSA", "EC") from the parameters `push` adds to a builder.
template <class Push>
std::shared_ptr<void> publicKey(const char* type, Push push) {
  OSSL_PARAM_BLD* bld = OSSL_PARAM_BLD_new();
  push(bld);
  OSSL_PARAM* params = OSSL_PARAM_BLD_to_param(bld);
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr);
  EVP_PKEY* pkey = nullptr;
  if (ctx != nullptr && params != nullptr && EVP_PKEY_fromdata_init(ctx) == 1) {
    EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params);
  }
  EVP_PKEY_CTX_free(ctx);
  OSSL_PARAM_free(params);
  OSSL_PARAM_BLD_free(bld);
  if (pkey == nullptr)
    return nullptr;
  return std::shared_ptr<void>(pkey, PkeyDeleter{});
}

std::shared_ptr<void> rsaKey(const std::string& n, const std::string& e) {
  BIGNUM* bn_n = BN_bin2bn(reinterpret_cast<const unsigned char*>(n.data()),
                           static_cast<int>(n.size()), nullptr);
  BIGNUM* bn_e = BN_bin2bn(reinterpret_cast<const unsigned char*>(e.data()),
                           static_cast<int>(e.size()), nullptr);
  auto key = publicKey("RSA", [&](OSSL_PARAM_BLD* bld) {
    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n);
    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e);
  });
  BN_free(bn_n);
  BN_free(bn_e);
  return key;
}

std::shared_ptr<void> ecKey(const std::string& x, const std::string& y) {
  if (x.size() != 32 || y.size() != 32)
    return nullptr;
  std::string point = "\x04" + x + y;
  return publicKey("EC", [&](OSSL_PARAM_BLD* bld) {
    OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0);
    OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size());
  });
}

bool verifyDigest(EVP_PKEY* pkey, std::string_view signed_part, const std::string& der_sig) {
  EVP_MD_CTX* md = EVP_MD_CTX_new();
  bool ok =
      EVP_DigestVerifyInit(md, nullptr, EVP_sha256(), nullptr, pkey) == 1 &&
      EVP_DigestVerify(md, reinterpret_cast<const unsigned char*>(der_sig.data()), der_sig.size(),
                       reinterpret_cast<const unsigned char*>(signed_part.data()),
                       signed_part.size()) == 1;
  EVP_MD_CTX_free(md);
  return ok;
}

// ES256 signatures are r||s (32 bytes each); OpenSSL wants DER.
std::optional<std::string> ecdsaToDer(const std::string& raw) {
  if (raw.size() != 64)
    return std::nullopt;
  ECDSA_SIG* sig = ECDSA_SIG_new();
  BIGNUM* r = BN_bin2bn(reinterpret_cast<const unsigned char*>(raw.data()), 32, nullptr);
  BIGNUM* s = BN_bin2bn(reinterpret_cast<const unsigned char*>(raw.data() + 32), 32, nullptr);
  ECDSA_SIG_set0(sig, r, s);
  unsigned char* der = nullptr;
  int len = i2d_ECDSA_SIG(sig, &der);
  std::optional<std::string> out;
  if (len > 0)
    out = std::string(reinterpret_cast<char*>(der), static_cast<size_t>(len));
  OPENSSL_free(der);
  ECDSA_SIG_free(sig);
  return out;
}

bool verifyHmac(const std::string& secret, std::string_view signed_part, const std::string& sig) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
           reinterpret_cast<const unsigned char*>(signed_part.data()), signed_part.size(), mac,
           &len) == nullptr) {
    return false;
  }
  return sig.size() == len && CRYPTO_memcmp(mac, sig.data(), len) == 0;
}

// A JSON string or number field; false when absent or of another type.
bool stringField(simdjson::dom::object obj, std::string_view key, std::string& out) {
  std::string_view v;
  if (obj[key].get_string().get(v) != simdjson::SUCCESS)
    return false;
  out.assign(v);
  return true;
}

bool numberField(simdjson::dom::object obj, std::string_view key, int64_t& out) {
  auto el = obj[key];
  if (el.error() != simdjson::SUCCESS)
    return false;
  int64_t i;
  if (el.get_int64().get(i) == simdjson::SUCCESS) {
    out = i;
    return true;
  }
  double d;
  if (el.get_double().get(d) == simdjson::SUCCESS && d > -9e15 && d < 9e15) {
    out = static_cast<int64_t>(d);
    return true;
  }
  return false;
}

}  // namespace

Sha256 sha256(std::string_view data) {
  // The digest is fetched once and a context kept per thread: OpenSSL 3's one-shot SHA256()
  // looks the algorithm up on every call.
  static EVP_MD* md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  thread_local std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(),
                                                                      EVP_MD_CTX_free);
  Sha256 out{};
  unsigned int len = 0;
  EVP_DigestInit_ex(ctx.get(), md, nullptr);
  EVP_DigestUpdate(ctx.get(), data.data(), data.size());
  EVP_DigestFinal_ex(ctx.get(), out.data(), &len);
  return out;
}

std::string toHex(const uint8_t* data, size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(n * 2, '0');
  for (size_t i = 0; i < n; ++i) {
    out[2 * i] = kDigits[data[i] >> 4];
    out[2 * i + 1] = kDigits[data[i] & 15];
  }
  return out;
}

bool parseSha256Hex(std::string_view hex, Sha256& out) {
  if (hex.size() != 64)
    return false;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9')
      return c - '0';
    if (c >= 'a' && c <= 'f')
      return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
      return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < 32; ++i) {
    int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return false;
    out[i] = static_cast<uint8_t>(hi * 16 + lo);
  }
  return true;
}

std::string identityTag(std::string_view id) {
  if (id.empty())
    return "";
  auto h = sha256(id);
  return toHex(h.data(), 6);
}

void ApiKeyStore::add(ApiKeyEntry entry) {
  std::string key(reinterpret_cast<const char*>(entry.hash.data()), entry.hash.size());
  if (by_hash_.count(key) > 0)
    return;  // the first definition of a key wins
  by_hash_[key] = entries_.size();
  entries_.push_back(std::move(entry));
}

const ApiKeyEntry* ApiKeyStore::find(std::string_view presented) const {
  // The lookup is by hash (never by the secret itself); the final comparison is constant time.
  auto h = sha256(presented);
  auto it = by_hash_.find(std::string(reinterpret_cast<const char*>(h.data()), h.size()));
  if (it == by_hash_.end())
    return nullptr;
  const auto& e = entries_[it->second];
  return CRYPTO_memcmp(e.hash.data(), h.data(), h.size()) == 0 ? &e : nullptr;
}

void JwtKeys::addHmac(std::string secret, std::string kid) {
  Jwk k;
  k.type = Jwk::Type::Oct;
  k.kid = std::move(kid);
  k.alg = "HS256";
  k.secret = std::move(secret);
  keys_.push_back(std::move(k));
}

base::Result<JwtKeys> JwtKeys::fromJwks(std::string_view json) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (parser.parse(json.data(), json.size()).get(doc) != simdjson::SUCCESS) {
    return base::Error{"JWKS: not valid JSON"};
  }
  simdjson::dom::array keys;
  if (doc["keys"].get_array().get(keys) != simdjson::SUCCESS) {
    return base::Error{"JWKS: \"keys\" must be an array"};
  }
  JwtKeys out;
  size_t index = 0;
  for (simdjson::dom::element el : keys) {
    simdjson::dom::object o;
    if (el.get_object().get(o) != simdjson::SUCCESS) {
      return base::Error{fmt::format("JWKS: keys[{}] must be an object", index)};
    }
    Jwk k;
    std::string kty, use;
    stringField(o, "kid", k.kid);
    stringField(o, "alg", k.alg);
    stringField(o, "kty", kty);
    if (stringField(o, "use", use) && use != "sig") {
      ++index;
      continue;  // an encryption key
    }
    auto field = [&](std::string_view name) -> std::optional<std::string> {
      std::string v;
      if (!stringField(o, name, v))
        return std::nullopt;
      return base64UrlDecode(v);
    };
    if (kty == "RSA") {
      auto n = field("n"), e = field("e");
      if (!n || !e)
        return base::Error{fmt::format("JWKS: keys[{}]: bad n or e", index)};
      k.type = Jwk::Type::Rsa;
      k.pkey = rsaKey(*n, *e);
    } else if (kty == "EC") {
      std::string crv;
      stringField(o, "crv", crv);
      if (crv != "P-256") {
        ++index;
        continue;  // only ES256 is supported
      }
      auto x = field("x"), y = field("y");
      if (!x || !y)
        return base::Error{fmt::format("JWKS: keys[{}]: bad x or y", index)};
      k.type = Jwk::Type::Ec;
      k.pkey = ecKey(*x, *y);
    } else if (kty == "oct") {
      auto secret = field("k");
      if (!secret || secret->empty()) {
        return base::Error{fmt::format("JWKS: keys[{}]: bad k", index)};
      }
      k.type = Jwk::Type::Oct;
      k.secret = std::move(*secret);
    } else {
      ++index;
      continue;
    }
    if (k.type != Jwk::Type::Oct && !k.pkey) {
      return base::Error{fmt::format("JWKS: keys[{}]: OpenSSL refused the key", index)};
    }
    out.keys_.push_back(std::move(k));
    ++index;
  }
  return out;
}

bool looksLikeJwt(std::string_view c) {
  size_t first = c.find('.');
  return first != std::string_view::npos && c.find('.', first + 1) != std::string_view::npos &&
         c.size() > 10;
}

base::Result<Identity> verifyJwt(std::string_view token, const JwtKeys& keys,
                                 const JwtPolicy& policy, int64_t now) {
  if (token.size() > kMaxTokenBytes)
    return base::Error{"token too large"};
  size_t d1 = token.find('.');
  size_t d2 = d1 == std::string_view::npos ? d1 : token.find('.', d1 + 1);
  if (d2 == std::string_view::npos || token.find('.', d2 + 1) != std::string_view::npos) {
    return base::Error{"malformed token"};
  }
  auto header = base64UrlDecode(token.substr(0, d1));
  auto payload = base64UrlDecode(token.substr(d1 + 1, d2 - d1 - 1));
  auto sig = base64UrlDecode(token.substr(d2 + 1));
  if (!header || !payload || !sig)
    return base::Error{"malformed token encoding"};

  thread_local simdjson::dom::parser parser;
  simdjson::dom::object h;
  if (parser.parse(*header).get_object().get(h) != simdjson::SUCCESS) {
    return base::Error{"malformed token header"};
  }
  std::string alg, kid;
  stringField(h, "alg", alg);
  stringField(h, "kid", kid);
  if (alg != "RS256" && alg != "ES256" && alg != "HS256") {
    return base::Error{alg.empty() || alg == "none" ? "unsigned tokens are refused"
                                                    : "unsupported token algorithm"};
  }
  // The key's type is fixed by the algorithm: an RSA or EC public key is never used as an HMAC
  // secret, whatever the header says (algorithm confusion).
  const Jwk::Type want = alg == "RS256"   ? Jwk::Type::Rsa
                         : alg == "ES256" ? Jwk::Type::Ec
                                          : Jwk::Type::Oct;
  const std::string_view signed_part = token.substr(0, d2);
  bool verified = false, candidate = false;
  for (const auto& k : keys.keys()) {
    if (k.type != want || (!k.alg.empty() && k.alg != alg))
      continue;
    if (!kid.empty() && !k.kid.empty() && k.kid != kid)
      continue;
    candidate = true;
    if (want == Jwk::Type::Oct) {
      verified = verifyHmac(k.secret, signed_part, *sig);
    } else if (want == Jwk::Type::Rsa) {
      verified = verifyDigest(static_cast<EVP_PKEY*>(k.pkey.get()), signed_part, *sig);
    } else {
      auto der = ecdsaToDer(*sig);
      verified = der && verifyDigest(static_cast<EVP_PKEY*>(k.pkey.get()), signed_part, *der);
    }
    if (verified)
      break;
  }
  if (!candidate)
    return base::Error{"no key matches the token"};
  if (!verified)
    return base::Error{"bad token signature"};

  simdjson::dom::object p;
  if (parser.parse(*payload).get_object().get(p) != simdjson::SUCCESS) {
    return base::Error{"malformed token claims"};
  }
  const int64_t leeway = policy.leeway.count();
  int64_t exp = 0, nbf = 0, iat = 0;
  if (!numberField(p, "exp", exp))
    return base::Error{"token has no exp"};
  if (now >= exp + leeway)
    return base::Error{"token expired"};
  if (p["nbf"].error() == simdjson::SUCCESS) {
    if (!numberField(p, "nbf", nbf))
      return base::Error{"bad nbf"};
    if (now + leeway < nbf)
      return base::Error{"token not valid yet"};
  }
  if (p["iat"].error() == simdjson::SUCCESS) {
    if (!numberField(p, "iat", iat))
      return base::Error{"bad iat"};
    if (iat > now + leeway)
      return base::Error{"token issued in the future"};
  }
  if (!policy.issuer.empty()) {
    std::string iss;
    if (!stringField(p, "iss", iss) || iss != policy.issuer)
      return base::Error{"wrong issuer"};
  }
  if (!policy.audiences.empty()) {
    bool ok = false;
    std::vector<std::string> auds;
    std::string one;
    simdjson::dom::array arr;
    if (stringField(p, "aud", one)) {
      auds.push_back(one);
    } else if (p["aud"].get_array().get(arr) == simdjson::SUCCESS) {
      for (simdjson::dom::element a : arr) {
        std::string_view s;
        if (a.get_string().get(s) == simdjson::SUCCESS)
          auds.emplace_back(s);
      }
    }
    for (const auto& a : auds) {
      for (const auto& want_aud : policy.audiences)
        ok = ok || a == want_aud;
    }
    if (!ok)
      return base::Error{"wrong audience"};
  }
  Identity id;
  id.method = "jwt";
  if (!stringField(p, policy.identity_claim, id.id) || id.id.empty()) {
    return base::Error{fmt::format("token has no {} claim", policy.identity_claim)};
  }
  if (!policy.tenant_claim.empty())
    stringField(p, policy.tenant_claim, id.tenant);
  return id;
}

}  // namespace sluice::filters
