#include "extproc/framing.h"

#include <gtest/gtest.h>

#include "extproc/grpc_server.h"
#include "extproc/messages.h"

namespace sluice::extproc {
namespace {

TEST(Framing, MessagesSplitAnywhereComeOutWhole) {
  pb::ProcessingRequest a, b;
  a.mutable_request_body()->set_body(std::string(300, 'a'));
  b.mutable_request_body()->set_end_of_stream(true);
  std::string wire;
  appendFrame(wire, a);
  appendFrame(wire, b);
  ASSERT_EQ(wire[0], 0);  // not compressed
  for (size_t cut = 0; cut <= wire.size(); ++cut) {
    Deframer d(1 << 20);
    std::vector<std::string> got;
    std::string_view m;
    std::string error;
    for (std::string_view part :
         {std::string_view(wire).substr(0, cut), std::string_view(wire).substr(cut)}) {
      d.feed(part);
      while (d.next(m, error) == Deframer::Next::kMessage) {
        got.emplace_back(m);
      }
    }
    ASSERT_EQ(got.size(), 2u) << cut;
    pb::ProcessingRequest back;
    ASSERT_TRUE(back.ParseFromString(got[0]));
    EXPECT_EQ(back.request_body().body(), a.request_body().body());
    ASSERT_TRUE(back.ParseFromString(got[1]));
    EXPECT_TRUE(back.request_body().end_of_stream());
    EXPECT_EQ(d.pending(), 0u);
  }
}

TEST(Framing, RefusesCompressedAndOversizeMessages) {
  std::string_view m;
  std::string error;
  Deframer compressed(1024);
  compressed.feed(std::string("\x01\x00\x00\x00\x01x", 6));
  EXPECT_EQ(compressed.next(m, error), Deframer::Next::kError);
  EXPECT_NE(error.find("compressed"), std::string::npos);
  Deframer big(16);
  big.feed(std::string("\x00\x00\x00\x01\x00", 5));  // 256 bytes announced
  EXPECT_EQ(big.next(m, error), Deframer::Next::kError);
  EXPECT_NE(error.find("over the limit"), std::string::npos);
}

TEST(Framing, GrpcMessageIsPercentEncoded) {
  EXPECT_EQ(percentEncodeMessage("ok: 100% done\n\xc3\xa9"), "ok: 100%25 done%0A%C3%A9");
}

TEST(Messages, EndpointListsFromMetadataInEveryForm) {
  pb::ProcessingRequest req;
  auto& fm = *req.mutable_metadata_context()->mutable_filter_metadata();
  auto& list = (*fm[std::string(kSubsetNamespace)].mutable_fields())[std::string(kSubsetKey)];
  list.mutable_list_value()->add_values()->set_string_value("10.0.0.1:8000");
  list.mutable_list_value()->add_values()->set_string_value("10.0.0.2:8000, 10.0.0.3");
  (*fm[std::string(kLbNamespace)].mutable_fields())[std::string(kServedKey)].set_string_value(
      " 10.0.0.9:8000 ");
  bool present = false;
  EXPECT_EQ(metadataAddresses(req, kSubsetNamespace, kSubsetKey, present),
            (std::vector<std::string>{"10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3"}));
  EXPECT_TRUE(present);
  EXPECT_EQ(metadataAddresses(req, kLbNamespace, kServedKey, present),
            std::vector<std::string>{"10.0.0.9:8000"});
  EXPECT_TRUE(metadataAddresses(req, kLbNamespace, "absent", present).empty());
  EXPECT_FALSE(present);
}

TEST(Messages, HeaderValuesPreferRawValue) {
  envoy::config::core::v3::HeaderMap map;
  auto* h = map.add_headers();
  h->set_key("X-Request-Id");
  h->set_raw_value("raw");
  h->set_value("plain");
  auto* h2 = map.add_headers();
  h2->set_key(":path");
  h2->set_value("/v1/chat/completions");
  ASSERT_NE(findHeader(map, "x-request-id"), nullptr);
  EXPECT_EQ(headerValue(*findHeader(map, "x-request-id")), "raw");
  EXPECT_EQ(headerValue(*findHeader(map, ":path")), "/v1/chat/completions");
  EXPECT_EQ(findHeader(map, "absent"), nullptr);
}

}  // namespace
}  // namespace sluice::extproc
