// Mayhem's built-in profilers, all behind the one Observer interface: a cProfile-style table of
// stages, zones and waits (`--profile`), the same data as a Callgrind file for KCacheGrind
// (`--profile-out`), line_profiler-style zone timings, a Chrome/Perfetto trace (`--trace-out`,
// `--trace-sample`), slow-task warnings and a watchdog for stage bodies that never return
// (`--slow-task-ms`). Collection is per thread and lock-free: each thread owns a slot (found
// through a thread_local) that only it writes, with relaxed atomics so `snapshot()` may read it
// live; reports merge the slots. The code, by concern, in src/observe/profiler/: collector.cpp
// (the hot path), snapshot.cpp, watchdog.cpp (the lease thread's tick), trace_writer.cpp,
// reports.cpp (the report formats of mayhem/observe/profiler/reports.hpp, and the options glue).
// A profiler can also watch a window of a running service (an on-demand capture,
// mayhem/observe/capture.hpp): attached to the pipeline, detached, then `freeze()`: its reports then
// cover exactly the window from its construction to the freeze. Several profilers may be live at
// once (a capture during --profile); each keeps its own per-thread slots.
// Use: `Profiler p(cfg, clock, log);` pass `&p` as the service's observer; after the run print
// `format_table(p.snapshot(), sort)`, `format_lines(...)`, `write_callgrind(...)`,
// `p.write_trace()`.
#pragma once

#include <spdlog/logger.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "mayhem/clock.hpp"
#include "mayhem/observe/observer.hpp"
#include "mayhem/observe/profiler/reports.hpp"
#include "mayhem/observe/zone.hpp"
#include "mayhem/options.hpp"

namespace mayhem {

struct ProfilerConfig {
  bool profile = true;      // stage/zone/wait accounting (the table, Callgrind, line timings)
  bool trace = false;       // record trace events (write them with write_trace)
  double trace_sample = 1;  // fraction of messages whose stages are traced, (0, 1]
  Nanos slow_task = 0;      // > 0: warn about stage bodies longer than this, and stuck ones
  Nanos watchdog_every = 100'000'000;  // the lease thread looks for stuck stages this often
  // Trace events kept per thread (0: no limit); beyond it they are dropped, and counted.
  std::size_t trace_max_events = 0;
};

// How write_trace bounds and labels its output.
struct TraceWriteOptions {
  std::size_t max_events = 0;  // events written at most (0: all); the rest are left out, counted
  // Extra members of the trace's "otherData" object, as JSON text without the braces
  // (`"key":value,...`), e.g. a capture's wall-clock start and end.
  std::string other_data;
};

// What write_trace wrote.
struct TraceWriteResult {
  std::size_t events = 0;   // trace events written (metadata records included)
  std::size_t dropped = 0;  // recorded but not written (max_events), or never kept (per thread)
  bool truncated() const { return dropped != 0; }
};

// ---- the observer ------------------------------------------------------------------------------

class Profiler final : public Observer {
 public:
  Profiler(ProfilerConfig cfg, const Clock& clock, std::shared_ptr<spdlog::logger> log);
  ~Profiler() override;
  Profiler(const Profiler&) = delete;
  Profiler& operator=(const Profiler&) = delete;

  void on_entry(Stage stage, std::uint32_t items, Message* const* msgs) override;
  void on_exit(Stage stage, std::uint32_t items) override;
  void on_pull(Message* const* msgs, std::uint32_t n) override;
  void on_zone_entry(const ZoneSite& site) override;
  void on_zone_exit(const ZoneSite& site) override;

  // Safe while the pipeline runs (relaxed reads of per-thread counters).
  ProfileSnapshot snapshot() const;
  // The watchdog: logs every outermost stage body that has run longer than `slow_task` and was
  // not reported yet; returns how many it reported. The lease thread calls it every
  // `watchdog_every`; public for tests.
  std::size_t check_stuck();
  // Writes the Chrome trace-event JSON. Call after the run (threads idle), or after detaching and
  // freeze(). False + `err` on I/O failure.
  bool write_trace(const std::string& path, std::string& err) const;
  // The same JSON, appended to `out`, bounded and labelled by `o`. Its "otherData" says
  // `window_us` (the time from the start to the freeze, or to now; every event's ts and ts + dur
  // lie in [0, window_us]), the events written, the limit and whether events were left out.
  TraceWriteResult write_trace(std::string& out, const TraceWriteOptions& o) const;
  // A profiler attached to a running pipeline (a capture) does not see the submissions of the I/O
  // operations already pending: `n[op]` (save, restart, cleanup: op_index) of them count as
  // submitted at its start, so each wait row is the waiting done inside its window.
  void seed_in_flight(const std::array<std::uint64_t, kOpCount>& n);
  // Ends the profiler's window now: the reports' wall time, pending waits and the time base stop
  // here. Call once no thread records into it any more (detached: LiveObserver::detach).
  void freeze();

  struct ThreadData;  // per-thread slot (src/observe/profiler/thread_data.hpp)
  struct Frame;

 private:
  // The profiler's time base: the CPU's time-stamp counter when the kernel itself uses it as its
  // clock source (x86-64, invariant TSC: a read costs well under half of a steady_clock read;
  // docs/PROFILING.md has the numbers), else the clock's nanoseconds. Durations are kept in ticks
  // and converted when reported.
  using Ticks = std::int64_t;
  ThreadData* local();
  ThreadData* local_slow();  // this thread's first call, or another profiler's was cached
  void account(ThreadData& t, int node, std::uint32_t items, Ticks dur);
  void lease_tick(ThreadData& t, Ticks now);
  // The one stage entry/exit path (collector.cpp); kProfileOnly: --profile alone, the short one.
  template <bool kProfileOnly>
  [[gnu::always_inline]] inline void stage_entry(Stage stage, std::uint32_t items,
                                                 Message* const* msgs);
  template <bool kProfileOnly>
  [[gnu::always_inline]] inline void stage_exit(Stage stage, std::uint32_t items);
  void entry_general(Stage stage, std::uint32_t items, Message* const* msgs);
  void exit_general(Stage stage, std::uint32_t items);
  void entry_rare(ThreadData& t, Frame& f, Stage stage, std::uint32_t items, Message* const* msgs,
                  Ticks now);
  void exit_rare(ThreadData& t, const Frame& f, Stage stage, std::uint32_t items, Ticks dur,
                 Ticks now);
  TraceWriteResult write_trace_json(std::string& buf, const TraceWriteOptions& o,
                                    const std::function<void()>& flush) const;
  bool scan_sampled(const ThreadData& t, Message* const* msgs, std::uint32_t n) const;
  void note_sampled(ThreadData& t, Frame& f, Stage stage, Message* const* msgs, std::uint32_t n,
                    Ticks now);
  bool sampled(const Message* m) const;
  std::uint64_t sampled_mask(Message* const* msgs, std::uint32_t n) const;  // n <= 64
  bool any_sampled(Message* const* msgs, std::uint32_t n) const;
  Ticks ticks() const;
  Nanos now() const;
  double report_ns_per_tick() const;  // over the run so far (more exact than the calibration)
  Nanos to_ns(Ticks t) const;         // with the calibration (warnings while running)

  const ProfilerConfig cfg_;
  const Clock& clock_;
  std::shared_ptr<spdlog::logger> log_;
  const bool steady_;
  const bool tsc_;
  const Nanos start_;
  Ticks start_ticks_ = 0;
  double ns_per_tick_ = 1;  // calibrated at construction (1 when ticks are nanoseconds)
  Ticks slow_ticks_ = 0, watchdog_ticks_ = 0;
  const bool time_all_;      // every stage body is timed (--profile, --slow-task-ms)
  const bool profile_only_;  // --profile without trace or slow-task checks: the short path
  const bool count_;         // message counts (the table's waits, the trace's counter tracks)
  const std::uint64_t gen_;
  const std::uint32_t threshold_;  // sampled slots per window of 1024 (sampled())
  const bool sample_all_;
  std::atomic<ThreadData*> threads_{nullptr};
  std::atomic<int> thread_count_{0};
  std::atomic<Ticks> last_check_{0};
  std::atomic<std::uint64_t> slow_tasks_{0}, stuck_reports_{0};
  std::atomic<std::uint64_t> io_seed_[kOpCount] = {};  // seed_in_flight
  // freeze(): the window's end, on both time bases (0: not frozen).
  std::atomic<Ticks> end_ticks_{0};
  std::atomic<Nanos> end_ns_{0};
};

// From the service options: null when no profiling flag is set. Checks up front that the output
// files can be written (throws std::runtime_error with a clear message otherwise).
std::unique_ptr<Profiler> make_profiler(const Options& o, const Clock& clock,
                                        std::shared_ptr<spdlog::logger> log);
// After the run: the table and line timings (--profile) on `table_out`, the Callgrind file
// (--profile-out) and the trace (--trace-out). False + `err` when a file cannot be written.
bool write_profile_reports(const Profiler& p, const Options& o, std::ostream& table_out,
                           const std::string& cmd, std::string& err);

}  // namespace mayhem
