// The wire format of a broker message, as pure functions: decoding the JSON payload
// `{"instance_name": "cattle-ab12", "message_id": "<uuid>"}`, encoding it (the publish side), and
// reading the delivery count out of a JetStream ack subject. Every function takes arbitrary bytes
// and never crashes, throws or reads out of bounds on any input, so a libFuzzer target can call it
// directly. Use: `Payload p; if (auto e = decode_payload(bytes, p); e != PayloadError::kNone)
// log(to_string(e));`.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace mayhem {

// What a valid payload carries. The reference's messages: instance names are "cattle-" plus 4
// characters; ids are uuid4s. Accepted: instance_name of 1..11 printable ASCII characters (it must
// fit Message::instance_name), message_id in the canonical 8-4-4-4-12 hex form (any case). Other
// members are ignored.
struct Payload {
  char instance_name[12] = {};  // NUL-terminated
  std::array<std::uint8_t, 16> id = {};
};

enum class PayloadError : std::uint8_t {
  kNone,
  kNotJson,          // not valid JSON (or not UTF-8)
  kNotObject,        // valid JSON, but not an object
  kNoInstanceName,   // "instance_name" missing or not a string
  kBadInstanceName,  // empty, longer than 11 bytes, or not printable ASCII
  kNoMessageId,      // "message_id" missing or not a string
  kBadMessageId,     // not a canonical uuid
};

const char* to_string(PayloadError e);

PayloadError decode_payload(std::string_view bytes, Payload& out);
// The JSON text of a payload (what `mayhem publish` sends).
std::string encode_payload(std::string_view instance_name, std::string_view message_id);

// Canonical 8-4-4-4-12 uuid text to bytes; false (and `out` unspecified) when it is not one.
bool parse_uuid(std::string_view text, std::array<std::uint8_t, 16>& out);

// The delivery count of a JetStream message, read from its reply (ack) subject:
// `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>` or the newer form with
// `<domain>.<account hash>` after `$JS.ACK` (and an optional trailing token). 0 when the subject
// is not an ack subject. Allocates nothing.
std::uint64_t delivery_count(std::string_view reply);

}  // namespace mayhem
