// libFuzzer target for the broker's wire format (source/payload.hpp): decode_payload on arbitrary
// bytes (the JSON body of a NATS message) and delivery_count on the same bytes as an ack subject.
// Properties: never crashes, throws or reads out of bounds; an accepted payload has a printable,
// NUL-terminated instance_name of 1..11 characters and survives encode -> decode unchanged.
#include <fmt/format.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "mayhem/source/payload.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  (void)mayhem::delivery_count(bytes);
  mayhem::Payload p;
  if (mayhem::decode_payload(bytes, p) != mayhem::PayloadError::kNone) return 0;
  const std::size_t n = strnlen(p.instance_name, sizeof p.instance_name);
  if (n == 0 || n >= sizeof p.instance_name) std::abort();
  for (std::size_t i = 0; i < n; ++i)
    if (p.instance_name[i] < 0x20 || p.instance_name[i] > 0x7e) std::abort();
  std::string id;
  for (std::size_t i = 0; i < p.id.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) id += '-';
    id += fmt::format("{:02x}", p.id[i]);
  }
  mayhem::Payload again;
  if (mayhem::decode_payload(mayhem::encode_payload({p.instance_name, n}, id), again) !=
          mayhem::PayloadError::kNone ||
      std::memcmp(again.instance_name, p.instance_name, sizeof p.instance_name) != 0 ||
      again.id != p.id)
    std::abort();
  return 0;
}
