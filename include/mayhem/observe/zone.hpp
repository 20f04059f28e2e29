// Named zones inside stage bodies, for line-level timings (the reference's line_profiler):
// `MAYHEM_ZONE(observer, "name")` times the rest of the enclosing block; `MAYHEM_ZONED(observer,
// statement)` times one statement and names the zone after its source text. Each zone site is a
// constinit static (file, line, name) that registers itself once in a process-wide, lock-free
// table the first time an observer sees it. With a null observer a zone costs one branch; with an
// observer but nobody listening to zones (`g_zone_listeners` is 0: no Profiler with a table exists
// and no stage's zones are watched, see StageCollector::watch_zones) one relaxed load more, and no
// call.
// Use: `MAYHEM_ZONED(observer_, log_->info("Saved {} into database", m));`
#pragma once

#include <atomic>
#include <cstdint>

#include "mayhem/observe/observer.hpp"

namespace mayhem {

struct ZoneSite {
  const char* name;
  const char* file;
  std::uint32_t line;
  mutable std::atomic<int> id{-1};  // index in the zone table; -1 until registered

  constexpr ZoneSite(const char* n, const char* f, std::uint32_t l) : name(n), file(f), line(l) {}
};

inline constexpr int kMaxZones = 48;

// The zone's index in [0, kMaxZones), registering it on first use; -1 when the table is full.
int zone_id(const ZoneSite& site);
// The registered site with this index, or null.
const ZoneSite* zone_site(int id);
int zone_count();

// Observers that want zone calls now: each Profiler that builds a table (ProfilerConfig::profile)
// while it exists, a StageCollector while some stage's zones are watched. A zone that starts while
// it is 0 calls nobody, at entry or exit.
inline std::atomic<int> g_zone_listeners{0};

class ZoneScope {
 public:
  ZoneScope(Observer* o, const ZoneSite& site)
      : o_(o && g_zone_listeners.load(std::memory_order_relaxed) > 0 ? o : nullptr), site_(site) {
    if (o_) o_->on_zone_entry(site_);
  }
  ~ZoneScope() {
    if (o_) o_->on_zone_exit(site_);
  }
  ZoneScope(const ZoneScope&) = delete;
  ZoneScope& operator=(const ZoneScope&) = delete;

 private:
  Observer* o_;
  const ZoneSite& site_;
};

}  // namespace mayhem

#define MAYHEM_ZONE_CAT2(a, b) a##b
#define MAYHEM_ZONE_CAT(a, b) MAYHEM_ZONE_CAT2(a, b)
#define MAYHEM_ZONE(observer, name)                                                                \
  static constinit ::mayhem::ZoneSite MAYHEM_ZONE_CAT(mayhem_zone_site_, __LINE__){name, __FILE__, \
                                                                                   __LINE__};      \
  ::mayhem::ZoneScope MAYHEM_ZONE_CAT(mayhem_zone_, __LINE__)(                                     \
      observer, MAYHEM_ZONE_CAT(mayhem_zone_site_, __LINE__))
#define MAYHEM_ZONED(observer, ...)      \
  do {                                   \
    MAYHEM_ZONE(observer, #__VA_ARGS__); \
    __VA_ARGS__;                         \
  } while (0)
