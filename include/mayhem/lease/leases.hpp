// The pipeline's one view of the lease: consume starts a lot's lease (the message's first
// extension, then `hold` once per lot), settle ends each message's (`done`), and the last
// reference to a lot hands it back (`release`). LeaseManager (lease_manager.hpp) implements it;
// a test may implement it to watch the calls. Per-message work is inline and non-virtual
// (`extend_first`, `log_first_extension`, `done`); the virtual calls are per lot.
// Use: in consume, per message `Leases::extend_first(m, deadline)` (and, at info level,
// `leases.log_first_extension(m)`), then `leases.hold(lot, earliest, n)`; in settle
// `Leases::done(m)` before acking (then the message may go back to the pool);
// `leases.release(lot)` when the lot's last message is settled.
#pragma once

#include <spdlog/logger.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "mayhem/clock.hpp"
#include "mayhem/message.hpp"

namespace mayhem {

class Leases {
 public:
  virtual ~Leases() = default;

  // The reference's extend() runs its first iteration as soon as handling starts: counts it on
  // the message. A broker source stamped the deadline at delivery (its ack timer runs from there,
  // prefetch included): kept; the in-process pub/sub leaves it 0, and it becomes `deadline`.
  static void extend_first(Message& m, Nanos deadline) {
    ++m.extended_cnt;
    if (m.deadline_ns == 0) m.deadline_ns = deadline;
  }
  // The first extension's log line (info level; the caller checked it), as the lease thread
  // words its later ones.
  void log_first_extension(const Message& m) const {
    log_->info("Extended deadline by {} seconds for {}", first_text_, m);
  }
  // Once per lot, after extend_first on its `n` messages: counts those first extensions and
  // starts the lot's lease from `earliest`, the smallest deadline_ns of its messages. Lock-free.
  virtual void hold(Lot* lot, Nanos earliest, std::uint32_t n) = 0;
  // The lot's messages are all settled (and back in the pool, through settle) and no stage reads
  // its batch: the lease lets the Lot go (recycled on the lease thread). Lock-free.
  virtual void release(Lot* lot) = 0;
  // Settle, before it acks or nacks: the message needs no more extensions; waits out an
  // extension in progress, so the caller owns the message (its broker handle, and its memory: it
  // may go back to the pool) afterwards. The lease thread holds kExtending only while it extends
  // one lot (and runs the broker hook, in bulk). The state lives in the message's lot
  // (Lot::lease_bits). Idempotent.
  static void done(Message& m) {
    std::atomic<std::uint64_t>& word = m.lot->lease_bits[m.lot_slot / 32];
    const unsigned shift = 2 * (m.lot_slot % 32);
    const std::uint64_t was = word.fetch_or(std::uint64_t{2} << shift, std::memory_order_acq_rel);
    if (((was >> shift) & 1) == 0) return;
    // Being extended: the lease thread clears the bit (release) when it is done with the message.
    while (((word.load(std::memory_order_acquire) >> shift) & 1) != 0) {
    }
  }

 protected:
  // `first_text`: the extension amount as the log line prints it (e.g. "3").
  Leases(std::shared_ptr<spdlog::logger> log, std::string first_text)
      : log_(std::move(log)), first_text_(std::move(first_text)) {}

 private:
  std::shared_ptr<spdlog::logger> log_;
  const std::string first_text_;
};

}  // namespace mayhem
