#include "mayhem/store/store.hpp"

#include "mayhem/store/memory_store.hpp"
#include "mayhem/store/sqlite_store.hpp"

namespace mayhem {

std::optional<StoreSpec> parse_store_spec(std::string_view text, std::string& err) {
  constexpr std::string_view kSqlite = "sqlite:";
  if (text == "memory") return StoreSpec{StoreSpec::Kind::kMemory, {}};
  if (text.substr(0, kSqlite.size()) == kSqlite && text.size() > kSqlite.size())
    return StoreSpec{StoreSpec::Kind::kSqlite, std::string(text.substr(kSqlite.size()))};
  err = "--store must be memory or sqlite:PATH (got '" + std::string(text) + "')";
  return std::nullopt;
}

std::unique_ptr<Store> open_store(const StoreSpec& spec, BatchPool& batches, const Clock& clock,
                                  std::shared_ptr<spdlog::logger> log, SimulatedIo& sim) {
  if (spec.kind == StoreSpec::Kind::kMemory) return std::make_unique<MemoryStore>(sim);
  return std::make_unique<SqliteStore>(spec.path, batches, clock, std::move(log));
}

}  // namespace mayhem
