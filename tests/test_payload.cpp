// The broker wire format: payload decoding (valid, every malformed kind, arbitrary bytes),
// encoding round trips, uuid parsing, and the delivery count read from ack subjects.
#include <catch2/catch.hpp>

#include <random>
#include <string>

#include "mayhem/message.hpp"
#include "mayhem/source/payload.hpp"

using namespace mayhem;

namespace {
constexpr const char* kId = "0b4f0a6e-8b1f-4c1e-9d3a-6f1e2d3c4b5a";
}

TEST_CASE("A valid payload decodes to its instance name and id bytes", "[payload]") {
  Payload p;
  const std::string text =
      std::string(R"({"instance_name": "cattle-ab12", "message_id": ")") + kId + R"("})";
  REQUIRE(decode_payload(text, p) == PayloadError::kNone);
  CHECK(std::string(p.instance_name) == "cattle-ab12");
  CHECK(p.id[0] == 0x0b);
  CHECK(p.id[1] == 0x4f);
  CHECK(p.id[15] == 0x5a);
}

TEST_CASE("Unknown members are ignored, escapes and upper-case hex accepted", "[payload]") {
  Payload p;
  const std::string text =
      std::string(R"({"x": [1, {"y": null}], "instance_name": )") +
      R"("\u0063attle-1", "message_id": "0B4F0A6E-8B1F-4C1E-9D3A-6F1E2D3C4B5A"})";
  REQUIRE(decode_payload(text, p) == PayloadError::kNone);
  CHECK(std::string(p.instance_name) == "cattle-1");
  CHECK(p.id[0] == 0x0b);
}

TEST_CASE("Each kind of malformed payload gets its own reason", "[payload]") {
  const std::string id = kId;
  const std::vector<std::pair<std::string, PayloadError>> cases = {
      {"", PayloadError::kNotJson},
      {"not json", PayloadError::kNotJson},
      {R"({"instance_name": "a", )", PayloadError::kNotJson},
      {"\xff\xfe", PayloadError::kNotJson},
      {"[1,2]", PayloadError::kNotObject},
      {"42", PayloadError::kNotObject},
      {R"({"message_id": ")" + id + R"("})", PayloadError::kNoInstanceName},
      {R"({"instance_name": 7, "message_id": ")" + id + R"("})", PayloadError::kNoInstanceName},
      {R"({"instance_name": "", "message_id": ")" + id + R"("})", PayloadError::kBadInstanceName},
      {R"({"instance_name": "cattle-abcde", "message_id": ")" + id + R"("})",
       PayloadError::kBadInstanceName},  // 12 characters: one too many
      {R"({"instance_name": "a\nb", "message_id": ")" + id + R"("})",
       PayloadError::kBadInstanceName},
      {R"({"instance_name": "cattle-ab12"})", PayloadError::kNoMessageId},
      {R"({"instance_name": "cattle-ab12", "message_id": null})", PayloadError::kNoMessageId},
      {R"({"instance_name": "cattle-ab12", "message_id": "x"})", PayloadError::kBadMessageId},
      {R"({"instance_name": "cattle-ab12", "message_id": ")" + id.substr(0, 35) + "g\"}",
       PayloadError::kBadMessageId},
  };
  for (const auto& [text, want] : cases) {
    INFO(text);
    Payload p;
    CHECK(decode_payload(text, p) == want);
    CHECK(std::string(to_string(want)).size() > 1);
  }
}

TEST_CASE("encode_payload round-trips through decode_payload", "[payload]") {
  MessageFactory f(42);
  for (int i = 0; i < 100; ++i) {
    Message m;
    f.fill(m, static_cast<std::uint64_t>(i), 0);
    Payload p;
    REQUIRE(decode_payload(encode_payload(m.instance_name, m.id_string()), p) ==
            PayloadError::kNone);
    CHECK(std::string(p.instance_name) == m.instance_name);
    CHECK(p.id == m.id);
  }
}

TEST_CASE("Arbitrary and deeply nested bytes never crash the decoder", "[payload]") {
  std::mt19937_64 rng(7);
  Payload p;
  const std::string valid =
      std::string(R"({"instance_name": "cattle-ab12", "message_id": ")") + kId + R"("})";
  std::uint64_t accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string s = valid;
    // Flip, insert or cut a few bytes of a valid payload, or make pure noise.
    if (i % 4 == 0) {
      s.resize(rng() % 64);
      for (auto& c : s) c = static_cast<char>(rng());
    } else {
      const int edits = 1 + static_cast<int>(rng() % 3);
      for (int e = 0; e < edits && !s.empty(); ++e) {
        const std::size_t at = rng() % s.size();
        switch (rng() % 3) {
          case 0:
            s[at] = static_cast<char>(rng());
            break;
          case 1:
            s.insert(at, 1, static_cast<char>(rng()));
            break;
          default:
            s.erase(at, 1);
        }
      }
    }
    if (decode_payload(s, p) == PayloadError::kNone) ++accepted;
  }
  CHECK(accepted < 20000);  // most mutations are rejected, none crashed
  CHECK(decode_payload(std::string(100000, '['), p) == PayloadError::kNotJson);
  CHECK(decode_payload(std::string(50000, '[') + std::string(50000, ']'), p) ==
        PayloadError::kNotObject);
  CHECK(decode_payload(std::string("{\"a\":") + std::string(1000, '"'), p) ==
        PayloadError::kNotJson);
}

TEST_CASE("parse_uuid accepts only the canonical form", "[payload]") {
  std::array<std::uint8_t, 16> id{};
  CHECK(parse_uuid(kId, id));
  CHECK_FALSE(parse_uuid("0b4f0a6e8b1f4c1e9d3a6f1e2d3c4b5a", id));
  CHECK_FALSE(parse_uuid("0b4f0a6e-8b1f-4c1e-9d3a-6f1e2d3c4b5", id));
  CHECK_FALSE(parse_uuid("0b4f0a6e-8b1f-4c1e-9d3a_6f1e2d3c4b5a", id));
  CHECK_FALSE(parse_uuid("", id));
}

TEST_CASE("delivery_count reads both ack subject forms and rejects anything else", "[payload]") {
  CHECK(delivery_count("$JS.ACK.MAYHEM.mayhem.1.42.42.1700000000000000000.7") == 1);
  CHECK(delivery_count("$JS.ACK.MAYHEM.mayhem.3.42.44.1700000000000000000.0") == 3);
  CHECK(delivery_count("$JS.ACK.hub.ACCHASH.MAYHEM.mayhem.5.1.2.1700000000000000000.0") == 5);
  CHECK(delivery_count("$JS.ACK.hub.ACCHASH.MAYHEM.mayhem.2.1.2.1700000000000000000.0.xyz") == 2);
  CHECK(delivery_count("") == 0);
  CHECK(delivery_count("_INBOX.abc") == 0);
  CHECK(delivery_count("$JS.ACK.") == 0);
  CHECK(delivery_count("$JS.ACK.a.b.x.1.2.3.4") == 0);
  CHECK(delivery_count("$JS.ACK.a.b.99999999999999999999.1.2.3.4") == 0);  // 20 digits
  CHECK(delivery_count("$JS.ACK.a.b.1.2.3.4.5.6.7.8.9.10.11.12") == 0);
}

TEST_CASE("The fast path and the full parser agree (escapes force the full parser)", "[payload]") {
  const std::string id = kId;
  const std::vector<std::pair<std::string, std::string>> pairs = {
      {R"({"instance_name":"cattle-1","message_id":")" + id + R"("})",
       R"({"instance_name":"\u0063attle-1","message_id":")" + id + R"("})"},
      {" {\n\t\"message_id\" : \"" + id + "\" ,\r\"instance_name\":\"c\" } ",
       R"({"message_id":")" + id + R"(","instance_name":"\u0063"})"},
      {R"({"instance_name":"","message_id":")" + id + R"("})",
       R"({"instance_name":"","message_id":"\u0030)" + id.substr(1) + R"("})"},
      {R"({"instance_name":"cattle-abcdefgh","message_id":")" + id + R"("})",
       R"({"instance_name":"cattle-abcdefg\u0068","message_id":")" + id + R"("})"},
      {R"({"instance_name":"cattle-1","message_id":"x"})",
       R"({"instance_name":"cattle-\u0031","message_id":"x"})"},
  };
  for (const auto& [fast, full] : pairs) {
    INFO(fast << " vs " << full);
    Payload a, b;
    const PayloadError ea = decode_payload(fast, a);
    const PayloadError eb = decode_payload(full, b);
    CHECK(ea == eb);
    if (ea == PayloadError::kNone) {
      CHECK(std::string(a.instance_name) == b.instance_name);
      CHECK(a.id == b.id);
    }
  }
  Payload p;
  // A duplicate member or trailing bytes are not the fast path's to judge.
  CHECK(decode_payload(R"({"instance_name":"a","instance_name":"b"})", p) ==
        PayloadError::kNoMessageId);
  CHECK(decode_payload(R"({"instance_name":"a","message_id":")" + id + R"("} x)", p) ==
        PayloadError::kNotJson);
}
