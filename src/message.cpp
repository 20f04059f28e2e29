#include "mayhem/message.hpp"

#include <bit>
#include <cstring>

namespace mayhem {

void uuid_text(const std::array<std::uint8_t, 16>& id, char (&out)[37]) {
  static constexpr char kHex[] = "0123456789abcdef";
  int o = 0;
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out[o++] = '-';
    out[o++] = kHex[id[i] >> 4];
    out[o++] = kHex[id[i] & 15];
  }
  out[o] = '\0';
}

std::string Message::id_string() const {
  char text[37];
  uuid_text(id, text);
  return std::string(text, 36);
}

std::string Message::hostname() const {
  return fmt::format("{}", Host{*this});
}

static_assert(std::endian::native == std::endian::little, "fill() writes the id word-wise");

void MessageFactory::fill(Message& m, std::uint64_t seq, Nanos now) {
  static constexpr char kChoices[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  // The generator works on a local copy: the byte stores into `m` below may alias `rng_` as far
  // as the compiler knows, which kept its state in memory, a store-load chain per draw.
  SplitMix64 rng = rng_;
  m.reset_state();
  const std::uint64_t a = rng.next();
  const std::uint64_t b = rng.next();
  std::memcpy(m.id.data(), &a, 8);  // little-endian: byte i is bits 8i..8i+7, as before
  std::memcpy(m.id.data() + 8, &b, 8);
  m.id[6] = static_cast<std::uint8_t>((m.id[6] & 0x0F) | 0x40);  // version 4
  m.id[8] = static_cast<std::uint8_t>((m.id[8] & 0x3F) | 0x80);  // RFC 4122 variant
  const std::uint64_t c = rng.next();
  char name[sizeof m.instance_name] = {'c', 'a', 't', 't', 'l', 'e', '-'};
  for (int i = 0; i < 4; ++i) {
    // 16 bits per character keeps the modulo bias below 0.06%.
    name[7 + i] = kChoices[((c >> (16 * i)) & 0xFFFF) % 36];
  }
  std::memcpy(m.instance_name, name, sizeof name);
  m.seed = rng.next();
  m.seq = seq;
  m.published_ns = now;
  rng_ = rng;
}

}  // namespace mayhem
