#include "mayhem/observe/live_observer.hpp"

namespace mayhem {

LiveObserver::LiveObserver(StageCollector& collector, Observer* also) : collector_(collector) {
  collector_.also(also);
}

LiveObserver::~LiveObserver() {
  collector_.detach();
  collector_.also(nullptr);
}

std::array<std::uint64_t, kOpCount> LiveObserver::io_in_flight() const {
  // Completions first: "submitted and not completed" never goes negative.
  constexpr Stage kDone[kOpCount] = {Stage::kSaved, Stage::kRestarted, Stage::kSettle};
  std::array<std::uint64_t, kOpCount> done{}, n{};
  for (int op = 0; op < kOpCount; ++op) done[op] = collector_.items_done(kDone[op]);
  for (int op = 0; op < kOpCount; ++op) {
    const std::uint64_t in = collector_.items_done(kOps[op]);
    n[op] = in > done[op] ? in - done[op] : 0;
  }
  return n;
}

}  // namespace mayhem
