#include "mayhem/source/payload.hpp"

#include <nlohmann/json.hpp>

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
int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
}  // namespace

bool parse_uuid(std::string_view text, std::array<std::uint8_t, 16>& out) {
  if (text.size() != 36) return false;
  std::size_t pos = 0;
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) {
      if (text[pos] != '-') return false;
      ++pos;
    }
    const int hi = hex_value(text[pos]);
    const int lo = hex_value(text[pos + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<std::uint8_t>(hi * 16 + lo);
    pos += 2;
  }
  return pos == 36;
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
    for (; i < s.size(); ++i) {
      const char c = s[i];
      if (c == '"') {
        v = s.substr(start, i - start);
        ++i;
        return true;
      }
      if (c == '\\' || c < 0x20 || c > 0x7e) return false;
    }
    return false;
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
