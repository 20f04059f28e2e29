// Where messages come from and where their fate is reported: the pub/sub. Consume pulls from a
// Source; settle acks or nacks back to it; the lease thread extends through it. The embedded
// default is `InProcessPubSub` (a moodycamel queue fed by the publish stage): the only source
// with a publish side; a broker source (NatsSource) keeps the defaults, so the pipeline runs no
// publish stage over it.
// Use: the pipeline holds a `Source&` and nothing else of the source; a broker source implements
// pull, ack, nack, extend, backlog and report, and may override drain / return_unsettled /
// unsettled_at_timeout.
#pragma once

#include <cstddef>
#include <cstdint>

#include "mayhem/message.hpp"

namespace mayhem {

struct Numbers;

class Source {
 public:
  virtual ~Source() = default;
  // Takes up to `max` messages without blocking; returns how many.
  virtual std::size_t pull(Message** out, std::size_t max) = 0;
  virtual void ack(Message* const* msgs, std::size_t n) = 0;
  virtual void nack(Message* const* msgs, std::size_t n) = 0;
  // Lease extension for messages held in LeaseState::kExtending; a no-op where there is no broker.
  virtual void extend(Message* const* msgs, std::size_t n) = 0;
  // Messages waiting to be pulled.
  virtual std::uint64_t backlog() const = 0;
  // Its part of the service's numbers (mayhem/observe/numbers.hpp), when the service gathers
  // them (any thread, any time): the run's scope (in-process or broker), the backlog and what only
  // it knows (peak backlog, malformed, redelivered, unconfirmed acks). Called after the pipeline's
  // counters are read, so it may correct them (a broker counts as acked only what it confirmed).
  virtual void report(Numbers& n) const = 0;
  // Shutdown (main thread): as pull, but safe while a consume task that a timed-out shutdown left
  // behind may still be pulling (a source with per-consumer state uses its own for this).
  virtual std::size_t drain(Message** out, std::size_t max) { return pull(out, max); }
  // Messages that a timed-out shutdown already counted as nacked, settled after all (or drained
  // from the backlog): a broker gets them back as nacks; the in-process pub/sub was told at the
  // timeout (anonymous nacks) and is told nothing more.
  virtual void return_unsettled(Message* const* msgs, std::size_t n) { nack(msgs, n); }
  // Shutdown, when it timed out: `n` messages published and not settled were counted as nacked
  // (their pointers may still be in use). The in-process pub/sub counts them as nacks with no
  // messages (Audit: msgs null); a broker gets them back through return_unsettled or AckWait.
  virtual void unsettled_at_timeout(std::uint64_t /*n*/) {}

  // The publish side (the publish stage, one thread at a time), for a source the service itself
  // publishes into. A source that cannot be published into (a broker) keeps these defaults.
  virtual bool publishable() const { return false; }
  // How many messages publish may add now.
  virtual std::uint64_t free_capacity() const { return 0; }
  virtual void publish(Message* const* /*msgs*/, std::size_t /*n*/) {}
};

}  // namespace mayhem
