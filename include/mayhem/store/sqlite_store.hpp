// The SQLite store: each saved message becomes one row of table `saves`, keyed by message_id.
// One writer thread owns the connection (WAL mode, synchronous=FULL; another connection's lock is
// waited for up to 5 s, and at shutdown no later than the shutdown deadline) and group-commits
// (group_commit.hpp: everything queued in ONE transaction, transient failures retried, then the
// completions handed back through the sink). Idempotent: `INSERT ... ON CONFLICT(message_id) DO
// NOTHING`, so a redelivered message never adds a row (it counts as a duplicate and as a
// successful save). Settlements (acked/nacked) are queued by settle and written by the same
// writer as UPDATEs in the next transaction.
// Use: through the Store interface (store.hpp); `SqliteStore` directly in tests and benchmarks.
#pragma once

#include <memory>
#include <string>

#include "mayhem/store/group_commit.hpp"

namespace mayhem {

class SqliteStore final : public GroupCommitStore {
 public:
  // Opens (creating when missing) the database and its schema, checks it is writable; throws
  // StoreError with a one-line reason otherwise. Transient failures are retried for `retry_for`.
  SqliteStore(std::string path, BatchPool& batches, const Clock& clock,
              std::shared_ptr<spdlog::logger> log, Nanos retry_for = kDefaultStoreRetryFor,
              bool group_commit = true);
  const char* kind() const override { return "sqlite"; }

  // The schema (also in README.md): one row per message_id.
  static const char* schema();
};

}  // namespace mayhem
