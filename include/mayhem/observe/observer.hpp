// The one hook profilers plug into (in the spirit of Taskflow's observers): the pipeline calls
// `on_entry`/`on_exit` around every stage body with the number of messages in the batch. With no
// observer installed the pipeline pays one predictable branch per batch.
// Use: derive from `Observer`, pass it in `Service::Deps::observer`.
#pragma once

#include <cstdint>

namespace mayhem {

enum class Stage : std::uint8_t {
  kPublish,
  kConsume,
  kSave,       // submit saves
  kSaved,      // handle save completions
  kRestart,    // submit restarts
  kRestarted,  // handle restart completions (and retries)
  kCleanup,    // submit cleanups
  kSettle,     // ack / nack
  kLease,      // one tick of the lease thread
  kCount
};

const char* to_string(Stage s);

class Observer {
 public:
  virtual ~Observer() = default;
  virtual void on_entry(Stage stage, std::uint32_t items) = 0;
  virtual void on_exit(Stage stage, std::uint32_t items) = 0;
};

// RAII helper used by the pipeline; free when `observer` is null.
class ObserveScope {
 public:
  ObserveScope(Observer* o, Stage s, std::uint32_t items) : o_(o), s_(s), items_(items) {
    if (o_) o_->on_entry(s_, items_);
  }
  ~ObserveScope() {
    if (o_) o_->on_exit(s_, items_);
  }
  ObserveScope(const ObserveScope&) = delete;
  ObserveScope& operator=(const ObserveScope&) = delete;

 private:
  Observer* o_;
  Stage s_;
  std::uint32_t items_;
};

}  // namespace mayhem
