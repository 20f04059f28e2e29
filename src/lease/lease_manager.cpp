#include "mayhem/lease/lease_manager.hpp"
#include "mayhem/log/context.hpp"
#include "mayhem/thread_name.hpp"

#include <algorithm>
#include <bitset>
#include <limits>

namespace mayhem {

namespace {
constexpr Nanos kMinPoll = 100'000;  // 100 us
// Backoff levels: poll << k for k up to this (then the cap decides).
constexpr std::uint8_t kMaxBackoff = 30;

LeaseManager::Config clamped(LeaseManager::Config c) {
  c.extend_interval = LeaseManager::clamp_interval(c.extend_interval);
  c.ack_deadline = LeaseManager::clamp_interval(c.ack_deadline);
  c.poll = std::clamp(c.poll, kMinPoll, c.extend_interval);
  return c;
}
}  // namespace

LeaseManager::LeaseManager(Config cfg, const Clock& clock, std::shared_ptr<spdlog::logger> log,
                           Metrics& metrics, LotPool& lots, ExtendHook hook, Observer* observer)
    : Leases(log, fmt::format("{:g}", nanos_to_seconds(cfg.ack_deadline))),
      cfg_(clamped(cfg)),
      deadline_text_(fmt::format("{:g}", nanos_to_seconds(cfg_.ack_deadline))),
      clock_(clock),
      log_(std::move(log)),
      metrics_(metrics),
      lots_(lots),
      hook_(std::move(hook)),
      observer_(observer),
      // A failed message should get several retries before its deadline: a quarter of the margin
      // the settings leave between a round and the deadline, but never less than poll.
      retry_cap_(std::max(cfg_.poll, (cfg_.ack_deadline - cfg_.extend_interval) / 4)) {
  drain_buf_.resize(256);
  extend_buf_.reserve(kBatchCapacity);
}

LeaseManager::~LeaseManager() {
  stop();
}

// ---- the schedule: a min-heap of (due, lot) -------------------------------------------------

void LeaseManager::heap_place(std::size_t i, Entry e) {
  heap_[i] = e;
  e.lot->heap_index = static_cast<std::uint32_t>(i);
}

void LeaseManager::sift_up(std::size_t i, Entry e) {
  while (i > 0) {
    const std::size_t parent = (i - 1) / 2;
    if (heap_[parent].due <= e.due) break;
    heap_place(i, heap_[parent]);
    i = parent;
  }
  heap_place(i, e);
}

void LeaseManager::sift_down(std::size_t i, Entry e) {
  const std::size_t n = heap_.size();
  for (;;) {
    std::size_t child = 2 * i + 1;
    if (child >= n) break;
    if (child + 1 < n && heap_[child + 1].due < heap_[child].due) ++child;
    if (e.due <= heap_[child].due) break;
    heap_place(i, heap_[child]);
    i = child;
  }
  heap_place(i, e);
}

void LeaseManager::heap_push(Lot* lot) {
  heap_.push_back(Entry{lot->due, lot});
  sift_up(heap_.size() - 1, heap_.back());
}

void LeaseManager::heap_erase(Lot* lot) {
  const std::size_t i = lot->heap_index;
  const Entry last = heap_.back();
  heap_.pop_back();
  if (i == heap_.size()) return;  // it was the last one
  if (i > 0 && last.due < heap_[(i - 1) / 2].due)
    sift_up(i, last);
  else
    sift_down(i, last);
}

void LeaseManager::heap_reschedule_top(Nanos due) {
  Entry e = heap_.front();
  e.due = due;
  e.lot->due = due;
  sift_down(0, e);
}

// ---- lots ---------------------------------------------------------------------------------------

void LeaseManager::recycle_lot(Lot* lot) {
  lot->batch.size = 0;
  lots_.release_one(lot);
}

Nanos LeaseManager::retry_delay(std::uint8_t k) const {
  // poll << k without overflow: stop doubling once past the cap.
  Nanos d = cfg_.poll;
  for (std::uint8_t i = 0; i < k && d < retry_cap_; ++i) d *= 2;
  return std::min(d, retry_cap_);
}

namespace {
// What a fault hook and its log lines may read of a message: a copy, so that neither holds the
// live one (settle may take it, and give it back to the pool, as soon as it is not held).
void copy_identity(const Message& from, Message& to) {
  to.seed = from.seed;
  to.published_ns = from.published_ns;
  to.deadline_ns = from.deadline_ns;
  to.extended_cnt = from.extended_cnt;
  std::copy(std::begin(from.instance_name), std::end(from.instance_name), to.instance_name);
  to.id = from.id;
  to.seq = from.seq;
}
}  // namespace

namespace {
constexpr std::uint64_t kLowBits = 0x5555'5555'5555'5555ULL;  // each slot's kExtending bit

// Takes the slots of `want` (one kExtending bit per slot) that are still active, with one CAS
// (settle may be ending leases meanwhile); returns those taken. Until handed back, settle waits
// for them in Leases::done.
std::uint64_t take(std::atomic<std::uint64_t>& word, std::uint64_t want) {
  std::uint64_t v = word.load(std::memory_order_relaxed);
  std::uint64_t got;
  do {
    got = want & ~(v | v >> 1) & kLowBits;  // active: neither bit set
    if (got == 0) return 0;
  } while (!word.compare_exchange_weak(v, v | got, std::memory_order_acq_rel,
                                       std::memory_order_relaxed));
  return got;
}
void hand_back(std::atomic<std::uint64_t>& word, std::uint64_t taken) {
  if (taken != 0) word.fetch_and(~taken, std::memory_order_release);
}
// The kExtending bits of the slots of word `w` that `slots` has.
std::uint64_t word_mask(const std::bitset<kBatchCapacity>& slots, std::uint32_t w) {
  std::uint64_t m = 0;
  for (std::uint32_t j = 0; j < 32; ++j)
    if (slots.test(w * 32 + j)) m |= std::uint64_t{1} << (2 * j);
  return m;
}
}  // namespace

std::bitset<kBatchCapacity> LeaseManager::inject_faults(Lot* lot,
                                                        const std::bitset<kBatchCapacity>& wanted) {
  std::bitset<kBatchCapacity> failed;
  Message copy;
  for (std::uint32_t i = 0; i < lot->batch.size; ++i) {
    if (!wanted.test(i)) continue;
    std::atomic<std::uint64_t>& word = lot->lease_bits[i / 32];
    const std::uint64_t bit = std::uint64_t{1} << (2 * (i % 32));
    if (take(word, bit) == 0) continue;  // settled: no extension
    copy_identity(*lot->batch.msgs[i], copy);
    hand_back(word, bit);
    if (fault_(copy, copy.extended_cnt + lot->failed_passes)) {
      failed.set(i);
      metrics_.extension_failed.add(1);
      log_->error("Could not extend deadline for {}: injected timer error; retrying", copy);
    }
  }
  return failed;
}

void LeaseManager::extend_lot(Lot* lot, Nanos now, bool round) {
  extend_buf_.clear();
  const std::uint32_t n = lot->batch.size;
  // Which messages this pass tries: the whole lot on a round, else only those that failed.
  std::bitset<kBatchCapacity> wanted = lot->failed;
  if (round) wanted.set();
  // Fault injection first, before any message of the lot is held for its extension, and on
  // copies: a hook that throws or never returns then leaves every message free for mark_done(),
  // and the lot as it was.
  std::bitset<kBatchCapacity> failed;
  if (fault_ && !faults_off_) failed = inject_faults(lot, wanted);
  wanted &= ~failed;  // failed: retried alone, later
  // Hold every wanted message that is not settled yet (a CAS per 32 slots), then extend those.
  std::uint64_t taken[Lot::kLeaseWords] = {};
  const std::uint32_t words = (n + 31) / 32;
  for (std::uint32_t w = 0; w < words; ++w) {
    std::uint64_t want = round && failed.none() ? kLowBits : word_mask(wanted, w);
    if ((w + 1) * 32 > n) want &= (std::uint64_t{1} << (2 * (n - w * 32))) - 1;
    taken[w] = take(lot->lease_bits[w], want);
    for (std::uint64_t t = taken[w]; t != 0; t &= t - 1) {
      const auto i = w * 32 + static_cast<std::uint32_t>(__builtin_ctzll(t)) / 2;
      Message* m = lot->batch.msgs[i];
      if (now > m->deadline_ns) metrics_.late_extensions.add(1);
      m->deadline_ns = now + cfg_.ack_deadline;
      ++m->extended_cnt;
      extend_buf_.push_back(m);
    }
  }
  const auto release_all = [&] {
    for (std::uint32_t w = 0; w < words; ++w) hand_back(lot->lease_bits[w], taken[w]);
  };
  if (hook_ && !extend_buf_.empty()) {
    try {
      hook_(extend_buf_.data(), extend_buf_.size());
    } catch (...) {
      release_all();
      throw;
    }
  }
  // Logged while still held: once handed back, settle may take a message and give it to the
  // pool. (Info level only: then a settle waiting in mark_done() also waits for these lines.)
  if (log_->should_log(spdlog::level::info)) {
    for (Message* m : extend_buf_) {
      LogScope scope(*m, to_string(Stage::kLease));
      log_->info("Extended deadline by {} seconds for {}", deadline_text_, *m);
    }
  }
  release_all();
  lot->failed = failed;
  if (failed.any()) ++lot->failed_passes;
  metrics_.extensions.add(extend_buf_.size());
}

Nanos LeaseManager::tick() {
  return pass(true);
}

Nanos LeaseManager::pass(bool extend) {
  ObserveScope scope(observer_, Stage::kLease, 0);
  const Nanos now = clock_.now();
  std::size_t tracked = tracked_.load(std::memory_order_relaxed);
  // Registrations first. A lot released before the lease thread took it (kReleasedEarly) is
  // recycled at once.
  for (;;) {
    const std::size_t n = registrations_.try_dequeue_bulk(drain_buf_.data(), drain_buf_.size());
    for (std::size_t i = 0; i < n; ++i) {
      Lot* lot = drain_buf_[i];
      auto expected = Lot::Tracking::kUnseen;
      if (!lot->tracking.compare_exchange_strong(expected, Lot::Tracking::kTracked,
                                                 std::memory_order_acq_rel)) {
        recycle_lot(lot);  // released early
        continue;
      }
      // register_lot left the earliest deadline in `due`: the lease runs from there (delivery,
      // for a broker), not from now. Computed so that it cannot overflow.
      const Nanos earliest = std::min(lot->due, now + cfg_.ack_deadline);
      lot->round_due = earliest - cfg_.ack_deadline + cfg_.extend_interval;
      lot->due = lot->round_due;
      lot->failed.reset();
      lot->failed_passes = 0;
      lot->backoff = 0;
      heap_push(lot);
      ++tracked;
    }
    if (n < drain_buf_.size()) break;
  }
  // Releases of tracked lots (a release can only be queued after the lot became kTracked).
  for (;;) {
    const std::size_t n = releases_.try_dequeue_bulk(drain_buf_.data(), drain_buf_.size());
    for (std::size_t i = 0; i < n; ++i) {
      Lot* lot = drain_buf_[i];
      heap_erase(lot);
      recycle_lot(lot);
      --tracked;
    }
    if (n < drain_buf_.size()) break;
  }
  tracked_.store(tracked, std::memory_order_relaxed);
  if (!extend) return now + cfg_.poll;
  // Extend every due lot. On its round (round_due) every message of the lot is extended and the
  // next round is an interval later; between rounds only the messages whose extension failed are
  // retried, after poll x 2^k (capped), never later than the round. Every new due time is later
  // than now (interval >= 1 ms, poll >= 100 us), so the loop ends. The lot is rescheduled only
  // after extend_lot() returns, so an exception leaves it due, as it was.
  while (!heap_.empty() && heap_.front().due <= now) {
    Lot* lot = heap_.front().lot;
    const bool round = lot->round_due <= now;
    extend_lot(lot, now, round);
    if (round) lot->round_due = now + cfg_.extend_interval;
    Nanos due = lot->round_due;
    if (lot->failed.any()) {
      due = std::min(due, now + retry_delay(lot->backoff));
      if (lot->backoff < kMaxBackoff) ++lot->backoff;
    } else {
      lot->backoff = 0;
    }
    heap_reschedule_top(due);
  }
  Nanos next = now + cfg_.poll;
  if (!heap_.empty()) next = std::min(next, heap_.front().due);
  return next;
}

void LeaseManager::start() {
  {
    std::lock_guard lock(wake_mutex_);
    stop_requested_ = false;
    exited_ = false;
  }
  thread_ = std::thread([this] {
    name_this_thread("mayhem-lease");
    run();
  });
}

void LeaseManager::run() {
  for (;;) {
    Nanos next;
    try {
      next = tick();
    } catch (...) {
      // The global handler shuts the service down gracefully; meanwhile this thread goes on
      // freeing released lots (and extending, without injected faults, so a fault that would
      // hit again on every pass does not fire again).
      faults_off_ = true;
      if (on_fatal_)
        on_fatal_(std::current_exception());
      else
        log_->error("Unexpected exception on the lease thread");
      next = clock_.now() + cfg_.poll;
    }
    const Nanos wait = std::max<Nanos>(next - clock_.now(), 100'000);
    std::unique_lock lock(wake_mutex_);
    if (wake_cv_.wait_for(lock, std::chrono::nanoseconds(wait), [&] { return stop_requested_; })) {
      exited_ = true;
      exited_cv_.notify_all();
      return;
    }
  }
}

void LeaseManager::stop() {
  stop_within(std::numeric_limits<Nanos>::max() / 2);
}

bool LeaseManager::stop_within(Nanos timeout) {
  if (abandoned_) return false;
  if (thread_.joinable()) {
    std::unique_lock lock(wake_mutex_);
    stop_requested_ = true;
    wake_cv_.notify_all();
    if (!exited_cv_.wait_for(lock, std::chrono::nanoseconds(timeout), [&] { return exited_; })) {
      // A pass never returned (e.g. --inject timer:hang): leave the thread and everything it
      // may touch behind.
      abandoned_ = true;
      lock.unlock();
      thread_.detach();
      return false;
    }
    lock.unlock();
    thread_.join();
  }
  pass(false);  // free whatever was released since the last pass (no extensions: we are done)
  return true;
}

}  // namespace mayhem
