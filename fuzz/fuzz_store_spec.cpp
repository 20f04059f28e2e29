// libFuzzer target for the --store decoder, mayhem::parse_store_spec ("memory" | "sqlite:PATH" |
// "postgres://..." | "postgresql://...").
// Properties: it never crashes or throws; "memory" is the memory store; an accepted sqlite spec
// keeps exactly the text after "sqlite:" as its path (never empty); an accepted postgres spec keeps
// the whole URL, which starts with one of the two schemes; a rejected one explains itself.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "mayhem/store/store.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::string error;
  const auto spec = mayhem::parse_store_spec(text, error);
  if (!spec) {
    if (error.rfind("--store", 0) != 0) std::abort();
    return 0;
  }
  if (spec->kind == mayhem::StoreSpec::Kind::kMemory) {
    if (text != "memory") std::abort();
  } else if (spec->kind == mayhem::StoreSpec::Kind::kPostgres) {
    if (text != spec->path ||
        (text.rfind("postgres://", 0) != 0 && text.rfind("postgresql://", 0) != 0))
      std::abort();
  } else if (spec->path.empty() || text != "sqlite:" + spec->path) {
    std::abort();
  }
  return 0;
}
