// The profiler's table data: snapshot() merges the per-thread slots that the collector writes
// (relaxed loads, so it may run while the pipeline does) into rows, caller/callee edges and the
// waits, in nanoseconds.
#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

#include "mayhem/observe/profiler.hpp"
#include "thread_data.hpp"

namespace mayhem {

using namespace profiler_detail;

ProfileSnapshot Profiler::snapshot() const {
  ProfileSnapshot s;
  const double r = report_ns_per_tick();
  auto ns = [&](std::uint64_t ticks) {
    return tsc_ ? static_cast<Nanos>(std::llround(static_cast<double>(ticks) * r))
                : static_cast<Nanos>(ticks);
  };
  // A frozen profiler (a capture's) reports its window: up to the freeze.
  const Ticks end_ticks = end_ticks_.load(std::memory_order_acquire);
  const Ticks now_ticks = (end_ticks != 0 ? end_ticks : ticks()) - start_ticks_;
  s.wall = (end_ticks != 0 ? end_ns_.load(std::memory_order_relaxed) : now()) - start_;
  s.slow_tasks = slow_tasks_.load(std::memory_order_relaxed);
  s.stuck_reports = stuck_reports_.load(std::memory_order_relaxed);
  constexpr std::size_t kCells = static_cast<std::size_t>((kNodes + 1) * kNodes);
  std::vector<std::uint64_t> c(kCells), in(kCells), it(kCells);
  std::uint64_t io_n[6] = {}, io_t[6] = {};
  std::uint64_t pulled = 0, pulled_wait = 0;
  for (const ThreadData* t = threads_.load(std::memory_order_acquire); t; t = t->next) {
    ++s.threads;
    for (int p = 0; p <= kNodes; ++p)
      for (int n = 0; n < kNodes; ++n) {
        const std::size_t k = static_cast<std::size_t>(p * kNodes + n);
        const Cell& cell = t->cells[p][n];
        c[k] += cell.calls.load(std::memory_order_relaxed);
        in[k] += cell.incl.load(std::memory_order_relaxed);
        it[k] += cell.items.load(std::memory_order_relaxed);
      }
    for (int i = 0; i < 6; ++i) {
      io_n[i] += t->io_n[i].load(std::memory_order_relaxed);
      io_t[i] += t->io_t[i].load(std::memory_order_relaxed);
    }
    pulled += t->pulled.load(std::memory_order_relaxed);
    pulled_wait += t->pulled_wait.load(std::memory_order_relaxed);
  }
  // Times in nanoseconds: each edge's inclusive time is converted once; a row's cumtime is the
  // sum over its callers, and its tottime is cumtime minus the time in its callees (cProfile's
  // tottime), so tottime + children == cumtime holds exactly.
  std::vector<Nanos> in_ns(kCells);
  for (std::size_t k = 0; k < kCells; ++k) in_ns[k] = c[k] ? ns(in[k]) : 0;
  std::array<int, kNodes> row_of{};
  row_of.fill(-1);
  for (int n = 0; n < kNodes; ++n) {
    ProfileRow r;
    for (int p = 0; p <= kNodes; ++p) {
      const std::size_t k = static_cast<std::size_t>(p * kNodes + n);
      r.ncalls += c[k];
      r.items += it[k];
      r.cumtime += in_ns[k];
    }
    if (r.ncalls == 0) continue;
    Nanos children = 0;
    for (int callee = 0; callee < kNodes; ++callee)
      children += in_ns[static_cast<std::size_t>(n * kNodes + callee)];
    // A live snapshot may see callees of a call still running: never below zero.
    r.tottime = std::max<Nanos>(r.cumtime - children, 0);
    r.cumtime = r.tottime + children;
    if (n < kStages) {
      r.kind = ProfileRow::Kind::kStage;
      r.name = to_string(static_cast<Stage>(n));
      r.file = stage_file(static_cast<Stage>(n));
    } else {
      const ZoneSite* z = zone_site(n - kStages);
      r.kind = ProfileRow::Kind::kZone;
      r.name = z ? z->name : "?";
      r.file = z ? z->file : "?";
      r.line = z ? z->line : 0;
    }
    row_of[n] = static_cast<int>(s.rows.size());
    s.rows.push_back(std::move(r));
  }
  for (int p = 0; p <= kNodes; ++p)
    for (int n = 0; n < kNodes; ++n) {
      const std::size_t k = static_cast<std::size_t>(p * kNodes + n);
      if (c[k] == 0) continue;
      s.edges.push_back({p == kRoot ? -1 : row_of[p], row_of[n], c[k], in_ns[k]});
    }
  // Waits: the pub/sub queue (publish -> pull), and each I/O op (submit -> completion). Operations
  // still pending count up to now (or the freeze).
  ProfileRow q;
  q.kind = ProfileRow::Kind::kWait;
  q.name = kWaitNames[0];
  q.ncalls = q.items = pulled;
  q.tottime = q.cumtime = static_cast<Nanos>(pulled_wait);
  s.rows.push_back(q);
  for (int op = 0; op < 3; ++op) {
    ProfileRow r;
    r.kind = ProfileRow::Kind::kWait;
    r.name = kWaitNames[op + 1];
    r.ncalls = r.items = io_n[op + 3];
    // Submitted (and seeded: pending when a capture began) minus completed; a snapshot taken
    // while the pipeline runs may read a completion before its submission: never below zero.
    const std::uint64_t submitted = io_n[op] + io_seed_[op].load(std::memory_order_relaxed);
    const std::uint64_t pending = submitted > io_n[op + 3] ? submitted - io_n[op + 3] : 0;
    const std::uint64_t total =
        io_t[op + 3] - io_t[op] + pending * static_cast<std::uint64_t>(now_ticks);
    const auto signed_total = static_cast<std::int64_t>(total);
    r.tottime = r.cumtime = signed_total > 0 ? ns(static_cast<std::uint64_t>(signed_total)) : 0;
    s.rows.push_back(r);
  }
  return s;
}

}  // namespace mayhem
