#include "mayhem/observe/zone.hpp"

#include <algorithm>

namespace mayhem {

namespace {
std::atomic<const ZoneSite*> g_sites[kMaxZones];
std::atomic<int> g_next{0};
}  // namespace

int zone_id(const ZoneSite& site) {
  int id = site.id.load(std::memory_order_acquire);
  if (id >= 0 || id == -2) return id < 0 ? -1 : id;
  // First sight: claim the site (-1 -> -3 while registering), take the next free index.
  int expected = -1;
  if (!site.id.compare_exchange_strong(expected, -3, std::memory_order_acq_rel)) {
    while ((id = site.id.load(std::memory_order_acquire)) == -3) {
    }
    return id < 0 ? -1 : id;
  }
  const int next = g_next.fetch_add(1, std::memory_order_relaxed);
  if (next >= kMaxZones) {
    site.id.store(-2, std::memory_order_release);  // table full: this zone is not recorded
    return -1;
  }
  g_sites[next].store(&site, std::memory_order_release);
  site.id.store(next, std::memory_order_release);
  return next;
}

const ZoneSite* zone_site(int id) {
  if (id < 0 || id >= kMaxZones) return nullptr;
  return g_sites[id].load(std::memory_order_acquire);
}

int zone_count() {
  return std::min(g_next.load(std::memory_order_acquire), kMaxZones);
}

}  // namespace mayhem
