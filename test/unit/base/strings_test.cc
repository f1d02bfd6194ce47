#include "base/strings.h"

#include <cerrno>

#include <gtest/gtest.h>

#include "base/padded_buffer.h"
#include "base/port_holder.h"
#include "base/random.h"
#include "base/spsc_ring.h"

namespace sluice::base {
namespace {

TEST(Strings, ParsesDurations) {
  EXPECT_EQ(parseDuration("250ms")->count(), 250);
  EXPECT_EQ(parseDuration("10s")->count(), 10000);
  EXPECT_EQ(parseDuration("1.5s")->count(), 1500);
  EXPECT_EQ(parseDuration("5m")->count(), 300000);
  EXPECT_EQ(parseDuration("1h")->count(), 3600000);
  EXPECT_FALSE(parseDuration("10"));
  EXPECT_FALSE(parseDuration("abc"));
  EXPECT_FALSE(parseDuration("-1s"));
  EXPECT_FALSE(parseDuration("1d"));
}

TEST(Strings, ParsesByteSizes) {
  EXPECT_EQ(*parseByteSize("1024"), 1024u);
  EXPECT_EQ(*parseByteSize("64KiB"), 65536u);
  EXPECT_EQ(*parseByteSize("32MiB"), 32u * 1024 * 1024);
  EXPECT_EQ(*parseByteSize("1GiB"), 1024ull * 1024 * 1024);
  EXPECT_EQ(*parseByteSize("10MB"), 10'000'000u);
  EXPECT_FALSE(parseByteSize("ten"));
  EXPECT_FALSE(parseByteSize("10XB"));
}

TEST(Strings, ParsesHostPort) {
  auto hp = parseHostPort("127.0.0.11:8000");
  ASSERT_TRUE(hp);
  EXPECT_EQ(hp->host, "127.0.0.11");
  EXPECT_EQ(hp->port, 8000);
  auto v6 = parseHostPort("[::1]:9000");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->host, "::1");
  EXPECT_TRUE(parseHostPort("localhost:80"));
  EXPECT_FALSE(parseHostPort("localhost"));
  EXPECT_FALSE(parseHostPort("h:0"));
  EXPECT_FALSE(parseHostPort("h:70000"));
  EXPECT_FALSE(parseHostPort(":80"));
  EXPECT_FALSE(parseHostPort("a b:80"));
}

TEST(Strings, TellsIpLiteralsFromNames) {
  EXPECT_TRUE(isIpLiteral("10.0.0.1"));
  EXPECT_TRUE(isIpLiteral("fd00::1"));
  EXPECT_FALSE(isIpLiteral("10.0.0.999"));
  EXPECT_FALSE(isIpLiteral("llama-0"));
  EXPECT_FALSE(isIpLiteral("[::1]"));
  EXPECT_FALSE(isIpLiteral(""));
}

TEST(PortHolder, NamesTheCauseOfABindFailure) {
  EXPECT_NE(bindFailure(EACCES, 80).find("port 80 is privileged"), std::string::npos);
  EXPECT_NE(bindFailure(EADDRNOTAVAIL, 8080).find("not one of this host's"), std::string::npos);
  // A port nobody listens on: no holder to name, the plain cause.
  EXPECT_EQ(portHolder(1), "");
}

TEST(Strings, EscapesJson) {
  EXPECT_EQ(jsonQuote("a\"b\\c\n\x01"), "\"a\\\"b\\\\c\\n\\u0001\"");
  EXPECT_EQ(jsonQuote("plain run \x7f"), "\"plain run \x7f\"");
}

TEST(Strings, JsonEscapingKeepsValidUtf8AndReplacesInvalidBytes) {
  // Well-formed sequences of 2, 3 and 4 bytes pass as they are.
  EXPECT_EQ(jsonQuote("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"),
            "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
  // A raw 0xFF, a lone continuation byte, a truncated sequence, an overlong form, a surrogate
  // and a code point above U+10FFFF each become U+FFFD (one per byte that cannot start a
  // sequence), so the line stays valid JSON and UTF-8.
  EXPECT_EQ(jsonQuote("/v1/\xff"), "\"/v1/\\ufffd\"");
  EXPECT_EQ(jsonQuote("a\x80"
                      "b"),
            "\"a\\ufffdb\"");
  EXPECT_EQ(jsonQuote("\xe2\x82"), "\"\\ufffd\\ufffd\"");
  EXPECT_EQ(jsonQuote("\xc0\xaf"), "\"\\ufffd\\ufffd\"");
  EXPECT_EQ(jsonQuote("\xed\xa0\x80"), "\"\\ufffd\\ufffd\\ufffd\"");
  EXPECT_EQ(jsonQuote("\xf4\x90\x80\x80"), "\"\\ufffd\\ufffd\\ufffd\\ufffd\"");
  EXPECT_EQ(jsonQuote("\xff\"\n"), "\"\\ufffd\\\"\\n\"");
}

TEST(Strings, CaseInsensitiveEquals) {
  EXPECT_TRUE(iequals("Content-Length", "content-length"));
  EXPECT_FALSE(iequals("Content-Length", "content-lengt"));
}

TEST(PaddedBuffer, KeepsPaddingAfterGrowth) {
  PaddedBuffer b;
  for (int i = 0; i < 1000; ++i) {
    b.append("0123456789");
  }
  EXPECT_EQ(b.size(), 10000u);
  EXPECT_GE(b.capacity(), b.size());
  EXPECT_EQ(b.view().substr(0, 10), "0123456789");
}

TEST(SpscByteRing, PushesDrainsAndRefusesWhenFull) {
  SpscByteRing ring(16);
  EXPECT_TRUE(ring.tryPush("0123456789"));
  EXPECT_FALSE(ring.tryPush("0123456789"));  // 20 > 16
  std::string got;
  ring.drain([&](std::string_view s) { got += s; });
  EXPECT_EQ(got, "0123456789");
  // Wraps around the end.
  EXPECT_TRUE(ring.tryPush("abcdefghij"));
  got.clear();
  ring.drain([&](std::string_view s) { got += s; });
  EXPECT_EQ(got, "abcdefghij");
}

TEST(Random, IsDeterministicForASeed) {
  Xoshiro a(42), b(42), c(43);
  EXPECT_EQ(a.next(), b.next());
  EXPECT_NE(a.next(), c.next());
  Xoshiro r(1);
  std::string id = randomHexId(r);
  EXPECT_EQ(id.size(), 32u);
  EXPECT_EQ(id.find_first_not_of("0123456789abcdef"), std::string::npos);
}

TEST(Strings, Base64UrlEncodeRoundTrips) {
  EXPECT_EQ(base64UrlEncode(""), "");
  EXPECT_EQ(base64UrlEncode("f"), "Zg");
  EXPECT_EQ(base64UrlEncode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(base64UrlEncode("\xfb\xff"), "-_8");  // the URL alphabet, no padding
  std::string all;
  for (int c = 0; c < 256; ++c) {
    all.push_back(static_cast<char>(c));
  }
  EXPECT_EQ(base64Decode(base64UrlEncode(all), false), all);
}

}  // namespace
}  // namespace sluice::base
