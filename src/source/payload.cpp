#include "mayhem/source/payload.hpp"

#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <cstring>
#include <optional>

namespace mayhem {

const char* to_string(PayloadError e) {
  switch (e) {
    case PayloadError::kNone:
      return "ok";
    case PayloadError::kNotJson:
      return "not valid JSON";
    case PayloadError::kNotObject:
      return "not a JSON object";
    case PayloadError::kNoInstanceName:
      return "no string \"instance_name\"";
    case PayloadError::kBadInstanceName:
      return "\"instance_name\" is not 1..11 printable ASCII characters";
    case PayloadError::kNoMessageId:
      return "no string \"message_id\"";
    case PayloadError::kBadMessageId:
      return "\"message_id\" is not a canonical uuid";
  }
  return "unknown";
}

namespace {
// Hex digit values by byte, -1 for anything else: a table, because the digit-or-letter branches
// of a random uuid mispredict about every other character (parse_uuid was 44% of a decode).
constexpr std::array<std::int8_t, 256> kHexValue = [] {
  std::array<std::int8_t, 256> t{};
  for (auto& v : t) v = -1;
  for (int c = '0'; c <= '9'; ++c)
    t[static_cast<std::size_t>(c)] = static_cast<std::int8_t>(c - '0');
  for (int c = 'a'; c <= 'f'; ++c)
    t[static_cast<std::size_t>(c)] = static_cast<std::int8_t>(c - 'a' + 10);
  for (int c = 'A'; c <= 'F'; ++c)
    t[static_cast<std::size_t>(c)] = static_cast<std::int8_t>(c - 'A' + 10);
  return t;
}();
}  // namespace

bool parse_uuid(std::string_view text, std::array<std::uint8_t, 16>& out) {
  if (text.size() != 36) return false;
  if (text[8] != '-' || text[13] != '-' || text[18] != '-' || text[23] != '-') return false;
  // Byte i's two digits start here (the dashes skipped).
  static constexpr std::uint8_t kAt[16] = {0,  2,  4,  6,  9,  11, 14, 16,
                                           19, 21, 24, 26, 28, 30, 32, 34};
  int bad = 0;
  for (int i = 0; i < 16; ++i) {
    const int hi = kHexValue[static_cast<unsigned char>(text[kAt[i]])];
    const int lo = kHexValue[static_cast<unsigned char>(text[kAt[i] + 1])];
    bad |= hi | lo;  // negative once any of them is -1
    out[i] = static_cast<std::uint8_t>(hi * 16 + lo);
  }
  return bad >= 0;
}

namespace {

// The common shape, decoded without building a DOM: an object with exactly the two members, in
// either order, whose string values contain only printable ASCII and no escapes. Anything else
// (escapes, other members, other types, non-ASCII, duplicates) returns nullopt and goes to the
// full parser, so both paths agree on every input.
struct Cursor {
  std::string_view s;
  std::size_t i = 0;
  void ws() {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
  }
  bool eat(char c) {
    ws();
    if (i < s.size() && s[i] == c) {
      ++i;
      return true;
    }
    return false;
  }
  // A string without escapes, all printable ASCII.
  bool plain_string(std::string_view& v) {
    if (!eat('"')) return false;
    const std::size_t start = i;
    const void* q = std::memchr(s.data() + start, '"', s.size() - start);
    if (q == nullptr) return false;
    const std::size_t end = static_cast<std::size_t>(static_cast<const char*>(q) - s.data());
    // Then the characters before it, without an early exit (a loop the compiler can vectorise).
    bool bad = false;
    for (std::size_t k = start; k < end; ++k) {
      const auto c = static_cast<unsigned char>(s[k]);
      bad |= (c == '\\') | (c < 0x20) | (c > 0x7e);
    }
    if (bad) return false;
    v = s.substr(start, end - start);
    i = end + 1;
    return true;
  }
};

std::optional<PayloadError> decode_fast(std::string_view bytes, Payload& out) {
  Cursor c{bytes};
  std::string_view name, id;
  bool have_name = false, have_id = false;
  if (!c.eat('{')) return std::nullopt;
  for (int k = 0; k < 2; ++k) {
    std::string_view key, value;
    if (k == 1 && !c.eat(',')) return std::nullopt;
    if (!c.plain_string(key) || !c.eat(':') || !c.plain_string(value)) return std::nullopt;
    if (key == "instance_name" && !have_name) {
      name = value;
      have_name = true;
    } else if (key == "message_id" && !have_id) {
      id = value;
      have_id = true;
    } else {
      return std::nullopt;
    }
  }
  if (!c.eat('}')) return std::nullopt;
  c.ws();
  if (c.i != bytes.size()) return std::nullopt;
  if (name.empty() || name.size() >= sizeof(out.instance_name))
    return PayloadError::kBadInstanceName;
  if (!parse_uuid(id, out.id)) return PayloadError::kBadMessageId;
  std::memset(out.instance_name, 0, sizeof(out.instance_name));
  std::memcpy(out.instance_name, name.data(), name.size());
  return PayloadError::kNone;
}

}  // namespace

PayloadError decode_payload(std::string_view bytes, Payload& out) {
  if (const auto fast = decode_fast(bytes, out)) return *fast;
  // No exceptions: a parse error gives a "discarded" value. nlohmann's parser keeps its nesting
  // on a heap stack (no recursion), validates UTF-8, and destroys deep values iteratively (3.10+).
  const nlohmann::json j =
      nlohmann::json::parse(bytes.begin(), bytes.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return PayloadError::kNotJson;
  if (!j.is_object()) return PayloadError::kNotObject;
  const auto inst = j.find("instance_name");
  if (inst == j.end() || !inst->is_string()) return PayloadError::kNoInstanceName;
  const auto& name = inst->get_ref<const std::string&>();
  if (name.empty() || name.size() >= sizeof(out.instance_name))
    return PayloadError::kBadInstanceName;
  for (const char c : name)
    if (c < 0x20 || c > 0x7e) return PayloadError::kBadInstanceName;
  const auto id = j.find("message_id");
  if (id == j.end() || !id->is_string()) return PayloadError::kNoMessageId;
  if (!parse_uuid(id->get_ref<const std::string&>(), out.id)) return PayloadError::kBadMessageId;
  std::memset(out.instance_name, 0, sizeof(out.instance_name));
  std::memcpy(out.instance_name, name.data(), name.size());
  return PayloadError::kNone;
}

std::string encode_payload(std::string_view instance_name, std::string_view message_id) {
  // dump() escapes whatever needs escaping; invalid UTF-8 is replaced rather than thrown.
  return nlohmann::json{{"instance_name", instance_name}, {"message_id", message_id}}.dump(
      -1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::uint64_t delivery_count(std::string_view reply) {
  constexpr std::string_view kPrefix = "$JS.ACK.";
  if (reply.substr(0, kPrefix.size()) != kPrefix) return 0;
  // Tokens after the prefix; the delivery count is the 3rd (9-token form) or the 5th (11/12-token
  // form with domain and account hash).
  std::string_view tokens[12];
  std::size_t n = 0;
  std::string_view rest = reply.substr(kPrefix.size());
  for (;;) {
    const std::size_t dot = rest.find('.');
    if (n == 12) return 0;  // too many tokens
    tokens[n++] = rest.substr(0, dot);
    if (dot == std::string_view::npos) break;
    rest.remove_prefix(dot + 1);
  }
  std::string_view field;
  if (n == 7)
    field = tokens[2];
  else if (n == 9 || n == 10)
    field = tokens[4];
  else
    return 0;
  if (field.empty() || field.size() > 19) return 0;  // 19 digits always fit in 64 bits
  std::uint64_t v = 0;
  for (const char c : field) {
    if (c < '0' || c > '9') return 0;
    v = v * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return v;
}

}  // namespace mayhem
