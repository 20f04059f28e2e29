// The unit of work: the reference's PubSubMessage, plus the two carriers that move messages
// through the graph in bulk. A `Message` lives in a pool, from publish to its settle; a `Lot` is
// the batch that consume pulled together, with each message's lease state (the Lot object lives
// until every message is settled and the lease thread lets go); a `Batch` is a transient group of
// message pointers passed between graph nodes.
// Use: sources fill messages with `MessageFactory`; stages read identity fields freely and write
// only the fields their stage owns (see the comments on each field).
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bitset>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "mayhem/clock.hpp"
#include "mayhem/pool.hpp"
#include "mayhem/rng.hpp"

namespace mayhem {

struct Lot;

enum class LeaseState : std::uint8_t {
  kActive,     // in flight, up to its settle; the lease thread may extend it
  kExtending,  // the lease thread is extending it right now (it owns the broker handle)
  kDone,       // settled (acked or nacked): no more extensions; settle owns the message
};

// Two cache lines, split by who touches them. The first holds everything the stages read or
// write while the message is in flight (consume, save, restart, settle and the lease thread touch
// nothing else with logging off); the second holds the identity, written once by the source and
// read for log lines and by the broker. Messages are recycled through the pool and hop between
// cores, so each line a stage touches is usually a transfer from another core's cache: keeping
// the stages to one line halves those (perf showed the stage loops waiting on them).
struct alignas(64) Message {
  // ---- line 1: in-flight state ----------------------------------------------------------------
  // Written by the source before hand-off, read-only while in flight.
  std::uint64_t seed = 0;  // per-message random stream for simulated I/O
  Nanos published_ns = 0;
  void* handle = nullptr;  // broker handle (e.g. a natsMsg*); null for the in-process pub/sub
  Lot* lot = nullptr;      // the lot that owns this message while in flight (set by consume)

  // The lease: a broker source stamps the deadline at delivery (and extends it while the message
  // waits to be pulled); consume stamps it when it is 0 (the in-process pub/sub); then the lease
  // thread.
  Nanos deadline_ns = 0;
  std::uint32_t extended_cnt = 0;  // idem (consume counts its first extension)

  // Completion counting for the reference's gather(save, restart): each branch decrements once;
  // the branch that reaches zero handles the results.
  std::atomic<std::uint8_t> pending{0};
  // Its place in `lot` (set by consume with the lot): its lease state is lot->lease[lot_slot].
  std::uint8_t lot_slot = 0;

  // Each flag is written by exactly one stage (distinct bytes, so concurrent stages never race)
  // and read after `pending` reaches zero (acquire).
  bool saved = false;                 // save stage
  bool save_failed = false;           // save stage
  bool save_cancelled = false;        // save stage
  bool restarted = false;             // restart stage
  bool restart_failed = false;        // restart stage (after the last retry)
  bool restart_cancelled = false;     // restart stage
  bool acked = false;                 // settle stage
  bool nacked = false;                // settle stage or shutdown
  std::uint8_t restart_attempts = 0;  // restart stage

  // ---- line 2: identity, written by the source before hand-off, read-only while in flight -----
  alignas(64) char instance_name[12] = {};  // "cattle-xxxx", NUL-terminated
  std::array<std::uint8_t, 16> id = {};     // uuid4
  std::uint64_t seq = 0;                    // position in the publish order

  void reset_state() {
    pending.store(0, std::memory_order_relaxed);
    lot_slot = 0;
    saved = save_failed = save_cancelled = false;
    restarted = restart_failed = restart_cancelled = false;
    acked = nacked = false;
    restart_attempts = 0;
    extended_cnt = 0;
    deadline_ns = 0;
    handle = nullptr;
    lot = nullptr;
  }

  std::string id_string() const;  // canonical 8-4-4-4-12 form
  std::string hostname() const;   // <instance_name>.example.net (allocates; see Host)
};
static_assert(sizeof(Message) == 128, "two cache lines");
static_assert(offsetof(Message, instance_name) == 64, "the in-flight state fits the first line");

// Prefetch hints for loops over a batch. Messages are recycled through the pool and move between
// cores, so the lines a stage is about to touch usually sit in another core's cache; asking a few
// messages ahead overlaps those transfers. `prefetch_all` before fill() (both lines, for write),
// `prefetch_state` before a stage writes its flags (the first line only).
inline void prefetch_all(const Message* m) {
  __builtin_prefetch(m, 1, 3);
  __builtin_prefetch(reinterpret_cast<const char*>(m) + 64, 1, 3);
}
inline void prefetch_state(const Message* m) {
  __builtin_prefetch(m, 1, 3);
}
inline constexpr std::uint32_t kPrefetchAhead = 8;
// The first kPrefetchAhead messages' state lines (a loop then asks for message i + kPrefetchAhead).
inline void prefetch_ahead(Message* const* msgs, std::uint32_t n) {
  for (std::uint32_t i = 0; i < n && i < kPrefetchAhead; ++i) prefetch_state(msgs[i]);
}
// Calls f(message) for msgs[0, n) in order, each stage's loop over its batch: the state lines
// are asked for kPrefetchAhead messages ahead.
template <class F>
inline void for_each_prefetched(Message* const* msgs, std::uint32_t n, F&& f) {
  prefetch_ahead(msgs, n);
  for (std::uint32_t i = 0; i < n; ++i) {
    if (i + kPrefetchAhead < n) prefetch_state(msgs[i + kPrefetchAhead]);
    f(*msgs[i]);
  }
}

inline constexpr std::uint32_t kBatchCapacity = 128;

struct Batch {
  std::uint32_t size = 0;
  bool cancelled = false;  // set by an I/O service: every operation in this batch was cancelled
  Lot* owner = nullptr;    // non-null: this is a lot's own view, released through the lot
  Message* msgs[kBatchCapacity];

  bool full() const { return size == kBatchCapacity; }
  void push(Message* m) { msgs[size++] = m; }
};

// A lot does not own its messages' memory: settle hands each message back to the pool as soon as
// it is settled (Leases::done first), so `batch.msgs[i]` is only valid while slot i's lease is not
// done. Holding every message until its lot's slowest one settled kept ~2.6x the messages in
// flight in the pool at the reference's latency profile.
struct Lot {
  Batch batch;  // the messages consume pulled together; batch.owner == this

  // ---- one cache line, the one settle touches: references and the leases --------------------
  // Messages not yet settled, plus stages still reading `batch`. The thread that brings it to
  // zero releases the lot (LeaseManager::release_lot).
  alignas(64) std::atomic<std::uint32_t> refs{0};
  // Who owns the Lot object: kUnseen until the lease thread takes it (kTracked). A lot released
  // while still kUnseen is only marked kReleasedEarly; the lease thread recycles it when the
  // registration arrives.
  enum class Tracking : std::uint8_t { kUnseen, kTracked, kReleasedEarly };
  std::atomic<Tracking> tracking{Tracking::kUnseen};
  // Each message's lease, two bits per slot (slot s: word s / 32, bits 2 (s % 32) and up): the
  // low bit is set while the lease thread extends it (kExtending: it reads the message), the high
  // bit once settle ended the lease (kDone: the message is no longer the lot's to read). Both set:
  // settle waits for the extension to end. Packed so that a whole lot is taken for an extension
  // in a few CASes, and settle finds them on the line it decrements `refs` on.
  static constexpr std::uint32_t kLeaseWords = kBatchCapacity / 32;
  std::atomic<std::uint64_t> lease_bits[kLeaseWords];

  // ---- owned by the lease thread ----------------------------------------------------------------
  // Except `due`: consume stores the lot's earliest message deadline there before register_lot
  // (the lease thread reads it once, at registration).
  Nanos due = 0;                       // when the lease thread looks at the lot next (its heap key)
  Nanos round_due = 0;                 // when the whole lot is due for its next extension
  std::bitset<kBatchCapacity> failed;  // messages whose last extension failed (retried alone)
  std::uint32_t heap_index = 0;        // position in the lease thread's schedule
  std::uint32_t failed_passes = 0;     // passes with a failed extension, while tracked
  std::uint8_t backoff = 0;            // consecutive passes with a failure: retry after poll << k

  // Consume, per pulled message: `m` is this lot's message `slot` (batch.msgs[slot] == &m).
  void attach(Message& m, std::uint32_t slot) {
    m.lot = this;
    m.lot_slot = static_cast<std::uint8_t>(slot);
  }
  // Every slot's lease active (register_lot, before the lot is handed on).
  void lease_all() {
    for (auto& w : lease_bits) w.store(0, std::memory_order_relaxed);
  }
  // Slot `slot`'s lease state (for tests and checks; racy while the lot is in use).
  LeaseState lease_state(std::uint32_t slot) const {
    const std::uint64_t b =
        lease_bits[slot / 32].load(std::memory_order_acquire) >> (2 * (slot % 32));
    return (b & 1) != 0   ? LeaseState::kExtending
           : (b & 2) != 0 ? LeaseState::kDone
                          : LeaseState::kActive;
  }
};
static_assert(kBatchCapacity % 32 == 0, "Lot::lease_bits holds 32 slots a word");
static_assert(offsetof(Lot, lease_bits) + sizeof(Lot::lease_bits) - offsetof(Lot, refs) <= 64,
              "refs and the leases share a line");
static_assert(kBatchCapacity <= 256, "Message::lot_slot is one byte");

// Calls f(message) for msgs[0, n) in order, for a loop that also writes each message's lease
// bits on its lot's line (settle): both are cold (a message settles seconds after its last visit,
// its lot's line was last written by other messages' settles, on either core). The message's
// state line is asked for 2 x kPrefetchAhead messages ahead, its lot's line kPrefetchAhead ahead,
// through `lot`, read from the state line asked for earlier.
template <class F>
inline void for_each_prefetched_with_lot(Message* const* msgs, std::uint32_t n, F&& f) {
  constexpr std::uint32_t kLotAhead = kPrefetchAhead, kMessageAhead = 2 * kPrefetchAhead;
  for (std::uint32_t i = 0; i < n && i < kMessageAhead; ++i) prefetch_state(msgs[i]);
  for (std::uint32_t i = 0; i < n && i < kLotAhead; ++i)
    __builtin_prefetch(&msgs[i]->lot->refs, 1, 3);
  for (std::uint32_t i = 0; i < n; ++i) {
    if (i + kMessageAhead < n) prefetch_state(msgs[i + kMessageAhead]);
    if (i + kLotAhead < n) __builtin_prefetch(&msgs[i + kLotAhead]->lot->refs, 1, 3);
    f(*msgs[i]);
  }
}

using MessagePool = Pool<Message>;
using BatchPool = Pool<Batch>;
using LotPool = Pool<Lot>;

// An empty, unowned batch from the pool (`cancelled` as given): every stage and I/O service that
// hands messages on in a fresh batch starts from here.
inline Batch* acquire_batch(BatchPool& pool, bool cancelled = false) {
  Batch* b = pool.acquire_one();
  b->size = 0;
  b->cancelled = cancelled;
  b->owner = nullptr;
  return b;
}

// The canonical 8-4-4-4-12 text of a uuid into a caller's buffer (NUL-terminated), without
// allocating; Message::id_string() is the allocating form.
void uuid_text(const std::array<std::uint8_t, 16>& id, char (&out)[37]);

// A message's host name, `<instance_name>.example.net`, for log lines and the store:
// `log->info("Restarted {}", Host{m})` formats it on the stack, without allocating.
struct Host {
  const Message& m;
};

// Makes messages the way the reference's publish() does: instance `cattle-XXXX` (4 chars of
// [a-z0-9]), a uuid4 id, a per-message random stream. Deterministic for a given seed.
class MessageFactory {
 public:
  explicit MessageFactory(std::uint64_t seed) : rng_{seed} {}
  void fill(Message& m, std::uint64_t seq, Nanos now);

 private:
  SplitMix64 rng_;
};

}  // namespace mayhem

template <>
struct fmt::formatter<mayhem::Host> : fmt::formatter<fmt::string_view> {
  template <typename Ctx>
  auto format(const mayhem::Host& h, Ctx& ctx) const {
    constexpr std::string_view domain = ".example.net";
    char buf[sizeof h.m.instance_name + domain.size()];
    const char* name = h.m.instance_name;
    char* p = std::copy(name, name + strnlen(name, sizeof h.m.instance_name), buf);
    p = std::copy(domain.begin(), domain.end(), p);
    return fmt::formatter<fmt::string_view>::format(
        fmt::string_view(buf, static_cast<std::size_t>(p - buf)), ctx);
  }
};

template <>
struct fmt::formatter<mayhem::Message> : fmt::formatter<fmt::string_view> {
  // Assembled on the stack and appended in one piece rather than through a nested format string:
  // this runs for most log lines.
  template <typename Ctx>
  auto format(const mayhem::Message& m, Ctx& ctx) const {
    constexpr std::string_view head = "PubSubMessage(instance_name='", tail = "')";
    char buf[head.size() + sizeof m.instance_name + tail.size()];
    char* p = std::copy(head.begin(), head.end(), buf);
    p = std::copy(m.instance_name,
                  m.instance_name + strnlen(m.instance_name, sizeof m.instance_name), p);
    p = std::copy(tail.begin(), tail.end(), p);
    return fmt::formatter<fmt::string_view>::format(
        fmt::string_view(buf, static_cast<std::size_t>(p - buf)), ctx);
  }
};
