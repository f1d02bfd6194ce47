#include "http/sse.h"

#include <vector>

#include <gtest/gtest.h>

#include "http/headers.h"

namespace sluice::http {
namespace {

std::vector<std::string> feedAll(SseSplitter& s, const std::vector<std::string>& parts) {
  std::vector<std::string> events;
  for (const auto& p : parts) {
    s.feed(p, [&](std::string_view e, bool complete) {
      EXPECT_TRUE(complete);
      events.emplace_back(e);
    });
  }
  return events;
}

TEST(SseSplitter, SplitsEventsAcrossReads) {
  SseSplitter s;
  auto events = feedAll(s, {"data: a\n\nda", "ta: b\n", "\ndata: c\n\n", "data: d"});
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0], "data: a\n\n");
  EXPECT_EQ(events[1], "data: b\n\n");
  EXPECT_EQ(events[2], "data: c\n\n");
  EXPECT_EQ(s.pending(), "data: d");
}

TEST(SseSplitter, HandlesCrLf) {
  SseSplitter s;
  auto events = feedAll(s, {"data: a\r\n\r\ndata: b\r\n", "\r\n"});
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1], "data: b\r\n\r\n");
}

TEST(SseSplitter, ReleasesOversizeEvents) {
  SseSplitter s(16);
  std::vector<std::pair<std::string, bool>> got;
  s.feed(std::string(40, 'x'), [&](std::string_view e, bool c) { got.emplace_back(e, c); });
  ASSERT_EQ(got.size(), 1u);
  EXPECT_FALSE(got[0].second);
  EXPECT_TRUE(s.pending().empty());
}

TEST(SseSplitter, DataOfJoinsLines) {
  std::string scratch;
  EXPECT_EQ(SseSplitter::dataOf("data: {\"a\":1}\n\n", scratch), "{\"a\":1}");
  EXPECT_EQ(SseSplitter::dataOf("event: x\ndata:a\ndata: b\n\n", scratch), "a\nb");
  EXPECT_EQ(SseSplitter::dataOf(": comment\n\n", scratch), "");
}

TEST(Headers, HopByHop) {
  EXPECT_TRUE(isHopByHop("Connection"));
  EXPECT_TRUE(isHopByHop("transfer-encoding"));
  EXPECT_FALSE(isHopByHop("traceparent"));
  EXPECT_TRUE(connectionListsToken("keep-alive, X-Secret", "x-secret"));
  EXPECT_FALSE(connectionListsToken("close", "x-secret"));
  EXPECT_TRUE(isEventStream("text/event-stream; charset=utf-8"));
  EXPECT_FALSE(isEventStream("application/json"));
}

}  // namespace
}  // namespace sluice::http
