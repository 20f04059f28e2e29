#include "mayhem/message.hpp"

#include <cstring>

namespace mayhem {

std::string Message::id_string() const {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s;
  s.reserve(36);
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) s.push_back('-');
    s.push_back(kHex[id[i] >> 4]);
    s.push_back(kHex[id[i] & 15]);
  }
  return s;
}

void MessageFactory::fill(Message& m, std::uint64_t seq, Nanos now) {
  static constexpr char kChoices[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  m.reset_state();
  const std::uint64_t a = rng_.next();
  const std::uint64_t b = rng_.next();
  for (int i = 0; i < 8; ++i) {
    m.id[i] = static_cast<std::uint8_t>(a >> (8 * i));
    m.id[8 + i] = static_cast<std::uint8_t>(b >> (8 * i));
  }
  m.id[6] = static_cast<std::uint8_t>((m.id[6] & 0x0F) | 0x40);  // version 4
  m.id[8] = static_cast<std::uint8_t>((m.id[8] & 0x3F) | 0x80);  // RFC 4122 variant
  const std::uint64_t c = rng_.next();
  std::memcpy(m.instance_name, "cattle-", 7);
  for (int i = 0; i < 4; ++i) {
    // 16 bits per character keeps the modulo bias below 0.06%.
    m.instance_name[7 + i] = kChoices[((c >> (16 * i)) & 0xFFFF) % 36];
  }
  m.instance_name[11] = '\0';
  m.seed = rng_.next();
  m.seq = seq;
  m.published_ns = now;
}

}  // namespace mayhem
