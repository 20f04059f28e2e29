// Test helpers for the stores (SQLite, PostgreSQL): a batch of made-up messages to save, and a
// sink that counts the saves a store completes and waits for a number of them.
// Use: `test::SaveCompletions c(batches); store.start(c.sink()); test::SaveMessages m(1000);
// m.save(store); REQUIRE(c.wait_for(1000));`
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "mayhem/message.hpp"
#include "mayhem/store/store.hpp"

namespace mayhem::test {

// Counts the saves a store completes (failed, cancelled) and waits for a number of them.
struct SaveCompletions {
  std::mutex mutex;
  std::condition_variable cv;
  std::size_t done = 0, failed = 0, cancelled = 0;
  BatchPool& batches;
  explicit SaveCompletions(BatchPool& b) : batches(b) {}

  SaveSink sink() {
    return [this](Batch* b) {
      {
        std::lock_guard lock(mutex);
        for (std::uint32_t i = 0; i < b->size; ++i) {
          ++done;
          if (b->cancelled) ++cancelled;
          if (b->msgs[i]->save_failed) ++failed;
        }
      }
      batches.release_one(b);
      cv.notify_all();
    };
  }
  bool wait_for(std::size_t n, std::chrono::seconds within = std::chrono::seconds(30)) {
    std::unique_lock lock(mutex);
    return cv.wait_for(lock, within, [&] { return done >= n; });
  }
};

// `n` messages made by a seeded factory, saved in batches of up to 128 as the save stage does.
struct SaveMessages {
  std::vector<Message> msgs;
  std::vector<Message*> ptrs;
  explicit SaveMessages(std::size_t n, std::uint64_t seed) : msgs(n), ptrs(n) {
    MessageFactory f(seed);
    for (std::size_t i = 0; i < n; ++i) {
      f.fill(msgs[i], i, 0);
      ptrs[i] = &msgs[i];
    }
  }
  void save(Store& store) {
    for (std::size_t i = 0; i < ptrs.size(); i += kBatchCapacity)
      store.save(ptrs.data() + i, std::min<std::size_t>(kBatchCapacity, ptrs.size() - i));
  }
  // Marks every message saved and then acked (and restarted) or nacked, as settle leaves them,
  // and records the settlements.
  void settle(Store& store, bool ack) {
    for (Message& m : msgs) {
      m.saved = true;
      if (ack) {
        m.acked = true;
        m.restarted = true;
      } else {
        m.nacked = true;
      }
    }
    store.settled(ptrs.data(), ptrs.size());
  }
  // The same message ids saved again, as a redelivery does.
  void redeliver(Store& store) {
    for (Message& m : msgs) m.reset_state();
    save(store);
  }
};

}  // namespace mayhem::test
