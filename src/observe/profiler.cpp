#include "mayhem/observe/profiler.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <queue>
#include <tuple>

#include "mayhem/message.hpp"
#include "mayhem/rng.hpp"

namespace mayhem {

namespace {

constexpr int kStages = static_cast<int>(Stage::kCount);
constexpr int kNodes = kStages + kMaxZones;
constexpr int kRoot = kNodes;  // the parent of an outermost frame
constexpr int kMaxDepth = 16;
constexpr int kWaits = 4;  // pub/sub queue, save I/O, restart I/O, cleanup I/O
constexpr const char* kWaitNames[kWaits] = {"pub/sub queue", "save I/O", "restart I/O",
                                            "cleanup I/O"};
constexpr std::uint64_t kSampleSalt = 0x7ACE5A3B1EULL;

// Single-writer counters: the owning thread loads and stores (no RMW), readers load.
using U64 = std::atomic<std::uint64_t>;
inline void bump(U64& a, std::uint64_t v) {
  a.store(a.load(std::memory_order_relaxed) + v, std::memory_order_relaxed);
}

// Which I/O op a stage submits (0 save, 1 restart, 2 cleanup) or completes; -1 neither.
int submits(Stage s) {
  switch (s) {
    case Stage::kSave:
      return 0;
    case Stage::kRestart:
      return 1;
    case Stage::kCleanup:
      return 2;
    default:
      return -1;
  }
}
int completes(Stage s) {
  switch (s) {
    case Stage::kSaved:
      return 0;
    case Stage::kRestarted:
      return 1;
    case Stage::kSettle:
      return 2;
    default:
      return -1;
  }
}

const char* stage_file(int node) {
  return node == static_cast<int>(Stage::kLease) ? "src/lease/lease_manager.cpp"
                                                 : "src/pipeline/pipeline.cpp";
}

struct TraceEvent {
  enum Kind : std::uint8_t { kSlice, kIoBegin, kIoEnd, kQueueSpan, kCounter };
  Nanos ts = 0;   // relative to the profiler's start
  Nanos dur = 0;  // slices and spans; counters: the value
  std::uint32_t items = 0;
  Kind kind = kSlice;
  std::uint8_t node = 0;  // stage (slices), op (I/O), counter index
  std::uint8_t nseq = 0;  // sampled messages in a slice (seqs holds the first three)
  std::uint64_t seqs[3] = {};
};

// Append-only event log of one thread, in chunks (no reallocation of events already written).
class TraceLog {
 public:
  static constexpr std::size_t kChunk = 4096;
  void push(const TraceEvent& e) {
    if (used_ == kChunk || chunks_.empty()) {
      chunks_.push_back(std::make_unique<std::array<TraceEvent, kChunk>>());
      used_ = 0;
    }
    (*chunks_.back())[used_++] = e;
  }
  template <typename F>
  void each(F f) const {
    for (std::size_t c = 0; c < chunks_.size(); ++c) {
      const std::size_t n = c + 1 == chunks_.size() ? used_ : kChunk;
      for (std::size_t i = 0; i < n; ++i) f((*chunks_[c])[i]);
    }
  }

 private:
  std::vector<std::unique_ptr<std::array<TraceEvent, kChunk>>> chunks_;
  std::size_t used_ = 0;
};

std::atomic<std::uint64_t> g_generation{1};

struct TlsSlot {
  std::uint64_t gen = 0;
  Profiler::ThreadData* td = nullptr;
};
thread_local TlsSlot t_slot;

std::string message_text(std::uint64_t seq, const char* name, std::uint32_t items) {
  if (items == 0) return "no messages";
  return fmt::format("{} message{}, first PubSubMessage(instance_name='{}') seq {}", items,
                     items == 1 ? "" : "s", name, seq);
}

}  // namespace

struct Profiler::Frame {
  int node = 0;
  Nanos start = 0;
  Nanos child = 0;
  std::uint32_t items = 0;
  bool sampled = false;
  std::uint8_t nseq = 0;
  std::uint64_t seqs[3] = {};
  std::uint64_t first_seq = 0;  // for slow-task warnings
  char first_name[12] = {};
};

struct Profiler::ThreadData {
  int index = 0;
  ThreadData* next = nullptr;
  int depth = 0;
  int overflow = 0;  // pushes beyond kMaxDepth (ignored, but kept balanced)
  Frame stack[kMaxDepth];
  std::uint64_t runs = 0;  // publish runs, for sampling them
  // [parent][node]: calls, inclusive, self
  U64 calls[kNodes + 1][kNodes] = {};
  U64 incl[kNodes + 1][kNodes] = {};
  U64 self[kNodes + 1][kNodes] = {};
  U64 items[kNodes] = {};
  // Waits, as sums of n x (time since start) mod 2^64: completions minus submissions is the total
  // wait of the completed operations, with no per-message state.
  U64 sub_n[3] = {}, sub_t[3] = {}, done_n[3] = {}, done_t[3] = {};
  U64 pulled = {}, pulled_wait = {}, published = {};
  // The outermost stage now running on this thread (the watchdog reads these).
  std::atomic<Nanos> active_start{0};  // 0 = none
  std::atomic<std::uint8_t> active_stage{0};
  std::atomic<std::uint32_t> active_items{0};
  std::atomic<std::uint64_t> active_seq{0};
  std::atomic<std::uint64_t> active_name[2] = {};
  std::atomic<Nanos> reported_start{0};
  std::atomic<bool> saw_lease{false};
  TraceLog trace;
};

std::optional<ProfileSort> parse_profile_sort(const std::string& s) {
  if (s == "tottime") return ProfileSort::kTottime;
  if (s == "cumtime") return ProfileSort::kCumtime;
  if (s == "ncalls") return ProfileSort::kNcalls;
  if (s == "name") return ProfileSort::kName;
  return std::nullopt;
}

Profiler::Profiler(ProfilerConfig cfg, const Clock& clock, std::shared_ptr<spdlog::logger> log)
    : cfg_(cfg),
      clock_(clock),
      log_(std::move(log)),
      steady_(&clock == &SteadyClock::instance()),
      start_(clock.now()),
      gen_(g_generation.fetch_add(1, std::memory_order_relaxed)),
      threshold_(cfg.trace_sample >= 1   ? ~std::uint64_t{0}
                 : cfg.trace_sample <= 0 ? 0
                                         : static_cast<std::uint64_t>(cfg.trace_sample * 0x1p64)) {}

Profiler::~Profiler() {
  ThreadData* t = threads_.load(std::memory_order_acquire);
  while (t) {
    ThreadData* next = t->next;
    delete t;
    t = next;
  }
}

bool Profiler::sampled(const Message* m) const {
  // Sampling by the message's pool slot, not its contents: the check must not touch the message
  // (at zero latency the submit stages never do, and a cache miss per message would cost more
  // than the whole trace). One multiply (Fibonacci hashing) spreads the slots over 64 bits; slots
  // are reused in turn, so about that fraction of messages is traced.
  const auto slot = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(m) >> 6);
  return (slot + kSampleSalt) * 0x9E3779B97F4A7C15ULL < threshold_ ||
         threshold_ == ~std::uint64_t{0};
}

Nanos Profiler::now() const {
  return steady_ ? steady_now() : clock_.now();  // the real clock: no virtual call
}

Profiler::ThreadData* Profiler::local() {
  TlsSlot& s = t_slot;
  if (s.gen == gen_) return s.td;
  auto* t = new ThreadData();
  t->index = thread_count_.fetch_add(1, std::memory_order_relaxed);
  ThreadData* head = threads_.load(std::memory_order_relaxed);
  do {
    t->next = head;
  } while (!threads_.compare_exchange_weak(head, t, std::memory_order_release,
                                           std::memory_order_relaxed));
  s.gen = gen_;
  s.td = t;
  return t;
}

void Profiler::push(ThreadData& t, int node, Nanos now) {
  if (t.depth == kMaxDepth || t.overflow > 0) {
    ++t.overflow;
    return;
  }
  Frame& f = t.stack[t.depth++];
  f.node = node;
  f.start = now;
  f.child = 0;
  f.items = 0;
  f.sampled = false;
  f.nseq = 0;
  f.first_seq = 0;
  f.first_name[0] = '\0';
}

void Profiler::pop(ThreadData& t, int node, std::uint32_t items, Nanos now) {
  if (t.overflow > 0) {
    --t.overflow;
    return;
  }
  if (t.depth == 0) return;  // unbalanced (an observer installed mid-body): ignore
  Frame& f = t.stack[--t.depth];
  if (f.node != node) return;        // unbalanced: drop the frame
  items = std::max(items, f.items);  // consume learns its count from on_pull
  const Nanos dur = std::max<Nanos>(now - f.start, 0);
  const Nanos self = std::max<Nanos>(dur - f.child, 0);
  const int parent = t.depth > 0 ? t.stack[t.depth - 1].node : kRoot;
  if (t.depth > 0) t.stack[t.depth - 1].child += dur;
  if (cfg_.profile) {
    bump(t.calls[parent][node], 1);
    bump(t.incl[parent][node], static_cast<std::uint64_t>(dur));
    bump(t.self[parent][node], static_cast<std::uint64_t>(self));
    bump(t.items[node], items);
  }
  if (node >= kStages) return;  // zones: no trace slices, no slow-task checks
  const auto stage = static_cast<Stage>(node);
  if (cfg_.trace) {
    bool keep = f.sampled || stage == Stage::kLease;
    if (stage == Stage::kPublish) {
      // publish does not see message pointers: keep a run with the chance that one of its
      // messages is sampled.
      const double p = std::min(1.0, cfg_.trace_sample * std::max<std::uint32_t>(items, 1));
      keep = to_unit(mix(t.runs++, kSampleSalt + t.index)) < p;
    }
    if (keep) {
      TraceEvent e;
      e.kind = TraceEvent::kSlice;
      e.ts = f.start - start_;
      e.dur = dur;
      e.items = items;
      e.node = static_cast<std::uint8_t>(node);
      e.nseq = f.nseq;
      std::copy(f.seqs, f.seqs + 3, e.seqs);
      t.trace.push(e);
    }
  }
  if (cfg_.slow_task > 0 && t.depth == 0) {
    t.active_start.store(0, std::memory_order_release);
    if (dur > cfg_.slow_task) {
      slow_tasks_.fetch_add(1, std::memory_order_relaxed);
      if (log_)
        log_->warn("Executing stage {} ({}) took {:.3f} seconds", to_string(stage),
                   message_text(f.first_seq, f.first_name, items), nanos_to_seconds(dur));
    }
  }
}

void Profiler::on_entry(Stage stage, std::uint32_t items, Message* const* msgs) {
  ThreadData& t = *local();
  const Nanos now = this->now();
  const int node = static_cast<int>(stage);
  push(t, node, now);
  if (t.overflow > 0) return;
  Frame& f = t.stack[t.depth - 1];
  f.items = items;
  if (cfg_.slow_task > 0 && msgs && items > 0) {  // for its warnings only: one load
    f.first_seq = msgs[0]->seq;
    std::memcpy(f.first_name, msgs[0]->instance_name, sizeof f.first_name);
    f.first_name[sizeof f.first_name - 1] = '\0';
  }
  if (stage == Stage::kLease && !t.saw_lease.load(std::memory_order_relaxed))
    t.saw_lease.store(true, std::memory_order_relaxed);
  const Nanos rel = now - start_;
  if (cfg_.profile) {
    const auto weighted = static_cast<std::uint64_t>(items) * static_cast<std::uint64_t>(rel);
    if (const int op = submits(stage); op >= 0) {
      bump(t.sub_n[op], items);
      bump(t.sub_t[op], weighted);
    } else if (const int op2 = completes(stage); op2 >= 0) {
      bump(t.done_n[op2], items);
      bump(t.done_t[op2], weighted);
    }
  }
  if (cfg_.trace && msgs) {
    const int op_begin = submits(stage), op_end = completes(stage);
    for (std::uint32_t i = 0; i < items; ++i) {
      if (!sampled(msgs[i])) continue;
      const std::uint64_t seq = msgs[i]->seq;
      if (f.nseq < 3) f.seqs[f.nseq] = seq;
      if (f.nseq < 255) ++f.nseq;
      f.sampled = true;
      const int op = op_begin >= 0 ? op_begin : op_end;
      if (op < 0) continue;
      TraceEvent e;
      e.kind = op_begin >= 0 ? TraceEvent::kIoBegin : TraceEvent::kIoEnd;
      e.ts = rel;
      e.node = static_cast<std::uint8_t>(op);
      e.seqs[0] = seq;
      t.trace.push(e);
    }
  }
  if (cfg_.slow_task > 0 && t.depth == 1) {
    std::uint64_t name[2] = {};
    std::memcpy(name, f.first_name, sizeof f.first_name);
    t.active_stage.store(static_cast<std::uint8_t>(stage), std::memory_order_relaxed);
    t.active_items.store(items, std::memory_order_relaxed);
    t.active_seq.store(f.first_seq, std::memory_order_relaxed);
    t.active_name[0].store(name[0], std::memory_order_relaxed);
    t.active_name[1].store(name[1], std::memory_order_relaxed);
    t.active_start.store(now, std::memory_order_release);
  }
}

void Profiler::on_exit(Stage stage, std::uint32_t items) {
  ThreadData& t = *local();
  const Nanos now = this->now();
  if (stage == Stage::kPublish && cfg_.profile) bump(t.published, items);
  pop(t, static_cast<int>(stage), items, now);
  if (stage != Stage::kLease) return;
  // The lease thread ticks every few milliseconds: it samples the counters and runs the watchdog.
  if (cfg_.trace) {
    std::uint64_t published = 0, pulled = 0, settled = 0;
    for (const ThreadData* o = threads_.load(std::memory_order_acquire); o; o = o->next) {
      published += o->published.load(std::memory_order_relaxed);
      pulled += o->pulled.load(std::memory_order_relaxed);
      settled += o->done_n[2].load(std::memory_order_relaxed);
    }
    TraceEvent e;
    e.kind = TraceEvent::kCounter;
    e.ts = now - start_;
    e.node = 0;
    e.dur = static_cast<Nanos>(pulled >= settled ? pulled - settled : 0);
    t.trace.push(e);
    e.node = 1;
    e.dur = static_cast<Nanos>(published >= pulled ? published - pulled : 0);
    t.trace.push(e);
  }
  if (cfg_.slow_task > 0 &&
      now - last_check_.load(std::memory_order_relaxed) >= cfg_.watchdog_every) {
    last_check_.store(now, std::memory_order_relaxed);
    check_stuck();
  }
}

void Profiler::on_pull(Message* const* msgs, std::uint32_t n) {
  ThreadData& t = *local();
  const Nanos now = this->now();
  if (cfg_.profile) {
    std::uint64_t wait = 0;
    for (std::uint32_t i = 0; i < n; ++i)
      wait += static_cast<std::uint64_t>(std::max<Nanos>(now - msgs[i]->published_ns, 0));
    bump(t.pulled, n);
    bump(t.pulled_wait, wait);
  }
  // The innermost stage frame (consume) learns its first message and whether it is sampled.
  Frame* f = nullptr;
  for (int d = t.overflow > 0 ? 0 : t.depth; d > 0; --d)
    if (t.stack[d - 1].node < kStages) {
      f = &t.stack[d - 1];
      break;
    }
  if (cfg_.slow_task > 0 && f && f->items == 0 && n > 0) {
    f->first_seq = msgs[0]->seq;
    std::memcpy(f->first_name, msgs[0]->instance_name, sizeof f->first_name);
    f->first_name[sizeof f->first_name - 1] = '\0';
  }
  if (f) f->items += n;
  if (!cfg_.trace) return;
  for (std::uint32_t i = 0; i < n; ++i) {
    if (!sampled(msgs[i])) continue;
    const Message& m = *msgs[i];
    if (f) {
      if (f->nseq < 3) f->seqs[f->nseq] = m.seq;
      if (f->nseq < 255) ++f->nseq;
      f->sampled = true;
    }
    TraceEvent e;
    e.kind = TraceEvent::kQueueSpan;
    e.ts = std::max<Nanos>(m.published_ns - start_, 0);
    e.dur = std::max<Nanos>(now - start_ - e.ts, 0);
    e.seqs[0] = m.seq;
    t.trace.push(e);
  }
}

void Profiler::on_zone_entry(const ZoneSite& site) {
  ThreadData& t = *local();
  const int id = zone_id(site);
  // An unregistered zone (table full) still takes a frame, so entries and exits stay paired.
  push(t, id < 0 ? -1 : kStages + id, now());
}

void Profiler::on_zone_exit(const ZoneSite& site) {
  ThreadData& t = *local();
  const int id = zone_id(site);
  const Nanos now = this->now();
  if (id < 0) {
    if (t.overflow > 0)
      --t.overflow;
    else if (t.depth > 0)
      --t.depth;
    return;
  }
  pop(t, kStages + id, 0, now);
}

std::size_t Profiler::check_stuck() {
  if (cfg_.slow_task <= 0) return 0;
  const Nanos now = this->now();
  std::size_t reported = 0;
  for (ThreadData* t = threads_.load(std::memory_order_acquire); t; t = t->next) {
    const Nanos start = t->active_start.load(std::memory_order_acquire);
    if (start == 0 || now - start <= cfg_.slow_task) continue;
    if (t->reported_start.load(std::memory_order_relaxed) == start) continue;
    const auto stage = static_cast<Stage>(t->active_stage.load(std::memory_order_relaxed));
    const std::uint32_t items = t->active_items.load(std::memory_order_relaxed);
    const std::uint64_t seq = t->active_seq.load(std::memory_order_relaxed);
    std::uint64_t name[2] = {t->active_name[0].load(std::memory_order_relaxed),
                             t->active_name[1].load(std::memory_order_relaxed)};
    if (t->active_start.load(std::memory_order_acquire) != start) continue;  // it moved on
    char text[16] = {};
    std::memcpy(text, name, sizeof name);
    text[11] = '\0';
    t->reported_start.store(start, std::memory_order_relaxed);
    stuck_reports_.fetch_add(1, std::memory_order_relaxed);
    ++reported;
    if (log_)
      log_->warn(
          "Stage {} has been running for {:.3f} seconds and has not returned ({}; thread "
          "{})",
          to_string(stage), nanos_to_seconds(now - start), message_text(seq, text, items),
          t->index);
  }
  return reported;
}

// ---- snapshot ----------------------------------------------------------------------------------

ProfileSnapshot Profiler::snapshot() const {
  ProfileSnapshot s;
  const Nanos now_rel = clock_.now() - start_;
  s.wall = now_rel;
  s.slow_tasks = slow_tasks_.load(std::memory_order_relaxed);
  s.stuck_reports = stuck_reports_.load(std::memory_order_relaxed);
  std::vector<std::uint64_t> c(static_cast<std::size_t>((kNodes + 1) * kNodes)), in(c.size()),
      se(c.size());
  std::array<std::uint64_t, kNodes> items{};
  std::uint64_t sub_n[3] = {}, sub_t[3] = {}, done_n[3] = {}, done_t[3] = {};
  std::uint64_t pulled = 0, pulled_wait = 0;
  for (const ThreadData* t = threads_.load(std::memory_order_acquire); t; t = t->next) {
    ++s.threads;
    for (int p = 0; p <= kNodes; ++p)
      for (int n = 0; n < kNodes; ++n) {
        const std::size_t k = static_cast<std::size_t>(p * kNodes + n);
        c[k] += t->calls[p][n].load(std::memory_order_relaxed);
        in[k] += t->incl[p][n].load(std::memory_order_relaxed);
        se[k] += t->self[p][n].load(std::memory_order_relaxed);
      }
    for (int n = 0; n < kNodes; ++n) items[n] += t->items[n].load(std::memory_order_relaxed);
    for (int op = 0; op < 3; ++op) {
      sub_n[op] += t->sub_n[op].load(std::memory_order_relaxed);
      sub_t[op] += t->sub_t[op].load(std::memory_order_relaxed);
      done_n[op] += t->done_n[op].load(std::memory_order_relaxed);
      done_t[op] += t->done_t[op].load(std::memory_order_relaxed);
    }
    pulled += t->pulled.load(std::memory_order_relaxed);
    pulled_wait += t->pulled_wait.load(std::memory_order_relaxed);
  }
  std::array<int, kNodes> row_of{};
  row_of.fill(-1);
  for (int n = 0; n < kNodes; ++n) {
    ProfileRow r;
    for (int p = 0; p <= kNodes; ++p) {
      const std::size_t k = static_cast<std::size_t>(p * kNodes + n);
      r.ncalls += c[k];
      r.cumtime += static_cast<Nanos>(in[k]);
      r.tottime += static_cast<Nanos>(se[k]);
    }
    if (r.ncalls == 0) continue;
    r.items = items[n];
    if (n < kStages) {
      r.kind = ProfileRow::Kind::kStage;
      r.name = to_string(static_cast<Stage>(n));
      r.file = stage_file(n);
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
      s.edges.push_back({p == kRoot ? -1 : row_of[p], row_of[n], c[k], static_cast<Nanos>(in[k])});
    }
  // Waits: the pub/sub queue (publish -> pull), and each I/O op (submit -> completion). Operations
  // still pending count up to now.
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
    r.ncalls = r.items = done_n[op];
    const std::uint64_t pending = sub_n[op] - done_n[op];
    const std::uint64_t total =
        done_t[op] - sub_t[op] + pending * static_cast<std::uint64_t>(now_rel);
    r.tottime = r.cumtime = std::max<Nanos>(static_cast<Nanos>(total), 0);
    s.rows.push_back(r);
  }
  return s;
}

// ---- reports -----------------------------------------------------------------------------------

namespace {

std::string base_name(const std::string& path) {
  const auto slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string row_label(const ProfileRow& r) {
  switch (r.kind) {
    case ProfileRow::Kind::kStage:
      return fmt::format("stage:{} ({} msgs)", r.name, r.items);
    case ProfileRow::Kind::kZone: {
      std::string name = r.name;
      if (name.size() > 60) name = name.substr(0, 57) + "...";
      return fmt::format("{}:{}({})", base_name(r.file), r.line, name);
    }
    case ProfileRow::Kind::kWait:
      return fmt::format("wait:{} (per message)", r.name);
  }
  return r.name;
}

double per_call_us(Nanos t, std::uint64_t n) {
  return n == 0 ? 0.0 : static_cast<double>(t) / 1e3 / static_cast<double>(n);
}

}  // namespace

std::string format_table(const ProfileSnapshot& s, ProfileSort sort) {
  std::vector<const ProfileRow*> rows;
  std::uint64_t calls = 0;
  for (const auto& r : s.rows) {
    if (r.ncalls == 0) continue;
    rows.push_back(&r);
    if (r.kind != ProfileRow::Kind::kWait) calls += r.ncalls;
  }
  const char* order = "internal time";
  auto by = [&](auto key) {
    std::stable_sort(rows.begin(), rows.end(),
                     [&](const ProfileRow* a, const ProfileRow* b) { return key(*a) > key(*b); });
  };
  switch (sort) {
    case ProfileSort::kTottime:
      by([](const ProfileRow& r) { return r.tottime; });
      break;
    case ProfileSort::kCumtime:
      order = "cumulative time";
      by([](const ProfileRow& r) { return r.cumtime; });
      break;
    case ProfileSort::kNcalls:
      order = "call count";
      by([](const ProfileRow& r) { return r.ncalls; });
      break;
    case ProfileSort::kName:
      order = "name";
      std::stable_sort(rows.begin(), rows.end(), [](const ProfileRow* a, const ProfileRow* b) {
        return row_label(*a) < row_label(*b);
      });
      break;
  }
  std::string out = fmt::format(
      "         {} stage and zone calls on {} threads in {:.3f} seconds\n"
      "         (times in seconds, percall in microseconds; stages and zones: thread time, "
      "tottime excludes children;\n"
      "          waits: message time, summed over messages, so they overlap each other)\n\n"
      "   Ordered by: {}\n\n",
      calls, s.threads, nanos_to_seconds(s.wall), order);
  out += fmt::format("{:>10} {:>10} {:>10} {:>10} {:>10}  {}\n", "ncalls", "tottime", "percall",
                     "cumtime", "percall", "name");
  for (const ProfileRow* r : rows) {
    out += fmt::format("{:>10} {:>10.3f} {:>10.3f} {:>10.3f} {:>10.3f}  {}\n", r->ncalls,
                       nanos_to_seconds(r->tottime), per_call_us(r->tottime, r->ncalls),
                       nanos_to_seconds(r->cumtime), per_call_us(r->cumtime, r->ncalls),
                       row_label(*r));
  }
  return out;
}

std::string format_lines(const ProfileSnapshot& s) {
  std::string out;
  for (std::size_t p = 0; p < s.rows.size(); ++p) {
    const ProfileRow& parent = s.rows[p];
    if (parent.kind == ProfileRow::Kind::kWait) continue;
    std::vector<std::pair<const ProfileRow*, const ProfileEdge*>> lines;
    for (const auto& e : s.edges)
      if (e.caller == static_cast<int>(p) &&
          s.rows[static_cast<std::size_t>(e.callee)].kind == ProfileRow::Kind::kZone)
        lines.emplace_back(&s.rows[static_cast<std::size_t>(e.callee)], &e);
    if (lines.empty()) continue;
    std::sort(lines.begin(), lines.end(),
              [](const auto& a, const auto& b) { return a.first->line < b.first->line; });
    const double total_us = static_cast<double>(parent.cumtime) / 1e3;
    auto pct = [&](double us) { return total_us > 0 ? 100.0 * us / total_us : 0.0; };
    out += fmt::format("Timer unit: 1e-06 s\n\nTotal time: {:g} s\n",
                       nanos_to_seconds(parent.cumtime));
    if (parent.kind == ProfileRow::Kind::kStage)
      out += fmt::format("Function: stage {} ({} calls, {} messages) in {}\n\n", parent.name,
                         parent.ncalls, parent.items, parent.file);
    else
      out += fmt::format("Function: zone {} at {}:{}\n\n", parent.name, base_name(parent.file),
                         parent.line);
    out += fmt::format("{:>6} {:>10} {:>14} {:>10} {:>8}  {}\n", "Line #", "Hits", "Time",
                       "Per Hit", "% Time", "Line Contents");
    out += std::string(80, '=') + "\n";
    for (const auto& [row, edge] : lines) {
      const double us = static_cast<double>(edge->incl) / 1e3;
      out += fmt::format("{:>6} {:>10} {:>14.1f} {:>10.1f} {:>8.1f}  {}\n", row->line, edge->calls,
                         us, edge->calls ? us / static_cast<double>(edge->calls) : 0.0, pct(us),
                         row->name);
    }
    const double rest = static_cast<double>(parent.tottime) / 1e3;
    out += fmt::format("{:>6} {:>10} {:>14.1f} {:>10} {:>8.1f}  {}\n\n", "", parent.ncalls, rest,
                       "", pct(rest), "(rest of the body: everything outside the zones above)");
  }
  return out;
}

void write_callgrind(const ProfileSnapshot& s, std::ostream& out, const std::string& cmd) {
  // Callgrind format (valgrind.org/docs/manual/cl-format.html). Event "ns" is thread time in stage
  // bodies and zones; "wait_ns" is message time spent waiting (queue, simulated I/O).
  Nanos total_self = 0, total_wait = 0;
  for (const auto& r : s.rows) {
    if (r.kind == ProfileRow::Kind::kWait)
      total_wait += r.cumtime;
    else
      total_self += r.tottime;
  }
  out << "# callgrind format\nversion: 1\ncreator: mayhem --profile-out\n";
  out << "cmd: " << cmd << "\npart: 1\npositions: line\n";
  out << "event: ns : Thread time (ns)\nevent: wait_ns : Message wait time (ns)\n";
  out << "events: ns wait_ns\n";
  out << "summary: " << total_self << " " << total_wait << "\n\n";
  std::map<std::string, int> files;
  auto fl = [&](const std::string& key, const std::string& f) {
    auto [it, fresh] = files.emplace(f, static_cast<int>(files.size()) + 1);
    return fresh ? fmt::format("{}=({}) {}\n", key, it->second, f)
                 : fmt::format("{}=({})\n", key, it->second);
  };
  auto fn_name = [&](int row) {
    const ProfileRow& r = s.rows[static_cast<std::size_t>(row)];
    switch (r.kind) {
      case ProfileRow::Kind::kStage:
        return fmt::format("stage {}", r.name);
      case ProfileRow::Kind::kZone:
        return fmt::format("zone {}:{} {}", base_name(r.file), r.line, r.name);
      case ProfileRow::Kind::kWait:
        return fmt::format("wait {}", r.name);
    }
    return r.name;
  };
  std::vector<bool> named(s.rows.size() + 1, false);
  auto fn = [&](const std::string& key, int id, const std::string& name) {
    // Function ids: 1 = the root, row r = r + 2. Names are compressed after first use.
    const auto slot = static_cast<std::size_t>(id);
    if (named[slot]) return fmt::format("{}=({})\n", key, id + 1);
    named[slot] = true;
    return fmt::format("{}=({}) {}\n", key, id + 1, name);
  };
  auto file_of = [&](int row) {
    const ProfileRow& r = s.rows[static_cast<std::size_t>(row)];
    return r.kind == ProfileRow::Kind::kWait ? std::string("(message waits)") : r.file;
  };
  auto id_of = [](int row) { return row + 1; };  // root is 0
  auto line_of = [&](int row) { return s.rows[static_cast<std::size_t>(row)].line; };

  // The root: every outermost stage, and the waits.
  out << fl("fl", "(mayhem)") << fn("fn", 0, "mayhem (all threads)") << "0 0 0\n";
  for (const auto& e : s.edges) {
    if (e.caller != -1) continue;
    out << fl("cfl", file_of(e.callee)) << fn("cfn", id_of(e.callee), fn_name(e.callee));
    out << "calls=" << e.calls << " " << line_of(e.callee) << "\n0 " << e.incl << " 0\n";
  }
  for (std::size_t r = 0; r < s.rows.size(); ++r) {
    if (s.rows[r].kind != ProfileRow::Kind::kWait || s.rows[r].ncalls == 0) continue;
    const int row = static_cast<int>(r);
    out << fl("cfl", file_of(row)) << fn("cfn", id_of(row), fn_name(row));
    out << "calls=" << s.rows[r].ncalls << " 0\n0 0 " << s.rows[r].cumtime << "\n";
  }
  out << "\n";
  for (std::size_t r = 0; r < s.rows.size(); ++r) {
    const ProfileRow& row = s.rows[r];
    if (row.ncalls == 0) continue;
    const int ri = static_cast<int>(r);
    out << fl("fl", file_of(ri)) << fn("fn", id_of(ri), fn_name(ri));
    if (row.kind == ProfileRow::Kind::kWait) {
      out << "0 0 " << row.cumtime << "\n\n";
      continue;
    }
    out << row.line << " " << row.tottime << " 0\n";
    for (const auto& e : s.edges) {
      if (e.caller != ri) continue;
      out << fl("cfl", file_of(e.callee)) << fn("cfn", id_of(e.callee), fn_name(e.callee));
      out << "calls=" << e.calls << " " << line_of(e.callee) << "\n";
      out << line_of(e.callee) << " " << e.incl << " 0\n";
    }
    out << "\n";
  }
  out << "totals: " << total_self << " " << total_wait << "\n";
}

// ---- trace -------------------------------------------------------------------------------------

namespace {

std::string us(Nanos ns) {  // exact: microseconds with three decimals
  if (ns < 0) ns = 0;
  return fmt::format("{}.{:03}", ns / 1000, ns % 1000);
}

struct Interval {
  Nanos start, end;
  std::uint64_t seq;
};

// Greedy interval partitioning: each interval gets the lowest free lane, so slices on one lane
// never overlap.
std::vector<int> assign_lanes(std::vector<Interval>& v) {
  std::sort(v.begin(), v.end(), [](const Interval& a, const Interval& b) {
    return std::tie(a.start, a.end) < std::tie(b.start, b.end);
  });
  std::vector<int> lane(v.size());
  using Busy = std::pair<Nanos, int>;  // (end, lane)
  std::priority_queue<Busy, std::vector<Busy>, std::greater<>> busy;
  std::priority_queue<int, std::vector<int>, std::greater<>> free_lanes;
  int lanes = 0;
  for (std::size_t i = 0; i < v.size(); ++i) {
    while (!busy.empty() && busy.top().first <= v[i].start) {
      free_lanes.push(busy.top().second);
      busy.pop();
    }
    int l;
    if (!free_lanes.empty()) {
      l = free_lanes.top();
      free_lanes.pop();
    } else {
      l = lanes++;
    }
    lane[i] = l;
    busy.emplace(v[i].end, l);
  }
  return lane;
}

}  // namespace

bool Profiler::write_trace(const std::string& path, std::string& err) const {
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (!f) {
    err = fmt::format("cannot write trace file '{}': {}", path, std::strerror(errno));
    return false;
  }
  std::string buf;
  buf.reserve(1 << 20);
  bool first = true;
  auto emit = [&](const std::string& ev) {
    if (!first) buf += ",\n";
    first = false;
    buf += ev;
    if (buf.size() > (1 << 20)) {
      std::fwrite(buf.data(), 1, buf.size(), f);
      buf.clear();
    }
  };
  buf += "{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n";
  constexpr int kPidStages = 1, kPidWaits = 2;
  emit(fmt::format(
      R"j({{"ph":"M","pid":{},"name":"process_name","args":{{"name":"mayhem: stage bodies per thread"}}}})j",
      kPidStages));
  emit(fmt::format(
      R"j({{"ph":"M","pid":{},"name":"process_name","args":{{"name":"mayhem: sampled messages waiting (queue, I/O)"}}}})j",
      kPidWaits));
  std::vector<Interval> spans[kWaits];
  // Open I/O per (op, seq), in time order: begin/end pairs (retries give several).
  std::vector<std::tuple<int, std::uint64_t, Nanos, int>> io;  // op, seq, ts, 0 begin / 1 end
  for (const ThreadData* t = threads_.load(std::memory_order_acquire); t; t = t->next) {
    const int tid = t->index + 1;
    const bool lease = t->saw_lease.load(std::memory_order_relaxed);
    emit(fmt::format(
        R"j({{"ph":"M","pid":{},"tid":{},"name":"thread_name","args":{{"name":"{}"}}}})j",
        kPidStages, tid,
        lease ? std::string("lease thread") : fmt::format("pipeline thread {}", tid)));
    t->trace.each([&](const TraceEvent& e) {
      switch (e.kind) {
        case TraceEvent::kSlice: {
          const auto stage = static_cast<Stage>(e.node);
          std::string seqs;
          for (int i = 0; i < std::min<int>(e.nseq, 3); ++i)
            seqs += fmt::format("{}{}", i ? "," : "", e.seqs[i]);
          emit(fmt::format(
              R"j({{"ph":"X","pid":{},"tid":{},"ts":{},"dur":{},"name":"{}","cat":"stage","args":{{"messages":{},"sampled":{},"sampled_seqs":[{}]}}}})j",
              kPidStages, tid, us(e.ts), us(e.dur),
              stage == Stage::kLease ? "lease tick" : to_string(stage), e.items, e.nseq, seqs));
          break;
        }
        case TraceEvent::kCounter:
          emit(
              fmt::format(R"j({{"ph":"C","pid":{},"ts":{},"name":"{}","args":{{"messages":{}}}}})j",
                          kPidStages, us(e.ts), e.node == 0 ? "in flight" : "queue depth", e.dur));
          break;
        case TraceEvent::kQueueSpan:
          spans[0].push_back({e.ts, e.ts + e.dur, e.seqs[0]});
          break;
        case TraceEvent::kIoBegin:
        case TraceEvent::kIoEnd:
          io.emplace_back(e.node, e.seqs[0], e.ts, e.kind == TraceEvent::kIoBegin ? 0 : 1);
          break;
      }
    });
  }
  std::sort(io.begin(), io.end());
  for (std::size_t i = 0; i + 1 < io.size(); ++i) {
    const auto& [op, seq, ts, kind] = io[i];
    const auto& [op2, seq2, ts2, kind2] = io[i + 1];
    if (kind == 0 && kind2 == 1 && op == op2 && seq == seq2) {
      spans[op + 1].push_back({ts, ts2, seq});
      ++i;
    }
  }
  for (int w = 0; w < kWaits; ++w) {
    const std::vector<int> lane = assign_lanes(spans[w]);
    int lanes = 0;
    for (std::size_t i = 0; i < spans[w].size(); ++i) {
      const int tid = (w + 1) * 100000 + lane[i];
      lanes = std::max(lanes, lane[i] + 1);
      emit(fmt::format(
          R"j({{"ph":"X","pid":{},"tid":{},"ts":{},"dur":{},"name":"{}","cat":"wait","args":{{"seq":{}}}}})j",
          kPidWaits, tid, us(spans[w][i].start), us(spans[w][i].end - spans[w][i].start),
          kWaitNames[w], spans[w][i].seq));
    }
    for (int l = 0; l < lanes; ++l)
      emit(fmt::format(
          R"j({{"ph":"M","pid":{},"tid":{},"name":"thread_name","args":{{"name":"{} lane {}"}}}})j",
          kPidWaits, (w + 1) * 100000 + l, kWaitNames[w], l));
  }
  buf += "\n]}\n";
  std::fwrite(buf.data(), 1, buf.size(), f);
  if (std::fclose(f) != 0) {
    err = fmt::format("cannot write trace file '{}': {}", path, std::strerror(errno));
    return false;
  }
  return true;
}

}  // namespace mayhem

namespace mayhem {

namespace {
void check_writable(const std::string& path, const char* flag) {
  if (path.empty()) return;
  std::ofstream f(path, std::ios::trunc);
  if (!f)
    throw std::runtime_error(
        fmt::format("{}: cannot write '{}': {}", flag, path, std::strerror(errno)));
}
}  // namespace

std::unique_ptr<Profiler> make_profiler(const Options& o, const Clock& clock,
                                        std::shared_ptr<spdlog::logger> log) {
  if (!o.profile && o.profile_out.empty() && o.trace_out.empty() && o.slow_task_ms <= 0)
    return nullptr;
  check_writable(o.profile_out, "--profile-out");
  check_writable(o.trace_out, "--trace-out");
  ProfilerConfig cfg;
  cfg.profile = o.profile || !o.profile_out.empty();
  cfg.trace = !o.trace_out.empty();
  cfg.trace_sample = o.trace_sample;
  cfg.slow_task = static_cast<Nanos>(o.slow_task_ms * 1e6);
  return std::make_unique<Profiler>(cfg, clock, std::move(log));
}

bool write_profile_reports(const Profiler& p, const Options& o, std::ostream& table_out,
                           const std::string& cmd, std::string& err) {
  if (o.profile || !o.profile_out.empty()) {
    const ProfileSnapshot s = p.snapshot();
    if (o.profile) {
      table_out << format_table(s,
                                parse_profile_sort(o.profile_sort).value_or(ProfileSort::kTottime))
                << "\n"
                << format_lines(s);
      table_out.flush();
    }
    if (!o.profile_out.empty()) {
      std::ofstream f(o.profile_out, std::ios::trunc);
      write_callgrind(s, f, cmd);
      f.close();
      if (!f) {
        err = fmt::format("--profile-out: cannot write '{}'", o.profile_out);
        return false;
      }
    }
  }
  if (!o.trace_out.empty() && !p.write_trace(o.trace_out, err)) return false;
  return true;
}

}  // namespace mayhem
