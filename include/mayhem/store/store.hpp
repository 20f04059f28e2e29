// The store: where the save stage writes each message (the reference's `save()` into a database).
// `--store memory` is the null object (as spdlog's null_sink), `MemoryStore` (memory_store.hpp):
// its save is the reference's mocked database call, simulated like restart and cleanup
// (io/simulated_io.hpp: random latency, --fail-rate); it writes nothing and counts nothing.
// `--store sqlite:PATH` opens a real SQLite database (sqlite_store.hpp), `--store
// postgres://...` a real PostgreSQL one (postgres_store.hpp): one writer thread, group commit,
// idempotent on message_id, transient failures retried (group_commit.hpp). Completed saves come
// back in batches through a sink, exactly as the IoService delivers them, so the graph keeps its
// shape. With a real database a message is acked only once its row is committed
// (`ack_needs_row`): settle nacks a message whose save failed or was cancelled; and its ack is
// recorded first (`record_acks`: the row says `acked` before the broker hears it), so a worker
// that dies between the two leaves a row the next delivery settles again, never an acked message
// whose row says `saved`.
// Use: `auto store = open_store(spec, batches, clock, log, sim);` (never null; throws StoreError
// with a one-line reason when the database cannot be used), then `store->start(saved, recorded)`,
// `store->save(msgs, n)` from the save stage, `store->record_acks(msgs, n)` (a real database) and
// `store->settled(msgs, n)` (the rest) from settle; at shutdown
// `cancel_saves(give_up_at)` before waiting for the graph, `close(give_up_at)` after (both bounded
// by the shutdown deadline, on the clock given to open_store).
#pragma once

#include <spdlog/logger.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "mayhem/clock.hpp"
#include "mayhem/io/simulated_io.hpp"
#include "mayhem/message.hpp"

namespace mayhem {

// How long a real store retries a transient failure before the saves fail (--store-retry-for).
inline constexpr Nanos kDefaultStoreRetryFor = 30'000'000'000;

struct StoreSpec {
  enum class Kind { kMemory, kSqlite, kPostgres };
  Kind kind = Kind::kMemory;
  std::string path;  // kSqlite: the database file; kPostgres: the whole postgres://... URL
  // Not parsed: the service sets them (--store-retry-for, --store-group-commit).
  Nanos retry_for = kDefaultStoreRetryFor;
  bool group_commit = true;  // false: one transaction per save
};

// "memory", "sqlite:PATH", "postgres://..." or "postgresql://..."; nullopt (and `err` set to one
// line) for anything else.
std::optional<StoreSpec> parse_store_spec(std::string_view text, std::string& err);

// The database cannot be used (cannot open or create it, read-only, not a database, no WAL;
// cannot connect, authenticate, create the table or write to it).
struct StoreError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct StoreStats {
  std::uint64_t rows_inserted = 0;   // saves that created a row
  std::uint64_t duplicates = 0;      // saves whose message_id already had a row (redeliveries)
  std::uint64_t write_failures = 0;  // saves that failed (reported as save failures)
  std::uint64_t transactions = 0;    // committed transactions (group commits)
  std::uint64_t outcomes = 0;        // settlements recorded (acked/nacked updates written)
};

// No deadline (cancel_saves, close): wait as long as it takes.
inline constexpr Nanos kNoDeadline = INT64_MAX;

// Completed saves. The sink takes ownership of the batch; batch->cancelled says the saves were
// cancelled (shutdown) and not written; a message whose write failed has `save_failed` set.
using SaveSink = std::function<void(Batch*)>;
// Recorded acks (record_acks), handed back in batches the sink owns: batch->cancelled says the
// outcome was not committed (the shutdown, or the database stayed away past the retries): those
// are to be nacked, not acked.
using RecordSink = std::function<void(Batch*)>;

class Store {
 public:
  virtual ~Store() = default;
  // Starts the writer. Saves submitted before are queued, and written by its first transaction.
  // `recorded` receives what record_acks recorded (a real database only).
  virtual void start(SaveSink saved, RecordSink recorded) = 0;
  void start(SaveSink saved) { start(std::move(saved), RecordSink{}); }
  // Saves `n` (at most kBatchCapacity) in-flight messages; each completes later through the sink,
  // or at once: those come back in a batch (the caller owns it and completes them inline, as
  // the sink would); null when none did. Thread-safe.
  virtual Batch* save(Message* const* msgs, std::size_t n) = 0;
  // At completion, after fault injection: whether the save of `m` failed in the simulated
  // database (the memory store's --fail-rate draw, raised by the reference's mock at the same
  // point). A real database reports a failed write with `save_failed` instead, never here.
  bool simulated_failure(const Message& m) const {
    return simulated_ && simulated_->fails(m, Op::kSave, 0);
  }
  // Whether an ack needs the message's row: true for a real database, where a message whose save
  // failed (or was cancelled) is nacked, so that it comes back and is saved later; false for the
  // memory store, where a failed save is logged and acked, as in the reference.
  bool ack_needs_row() const { return simulated_ == nullptr; }
  // Records how `n` messages settled (acked or nacked, restarted or not). Copies what it needs:
  // the messages may be reused as soon as it returns. Thread-safe.
  virtual void settled(Message* const* msgs, std::size_t n) = 0;
  // A real database (ack_needs_row): records `n` saved messages as `acked` (the outcome is
  // committed with the next group commit) and only then hands them back through the recorded
  // sink, for settle to ack them: one batch per call (n is at most kBatchCapacity). The messages
  // must stay alive until then. A row once `acked` stays `acked`: a late settlement of an earlier
  // delivery does not undo it. Thread-safe.
  virtual void record_acks(Message* const* msgs, std::size_t n) = 0;
  // Shutdown, before waiting for the graph: saves not yet written complete now as cancelled, and
  // so do later ones. A transaction waiting for another connection's lock gives up at once (its
  // saves complete as cancelled, its recorded acks come back cancelled); one being written
  // finishes and delivers first: this waits for it until `give_up_at`, and returns false if it had
  // not finished by then (its saves then complete whenever it does). From now on every write gets
  // one try, without waiting for a lock or retrying: the acks the drain still records either
  // commit at once or come back cancelled (nacked), so the drain never waits on the database.
  virtual bool cancel_saves(Nanos give_up_at) = 0;
  // Shutdown, after the graph is idle: writes the settlements still queued (one try, after
  // cancel_saves), stops the writer and closes the database. A writer still busy shortly after
  // `give_up_at` (20 ms) is left behind (detached, its state kept alive, not closed): returns
  // false. Idempotent (the destructor calls it without a deadline).
  virtual bool close(Nanos give_up_at) = 0;
  bool close() { return close(kNoDeadline); }
  virtual StoreStats stats() const = 0;
  virtual const char* kind() const = 0;

 protected:
  // The memory store's simulated database; null for a real one.
  explicit Store(const SimulatedIo* simulated = nullptr) : simulated_(simulated) {}

 private:
  const SimulatedIo* simulated_;
};

// A MemoryStore over `sim` for memory; throws StoreError when the database cannot be used.
std::unique_ptr<Store> open_store(const StoreSpec& spec, BatchPool& batches, const Clock& clock,
                                  std::shared_ptr<spdlog::logger> log, SimulatedIo& sim);

}  // namespace mayhem
