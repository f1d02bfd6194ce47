// Security and accounting tests for the filters: JWTs (every way a token can be wrong), API
// keys, GCRA buckets, and the chain's reserve-then-reconcile.
#include <gtest/gtest.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rsa.h>

#include "base/strings.h"
#include "filters/auth.h"
#include "filters/filter_chain.h"
#include "filters/flow_control.h"
#include "filters/rate_limit.h"

namespace sluice::filters {
namespace {

std::string b64url(std::string_view in) {
  return base::base64UrlEncode(in);
}

std::string bnB64(const BIGNUM* bn, int size = 0) {
  std::string raw(static_cast<size_t>(size ? size : BN_num_bytes(bn)), '\0');
  if (size) {
    BN_bn2binpad(bn, reinterpret_cast<unsigned char*>(raw.data()), size);
  } else {
    BN_bn2bin(bn, reinterpret_cast<unsigned char*>(raw.data()));
  }
  return b64url(raw);
}

// Keys made once per test run.
struct Keys {
  Keys() {
    rsa = EVP_RSA_gen(2048);
    ec = EVP_EC_gen("P-256");
    BIGNUM *n = nullptr, *e = nullptr, *x = nullptr, *y = nullptr;
    EVP_PKEY_get_bn_param(rsa, "n", &n);
    EVP_PKEY_get_bn_param(rsa, "e", &e);
    EVP_PKEY_get_bn_param(ec, "qx", &x);
    EVP_PKEY_get_bn_param(ec, "qy", &y);
    jwks = R"({"keys":[{"kty":"RSA","kid":"rsa1","use":"sig","n":")" + bnB64(n) + R"(","e":")" +
           bnB64(e) + R"("},{"kty":"EC","kid":"ec1","crv":"P-256","x":")" + bnB64(x, 32) +
           R"(","y":")" + bnB64(y, 32) + R"("}]})";
    BN_free(n);
    BN_free(e);
    BN_free(x);
    BN_free(y);
  }
  ~Keys() {
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ec);
  }
  EVP_PKEY* rsa;
  EVP_PKEY* ec;
  std::string jwks;
};

Keys& keys() {
  static Keys k;
  return k;
}

std::string sign(const std::string& alg, const std::string& header_json,
                 const std::string& claims_json, const std::string& hmac_secret = "") {
  std::string signing = b64url(header_json) + "." + b64url(claims_json);
  std::string sig;
  if (alg == "HS256") {
    unsigned char mac[32];
    unsigned int len = 0;
    HMAC(EVP_sha256(), hmac_secret.data(), static_cast<int>(hmac_secret.size()),
         reinterpret_cast<const unsigned char*>(signing.data()), signing.size(), mac, &len);
    sig.assign(reinterpret_cast<char*>(mac), len);
  } else {
    EVP_PKEY* key = alg == "RS256" ? keys().rsa : keys().ec;
    EVP_MD_CTX* md = EVP_MD_CTX_new();
    size_t len = 0;
    EVP_DigestSignInit(md, nullptr, EVP_sha256(), nullptr, key);
    EVP_DigestSign(md, nullptr, &len, reinterpret_cast<const unsigned char*>(signing.data()),
                   signing.size());
    std::string der(len, '\0');
    EVP_DigestSign(md, reinterpret_cast<unsigned char*>(der.data()), &len,
                   reinterpret_cast<const unsigned char*>(signing.data()), signing.size());
    der.resize(len);
    EVP_MD_CTX_free(md);
    if (alg == "ES256") {
      const unsigned char* p = reinterpret_cast<const unsigned char*>(der.data());
      ECDSA_SIG* s = d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der.size()));
      std::string raw(64, '\0');
      BN_bn2binpad(ECDSA_SIG_get0_r(s), reinterpret_cast<unsigned char*>(raw.data()), 32);
      BN_bn2binpad(ECDSA_SIG_get0_s(s), reinterpret_cast<unsigned char*>(raw.data() + 32), 32);
      ECDSA_SIG_free(s);
      sig = raw;
    } else {
      sig = der;
    }
  }
  return signing + "." + b64url(sig);
}

constexpr int64_t kNow = 1'800'000'000;

std::string claims(int64_t exp = kNow + 600, const std::string& extra = "") {
  return R"({"sub":"alice","iss":"https://issuer.test","aud":["other","sluice"],"exp":)" +
         std::to_string(exp) + R"(,"iat":)" + std::to_string(kNow - 10) + extra + "}";
}

class JwtTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto k = JwtKeys::fromJwks(keys().jwks);
    ASSERT_TRUE(k) << k.error().message;
    set = std::move(*k);
    set.addHmac("shared-secret-of-32-bytes-length!", "hs1");
    policy.issuer = "https://issuer.test";
    policy.audiences = {"sluice"};
  }
  std::string verify(const std::string& token) {
    auto r = verifyJwt(token, set, policy, kNow);
    return r ? "ok:" + r->id : r.error().message;
  }
  JwtKeys set;
  JwtPolicy policy;
};

TEST_F(JwtTest, ValidTokensOfEachAlgorithm) {
  EXPECT_EQ(verify(sign("RS256", R"({"alg":"RS256","kid":"rsa1"})", claims())), "ok:alice");
  EXPECT_EQ(verify(sign("ES256", R"({"alg":"ES256","kid":"ec1"})", claims())), "ok:alice");
  EXPECT_EQ(
      verify(sign("HS256", R"({"alg":"HS256"})", claims(), "shared-secret-of-32-bytes-length!")),
      "ok:alice");
  // No kid: any key of the right type may verify it.
  EXPECT_EQ(verify(sign("RS256", R"({"alg":"RS256"})", claims())), "ok:alice");
}

TEST_F(JwtTest, RefusesEveryBadToken) {
  const std::string h = R"({"alg":"RS256","kid":"rsa1"})";
  EXPECT_EQ(verify(""), "malformed token");
  EXPECT_EQ(verify("abc.def"), "malformed token");
  EXPECT_EQ(verify("a.b.c.d"), "malformed token");
  EXPECT_EQ(verify("!!!.@@@.###"), "malformed token encoding");
  EXPECT_EQ(verify(sign("RS256", h, claims(kNow - 61))), "token expired");  // beyond leeway
  EXPECT_EQ(verify(sign("RS256", h, claims(kNow - 30))), "ok:alice");       // within leeway
  EXPECT_EQ(
      verify(sign("RS256", h, R"({"sub":"alice","iss":"https://issuer.test","aud":"sluice"})")),
      "token has no exp");
  EXPECT_EQ(verify(sign("RS256", h, claims(kNow + 600, R"(,"nbf":)" + std::to_string(kNow + 300)))),
            "token not valid yet");
  EXPECT_EQ(verify(sign("RS256", h, claims(kNow + 600, R"(,"iat2":1)"))), "ok:alice");
  EXPECT_EQ(verify(sign("RS256", h,
                        R"({"sub":"a","iss":"https://evil.test","aud":"sluice","exp":)" +
                            std::to_string(kNow + 60) + "}")),
            "wrong issuer");
  EXPECT_EQ(verify(sign("RS256", h,
                        R"({"sub":"a","iss":"https://issuer.test","aud":"else","exp":)" +
                            std::to_string(kNow + 60) + "}")),
            "wrong audience");
  // Tampered: the claims changed after signing.
  std::string good = sign("RS256", h, claims());
  size_t d1 = good.find('.'), d2 = good.rfind('.');
  std::string tampered =
      good.substr(0, d1 + 1) +
      b64url(R"({"sub":"mallory","iss":"https://issuer.test","aud":"sluice","exp":)" +
             std::to_string(kNow + 600) + "}") +
      good.substr(d2);
  EXPECT_EQ(verify(tampered), "bad token signature");
  // alg none, with or without a signature.
  std::string none = b64url(R"({"alg":"none"})") + "." + b64url(claims()) + ".";
  EXPECT_EQ(verify(none), "unsigned tokens are refused");
  EXPECT_EQ(verify(b64url(R"({"alg":"NONE"})") + "." + b64url(claims()) + ".AA"),
            "unsupported token algorithm");
  // HS/RS confusion: an HS256 token "signed" with the RSA public key's bytes as the secret.
  std::string confused = sign("HS256", R"({"alg":"HS256","kid":"rsa1"})", claims(), keys().jwks);
  EXPECT_EQ(verify(confused), "no key matches the token");
  // A kid nobody has.
  EXPECT_EQ(verify(sign("RS256", R"({"alg":"RS256","kid":"gone"})", claims())),
            "no key matches the token");
  // ES256 token against an RSA kid.
  EXPECT_EQ(verify(sign("ES256", R"({"alg":"ES256","kid":"rsa1"})", claims())),
            "no key matches the token");
  // Errors never echo the token.
  auto r = verifyJwt(tampered, set, policy, kNow);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message.find("mallory"), std::string::npos);
}

TEST(ApiKeys, HashedAndExact) {
  ApiKeyStore store;
  ApiKeyEntry e;
  e.hash = sha256("sk-alice-123");
  e.identity = {"alice", "acme", "api-key", ""};
  store.add(e);
  ASSERT_NE(store.find("sk-alice-123"), nullptr);
  EXPECT_EQ(store.find("sk-alice-123")->identity.id, "alice");
  EXPECT_EQ(store.find("sk-alice-12"), nullptr);
  EXPECT_EQ(store.find("sk-alice-1234"), nullptr);
  EXPECT_EQ(store.find(""), nullptr);
  Sha256 parsed{};
  EXPECT_TRUE(parseSha256Hex(toHex(e.hash.data(), 32), parsed));
  EXPECT_EQ(parsed, e.hash);
  EXPECT_FALSE(parseSha256Hex("xyz", parsed));
  EXPECT_EQ(identityTag("alice").size(), 12u);
  EXPECT_EQ(identityTag("alice").find("alice"), std::string::npos);
}

TEST(Bucket, GcraAdmitsTheLimitPerUnitAndRefills) {
  const int64_t sec = 1'000'000'000;
  Bucket b(10, std::chrono::seconds(1));
  int64_t now = 100 * sec;
  for (int i = 0; i < 10; ++i)
    EXPECT_EQ(b.take(now, 1), 0) << i;
  int64_t wait = b.take(now, 1);
  EXPECT_GT(wait, 0);
  EXPECT_LE(wait, sec / 10);
  EXPECT_EQ(b.take(now + sec / 10, 1), 0);                          // one token refilled
  EXPECT_EQ(b.take(now, 11), std::numeric_limits<int64_t>::max());  // can never fit
  // Refund gives capacity back; charge takes it without asking.
  b.refund(5);
  for (int i = 0; i < 5; ++i)
    EXPECT_EQ(b.take(now + sec / 10, 1), 0) << i;
  EXPECT_GT(b.take(now + sec / 10, 1), 0);
  b.charge(now + 2 * sec, 10);  // the bucket had fully refilled; now it is empty again
  EXPECT_GT(b.take(now + 2 * sec, 1), 0);
}

TEST(FilterChain, AuthModesKeysAndReserveReconcile) {
  config::RouterConfig c;
  c.auth.mode = "required";
  config::RouterConfig::Auth::ApiKey k;
  k.id = "alice";
  k.tenant = "acme";
  auto h = sha256("sk-alice");
  k.key_sha256 = toHex(h.data(), 32);
  k.models = {"llama"};
  k.limits.total_tokens = 1000;
  k.limits.unit = "minute";
  c.auth.api_keys.push_back(k);
  config::RouterConfig::RateLimit per_model;
  per_model.name = "per-model";
  per_model.per = {"model"};
  per_model.spec.requests = 3;
  per_model.spec.unit = "minute";
  c.rate_limits.push_back(per_model);
  std::vector<std::string> errors;
  auto registry = std::make_shared<BucketRegistry>();
  auto chain = FilterChain::build(c, nullptr, registry, nullptr, errors);
  ASSERT_TRUE(errors.empty()) << errors[0];
  BucketCache cache;
  FilterRequest req;
  req.mode = chain->defaultMode();
  req.model = "llama";
  req.input_tokens = 100;
  req.output_tokens = 300;
  req.now_ns = 1'000'000'000'000;

  auto a = chain->admit(req, cache);
  EXPECT_EQ(a.status, 401);  // required, none given
  req.authorization = "Bearer sk-wrong";
  EXPECT_EQ(chain->admit(req, cache).status, 401);
  req.authorization = "Basic abc";
  EXPECT_EQ(chain->admit(req, cache).status, 401);
  req.authorization = "";
  req.api_key = "sk-alice";
  req.model = "qwen";
  EXPECT_EQ(chain->admit(req, cache).status, 403);
  req.model = "llama";

  // 400 tokens reserved of 1000 per minute; two fit, the third does not...
  auto a1 = chain->admit(req, cache);
  ASSERT_TRUE(a1.ok) << a1.message;
  EXPECT_EQ(a1.identity.id, "alice");
  auto a2 = chain->admit(req, cache);
  ASSERT_TRUE(a2.ok);
  auto a3 = chain->admit(req, cache);
  EXPECT_EQ(a3.status, 429);
  EXPECT_EQ(a3.limit, "key alice");
  EXPECT_GE(a3.retry_after_s, 1);
  // ...until the first two are reconciled with their real usage (110 tokens each).
  chain->complete(a1, true, true, 100, 10, req.now_ns);
  chain->complete(a2, true, true, 100, 10, req.now_ns);
  auto a4 = chain->admit(req, cache);
  ASSERT_TRUE(a4.ok) << a4.message;
  // The per-model request limit (3 per minute): a1, a2, a4 used it up (a3 was undone whole).
  req.input_tokens = 10;
  req.output_tokens = 10;
  auto a5 = chain->admit(req, cache);
  EXPECT_EQ(a5.status, 429);
  EXPECT_EQ(a5.limit, "per-model");
  // Optional mode: no credentials is anonymous; bad credentials are still refused.
  req.mode = AuthMode::Optional;
  req.api_key = "";
  req.model = "other";
  auto anon = chain->admit(req, cache);
  EXPECT_TRUE(anon.ok);
  EXPECT_TRUE(anon.identity.id.empty());
  req.api_key = "nope";
  EXPECT_EQ(chain->admit(req, cache).status, 401);
}

// sluice.dev/rate-limits: a route or Gateway picks which configured limits apply.
TEST(FilterChain, LimitSelection) {
  config::RouterConfig c;
  for (const char* name : {"a", "b"}) {
    config::RouterConfig::RateLimit rl;
    rl.name = name;
    rl.spec.requests = 1;
    rl.spec.unit = "hour";
    c.rate_limits.push_back(rl);
  }
  std::vector<std::string> errors;
  auto chain = FilterChain::build(c, nullptr, std::make_shared<BucketRegistry>(), nullptr, errors);
  BucketCache cache;
  FilterRequest req;
  req.model = "m";
  req.limit_selection = ",b,";
  auto first = chain->admit(req, cache);
  ASSERT_TRUE(first.ok);
  EXPECT_EQ(first.reservations.size(), 1u);
  EXPECT_EQ(chain->admit(req, cache).limit, "b");  // b is used up; a was never touched
  req.limit_selection = ",a,";
  EXPECT_TRUE(chain->admit(req, cache).ok);
  req.limit_selection = "none";
  auto none = chain->admit(req, cache);
  EXPECT_TRUE(none.ok);
  EXPECT_TRUE(none.reservations.empty());
}

// Strict priority bands, round robin between flows in a band, FCFS within a flow.
TEST(FlowQueue, PriorityRoundRobinAndFcfs) {
  FlowQueue q;
  std::vector<std::string> order;
  auto waiter = [&](int32_t prio, const std::string& flow, const std::string& name) {
    auto w = std::make_shared<FlowWaiter>();
    w->priority = prio;
    w->flow = flow;
    w->bytes = 100;
    w->wake = [&order, name] { order.push_back(name); };
    q.enqueue(w);
    return w;
  };
  ASSERT_TRUE(q.tryAdmit(1));   // the one slot
  EXPECT_FALSE(q.tryAdmit(1));  // full
  waiter(0, "a", "a1");
  waiter(0, "a", "a2");
  waiter(0, "a", "a3");
  waiter(0, "b", "b1");
  auto gone = waiter(0, "c", "c1");
  waiter(5, "z", "z1");
  waiter(-1, "s", "s1");
  EXPECT_EQ(q.queued(), 7u);
  EXPECT_EQ(q.queuedBytes(), 700u);
  EXPECT_TRUE(q.cancel(gone));  // gave up: never dispatched
  EXPECT_EQ(q.queuedBytes(), 600u);
  for (int i = 0; i < 6; ++i) {
    q.release();
    q.dispatch(1);
  }
  EXPECT_EQ(order, (std::vector<std::string>{"z1", "a1", "b1", "a2", "a3", "s1"}));
  EXPECT_EQ(q.queued(), 0u);
  EXPECT_EQ(q.admitted(), 1);
  // Nobody waits and there is room: admitted at once.
  q.release();
  EXPECT_TRUE(q.tryAdmit(1));
}

TEST(FilterChain, ModelRouteLimitsAreKeyedByGateway) {
  config::RouterConfig c;
  std::vector<std::string> errors;
  auto chain = FilterChain::build(c, nullptr, std::make_shared<BucketRegistry>(), nullptr, errors);
  config::ModelRoute::RateLimit rl;
  rl.input_tokens_per_unit = 100;
  rl.unit = "minute";
  BucketCache cache;
  FilterRequest req;
  req.model = "llama";
  req.route = "ModelRoute/default/llama";
  req.route_limit = &rl;
  req.input_tokens = 100;
  req.gateway = "default/a";
  EXPECT_TRUE(chain->admit(req, cache).ok);
  EXPECT_EQ(chain->admit(req, cache).status, 429);
  req.gateway = "default/b";  // another Gateway, its own bucket
  EXPECT_TRUE(chain->admit(req, cache).ok);
}

}  // namespace
}  // namespace sluice::filters
