#include "mayhem/store/store.hpp"

#include "mayhem/store/memory_store.hpp"
#include "mayhem/store/postgres_store.hpp"
#include "mayhem/store/sqlite_store.hpp"

namespace mayhem {

std::optional<StoreSpec> parse_store_spec(std::string_view text, std::string& err) {
  constexpr std::string_view kSqlite = "sqlite:";
  if (text == "memory") return StoreSpec{StoreSpec::Kind::kMemory, {}};
  if (text.substr(0, kSqlite.size()) == kSqlite && text.size() > kSqlite.size())
    return StoreSpec{StoreSpec::Kind::kSqlite, std::string(text.substr(kSqlite.size()))};
  for (std::string_view scheme : {"postgres://", "postgresql://"})
    if (text.substr(0, scheme.size()) == scheme)
      return StoreSpec{StoreSpec::Kind::kPostgres, std::string(text)};
  err =
      "--store must be memory, sqlite:PATH or postgres://[USER[:PASSWORD]@]HOST[:PORT]/DB (got '" +
      std::string(text) + "')";
  return std::nullopt;
}

std::unique_ptr<Store> open_store(const StoreSpec& spec, BatchPool& batches, const Clock& clock,
                                  std::shared_ptr<spdlog::logger> log, SimulatedIo& sim) {
  switch (spec.kind) {
    case StoreSpec::Kind::kMemory:
      return std::make_unique<MemoryStore>(sim);
    case StoreSpec::Kind::kSqlite:
      return std::make_unique<SqliteStore>(spec.path, batches, clock, std::move(log),
                                           spec.retry_for, spec.group_commit);
    case StoreSpec::Kind::kPostgres:
      break;
  }
  return std::make_unique<PostgresStore>(spec.path, batches, clock, std::move(log), spec.retry_for,
                                         spec.group_commit);
}

}  // namespace mayhem
