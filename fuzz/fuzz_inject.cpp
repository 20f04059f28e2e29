// libFuzzer target for the fault-injection spec decoder, mayhem::parse_fault ("STAGE:FAULT:P").
// Properties: it never crashes or throws; a rejected spec gets one printable line naming
// --inject; an accepted one has a probability in [0, 1] and survives a round trip through its
// canonical text unchanged.
#include <fmt/format.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "mayhem/faults.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::string error;
  const auto spec = mayhem::parse_fault(text, error);
  if (!spec) {
    if (error.rfind("--inject", 0) != 0) std::abort();
    for (char c : error)
      if (c < 0x20 || c > 0x7e) std::abort();  // outside input is never echoed raw
    return 0;
  }
  if (!(spec->probability >= 0 && spec->probability <= 1)) std::abort();
  const std::string canonical = fmt::format("{}:{}:{}", mayhem::stage_info(spec->stage).inject,
                                            mayhem::to_string(spec->kind), spec->probability);
  std::string error2;
  const auto again = mayhem::parse_fault(canonical, error2);
  if (!again || again->stage != spec->stage || again->kind != spec->kind ||
      again->probability != spec->probability)
    std::abort();
  return 0;
}
