// What the real database stores (SQLite, PostgreSQL) share: one writer thread per store that
// group-commits, retries transient failures, and completes the saves through the sink.
// The save stage only appends message pointers to a queue (one lock per batch of up to 128); the
// writer takes everything queued (saves and settlements) and hands it to its `StoreBackend` as ONE
// transaction (group commit: the longer a commit takes, the more the next one carries), then
// delivers the completions in batches through the sink, and the acks it recorded (record_acks)
// through the recorded sink. A transient failure (connection lost,
// server restarting, lock timeout, serialization failure, deadlock) is retried with backoff
// (50 ms doubling to 1 s) and a reconnect for up to `retry_for`; when that runs out, the saves
// complete as failed (`save_failed`: the pipeline nacks them, never acks). The shutdown interrupts
// the retries: those saves complete as cancelled (nacked).
// Use: a store derives from `GroupCommitStore`, handing it the backend it opened (throwing
// StoreError when the database cannot be used); the backend's `write` is called on the writer
// thread only.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "mayhem/store/store.hpp"

namespace mayhem {

// How one message settled, as the writer records it (an UPDATE of its row).
struct Settlement {
  std::array<std::uint8_t, 16> id;
  std::int64_t settled_ms;  // unix ms
  bool acked;
  bool restarted;
};

// What one write committed.
struct WriteCounts {
  std::uint64_t inserted = 0, duplicates = 0, failed = 0, recorded = 0, transactions = 0;
  // Set when the settlements (some or all) failed for good and were not committed: acks waiting
  // for them (record_acks) are nacked instead.
  bool settlements_lost = false;
};

// One database connection, used by the writer thread (and by the constructor that opens it).
class StoreBackend {
 public:
  enum class Result {
    kDone,       // committed, or failed for good: those saves have `save_failed` set
    kTransient,  // nothing is known to be committed: to be retried (after reconnect())
    kGaveUp,     // gave up waiting for another connection because of the shutdown: not written
  };
  virtual ~StoreBackend() = default;
  // One group commit of `saves` (their `save_failed` is clear on entry) and `done`.
  virtual Result write(const std::vector<Message*>& saves, const std::vector<Settlement>& done,
                       WriteCounts& counts) = 0;
  // After a transient failure, before the next try; a failure shows in that next write.
  virtual void reconnect() {}
  // The last error, one line.
  virtual std::string error() const = 0;
  // Releases the connection (the writer has stopped). Idempotent.
  virtual void close() = 0;
  // For log lines and the writer thread's name ("SQLite store", "mayhem-sqlite"), and what start
  // logs (the database, its settings).
  virtual const char* label() const = 0;
  virtual const char* thread_name() const = 0;
  virtual std::string describe() const = 0;

  // Set by the writer, read while waiting for another connection: give up at once (cancel_saves),
  // or at this time on the store's clock (close); a wait that gave up sets `gave_up`.
  std::atomic<bool> give_up_now{false};
  std::atomic<Nanos> give_up_at{kNoDeadline};
  std::atomic<bool> gave_up{false};
};

// Unix milliseconds now (the rows' timestamps).
std::int64_t unix_ms();

class GroupCommitStore : public Store {
 public:
  ~GroupCommitStore() override;
  GroupCommitStore(const GroupCommitStore&) = delete;
  GroupCommitStore& operator=(const GroupCommitStore&) = delete;

  void start(SaveSink saved, RecordSink recorded) override;
  using Store::start;
  Batch* save(Message* const* msgs, std::size_t n) override;
  void settled(Message* const* msgs, std::size_t n) override;
  void record_acks(Message* const* msgs, std::size_t n) override;
  bool cancel_saves(Nanos give_up_at) override;
  bool close(Nanos give_up_at) override;
  using Store::close;
  StoreStats stats() const override;

 protected:
  // `retry_for`: how long transient failures are retried before the saves fail (0: never).
  // `group_commit` false: one transaction per save (to measure group commit against).
  GroupCommitStore(std::unique_ptr<StoreBackend> backend, BatchPool& batches, const Clock& clock,
                   std::shared_ptr<spdlog::logger> log, Nanos retry_for, bool group_commit);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mayhem
