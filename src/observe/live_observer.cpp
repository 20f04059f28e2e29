#include "mayhem/observe/live_observer.hpp"

#include <thread>

namespace mayhem {

namespace {
std::atomic<std::uint64_t> g_next_live_id{1};
// The mark this thread used last, and whose it is: a hit skips the ETS lookup. Keyed by a unique
// id, never by address, so a later LiveObserver at the same address cannot pick up a stale mark.
struct LastMark {
  std::uint64_t owner = 0;
  void* mark = nullptr;
};
thread_local LastMark t_last_mark;
}  // namespace

LiveObserver::LiveObserver(StageCollector& collector, Observer* also)
    : collector_(collector),
      also_(also),
      id_(g_next_live_id.fetch_add(1, std::memory_order_relaxed)) {}

LiveObserver::~LiveObserver() {
  detach();
}

LiveObserver::Busy& LiveObserver::busy() {
  if (t_last_mark.owner == id_) [[likely]]
    return *static_cast<Busy*>(t_last_mark.mark);
  return busy_slow();
}

LiveObserver::Busy& LiveObserver::busy_slow() {
  Busy*& mine = local_.local();
  if (mine == nullptr) {  // first capture hook on this thread: once per thread
    auto fresh = std::make_unique<Busy>();
    mine = fresh.get();
    std::lock_guard lock(mutex_);
    marks_.push_back(std::move(fresh));
  }
  t_last_mark = LastMark{id_, mine};
  return *mine;
}

void LiveObserver::entry_all(Stage stage, std::uint32_t items, Message* const* msgs) {
  collector_.on_entry(stage, items, msgs);
  if (also_) also_->on_entry(stage, items, msgs);
  if (attached_.load(std::memory_order_relaxed))
    forward([&](Observer& o) { o.on_entry(stage, items, msgs); });
}

void LiveObserver::exit_all(Stage stage, std::uint32_t items) {
  if (attached_.load(std::memory_order_relaxed))
    forward([&](Observer& o) { o.on_exit(stage, items); });
  if (also_) also_->on_exit(stage, items);
  collector_.on_exit(stage, items);
}

void LiveObserver::pull_all(Message* const* msgs, std::uint32_t n) {
  collector_.on_pull(msgs, n);
  if (also_) also_->on_pull(msgs, n);
  if (attached_.load(std::memory_order_relaxed)) forward([&](Observer& o) { o.on_pull(msgs, n); });
}

void LiveObserver::zone_entry_all(const ZoneSite& site) {
  collector_.on_zone_entry(site);
  if (also_) also_->on_zone_entry(site);
  if (attached_.load(std::memory_order_relaxed))
    forward([&](Observer& o) { o.on_zone_entry(site); });
}

void LiveObserver::zone_exit_all(const ZoneSite& site) {
  if (attached_.load(std::memory_order_relaxed))
    forward([&](Observer& o) { o.on_zone_exit(site); });
  if (also_) also_->on_zone_exit(site);
  collector_.on_zone_exit(site);
}

bool LiveObserver::attach(Observer* o) {
  Observer* none = nullptr;
  return o != nullptr && attached_.compare_exchange_strong(none, o, std::memory_order_seq_cst);
}

std::array<std::uint64_t, kOpCount> LiveObserver::io_in_flight() const {
  // Completions first: "submitted and not completed" never goes negative.
  constexpr Stage kDone[kOpCount] = {Stage::kSaved, Stage::kRestarted, Stage::kSettle};
  std::array<std::uint64_t, kOpCount> done{}, n{};
  for (int op = 0; op < kOpCount; ++op) done[op] = collector_.items_entered(kDone[op]);
  for (int op = 0; op < kOpCount; ++op) {
    const std::uint64_t in = collector_.items_entered(kOps[op]);
    n[op] = in > done[op] ? in - done[op] : 0;
  }
  return n;
}

void LiveObserver::detach() {
  if (attached_.exchange(nullptr, std::memory_order_seq_cst) == nullptr) return;
  // A thread that registers its mark after this copy registers it after the exchange above (the
  // mutex orders the two), so its load sees null: only the marks copied here can be inside.
  std::vector<Busy*> marks;
  {
    std::lock_guard lock(mutex_);
    for (const auto& m : marks_) marks.push_back(m.get());
  }
  for (Busy* m : marks) {
    // A hook is a few hundred nanoseconds; a thread preempted inside one is waited for.
    for (int spins = 0; m->inside.load(std::memory_order_seq_cst) != 0; ++spins) {
      if (spins < 64)
        std::this_thread::yield();
      else
        std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
}

}  // namespace mayhem
