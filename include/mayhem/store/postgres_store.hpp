// The PostgreSQL store (`--store postgres://...`, alias `postgresql://`): each saved message
// becomes one row of table `saves` (the SQLite store's columns), keyed by message_id, in a
// database that many processes on many machines share. One connection and one writer thread per
// process (libpq), `synchronous_commit = on` for the session. Group commit (group_commit.hpp):
// everything queued since the last commit is written by ONE statement, in one round trip and one
// transaction: a data-modifying CTE that inserts the saves from arrays (`INSERT ... SELECT FROM
// unnest($1, ...) ON CONFLICT (message_id) DO NOTHING`: idempotent, a redelivered message counts
// as a duplicate) and updates the settlements' rows (a message's ack, else its last settlement; an
// `acked` row stays `acked`), all in message_id order, the arrays in binary format. A
// statement that fails for good (one bad row) is redone row by row, so only the bad rows fail.
// Lost connections, a server restarting, serialization failures and deadlocks are transient:
// retried with a reconnect. At start it connects, creates the table when missing (under an
// advisory lock: processes may race) and checks it may insert and update; otherwise StoreError
// with one line (password redacted).
// Use: through the Store interface (store.hpp); `PostgresStore` directly in tests and benchmarks.
#pragma once

#include <memory>
#include <string>

#include "mayhem/store/group_commit.hpp"

namespace mayhem {

class PostgresStore final : public GroupCommitStore {
 public:
  // `url`: a libpq connection URI (postgres://USER:PASSWORD@HOST:PORT/DB?PARAM=...).
  PostgresStore(const std::string& url, BatchPool& batches, const Clock& clock,
                std::shared_ptr<spdlog::logger> log, Nanos retry_for = kDefaultStoreRetryFor,
                bool group_commit = true);
  const char* kind() const override { return "postgres"; }

  // The schema (PostgreSQL's types; the SQLite store's columns): one row per message_id.
  static const char* schema();
  // `url` with its password replaced by "***", for messages.
  static std::string redact(const std::string& url);
};

}  // namespace mayhem
