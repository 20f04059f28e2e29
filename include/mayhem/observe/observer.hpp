// The one hook profilers plug into (in the spirit of Taskflow's observers): the pipeline calls
// `on_entry`/`on_exit` around every stage body (the stages: mayhem/stage.hpp) with the batch it
// works on (message pointers when the stage has them, else null), consume reports each pull with
// `on_pull`, and `MAYHEM_ZONE` (mayhem/observe/zone.hpp) marks named zones inside stage bodies.
// With no observer installed the pipeline pays one predictable branch per batch (and per zone).
// Use: derive from `Observer` (e.g. `Profiler`, mayhem/observe/profiler.hpp), pass it in
// `Service::Deps::observer`.
#pragma once

#include <cstdint>

#include "mayhem/stage.hpp"

namespace mayhem {

struct Message;
struct ZoneSite;

class Observer {
 public:
  virtual ~Observer() = default;
  // `msgs` (null for publish, consume and lease) points at the `items` messages of the batch; it
  // is valid during on_entry only (the body may release the batch before on_exit). A stage
  // entered while another stage body runs on the same thread (a zero-delay completion, run
  // inline by its submit) handles a subset of that body's messages; the trace sampler relies on
  // it to skip re-checking such batches.
  virtual void on_entry(Stage stage, std::uint32_t items, Message* const* msgs) = 0;
  virtual void on_exit(Stage stage, std::uint32_t items) = 0;
  // consume pulled these messages out of the source (valid during the call only).
  virtual void on_pull(Message* const* /*msgs*/, std::uint32_t /*n*/) {}
  // A zone (MAYHEM_ZONE) inside a stage body starts / ends on this thread.
  virtual void on_zone_entry(const ZoneSite& /*site*/) {}
  virtual void on_zone_exit(const ZoneSite& /*site*/) {}
};

// RAII helper used by the pipeline; free when `observer` is null.
class ObserveScope {
 public:
  ObserveScope(Observer* o, Stage s, std::uint32_t items, Message* const* msgs = nullptr)
      : o_(o), s_(s), items_(items) {
    if (o_) o_->on_entry(s_, items_, msgs);
  }
  ~ObserveScope() {
    if (o_) o_->on_exit(s_, items_);
  }
  ObserveScope(const ObserveScope&) = delete;
  ObserveScope& operator=(const ObserveScope&) = delete;

  // The body learned how many items it handled (publish: messages made); reported at exit.
  void set_items(std::uint32_t n) { items_ = n; }

 private:
  Observer* o_;
  Stage s_;
  std::uint32_t items_;
};

}  // namespace mayhem
