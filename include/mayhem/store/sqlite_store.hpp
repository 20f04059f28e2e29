// The SQLite store: each saved message becomes one row of table `saves`, keyed by message_id.
// One writer thread owns the connection (WAL mode, synchronous=FULL; another connection's lock is
// waited for up to 5 s, and at shutdown no later than the shutdown deadline); the save
// stage only appends message pointers to its queue (one lock per batch of up to 128). The writer
// takes everything queued and writes it in ONE transaction (group commit: the longer a commit
// takes, the more the next one carries), then hands the completions back through the sink.
// Idempotent: `INSERT ... ON CONFLICT(message_id) DO NOTHING`, so a redelivered message never
// adds a row (it counts as a duplicate and as a successful save). Settlements (acked/nacked) are
// queued by settle and written by the same writer as UPDATEs in the next transaction.
// Use: through the Store interface (store.hpp); `SqliteStore` directly in tests and benchmarks.
#pragma once

#include <memory>
#include <string>

#include "mayhem/store/store.hpp"

namespace mayhem {

class SqliteStore final : public Store {
 public:
  // Opens (creating when missing) the database and its schema, checks it is writable; throws
  // StoreError with a one-line reason otherwise.
  SqliteStore(std::string path, BatchPool& batches, const Clock& clock,
              std::shared_ptr<spdlog::logger> log);
  ~SqliteStore() override;
  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

  void start(SaveSink sink) override;
  Batch* save(Message* const* msgs, std::size_t n) override;
  void settled(Message* const* msgs, std::size_t n) override;
  bool cancel_saves(Nanos give_up_at) override;
  bool close(Nanos give_up_at) override;
  using Store::close;
  StoreStats stats() const override;
  const char* kind() const override { return "sqlite"; }

  // The schema (also in README.md): one row per message_id.
  static const char* schema();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mayhem
