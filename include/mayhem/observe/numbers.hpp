// The service's numbers, declared once. Every counter and gauge a run reports is one line of
// MAYHEM_NUMBERS below: its member name, kind, which sources report it, unit, who writes it, its
// JSON path, its Prometheus series and help text. `Numbers` has one member per line (generated),
// and every output is generated from the table by walking it: the JSON summary (`to_json(Summary)`),
// the stats endpoint's `/stats` (`to_json(StatsSnapshot)`) and `/metrics` (`render_prometheus`),
// and `mayhem top`'s numbers block. A test walks the table and checks that each entry a run reports
// shows the same value in all of them. Adding a number is one line here plus the code that writes
// it: a pipeline stage or the lease thread bumps a `Metrics` counter (the table's `M(member)` reads
// it); anything else (the source, the store, the log, the configuration) fills its member in
// `Numbers` when the service gathers them (`Service::summary()`, `Service::stats_snapshot()`);
// a source corrects what it knows better (a broker counts as acked only the acks it confirmed).
// Use: `Numbers n; n.acked = 5;` `for_each_number(n, [](const NumberDef& d, std::uint64_t v) {...});`
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

#include "mayhem/metrics.hpp"

namespace mayhem {

// Who reports a number: every run, or only runs whose source is the embedded in-process pub/sub,
// or only runs consuming from a broker (numbers that mean nothing for the other are left out).
enum class NumberScope : std::uint8_t { kAll, kInProcess, kBroker };
enum class NumberKind : std::uint8_t { kCounter, kGauge };

// Prometheus families: samples of one family are written together, under one HELP and TYPE.
#define MAYHEM_NUMBER_FAMILIES(F)                                                         \
  F(kMessages, "mayhem_messages_total", "counter",                                        \
    "Messages per stage and outcome (publish, receive, pull, save, restart, settle)")     \
  F(kExtensions, "mayhem_lease_extensions_total", "counter", "Ack-deadline extensions")   \
  F(kLateExtensions, "mayhem_lease_late_extensions_total", "counter",                     \
    "Extensions that happened after the deadline had passed")                             \
  F(kExtensionFailures, "mayhem_lease_extension_failures_total", "counter",               \
    "Extensions that failed (retried on the lease thread's next pass)")                   \
  F(kLogOverruns, "mayhem_log_overruns_total", "counter",                                 \
    "Log lines the async logger queue dropped")                                           \
  F(kStoreRows, "mayhem_store_rows_total", "counter",                                     \
    "Saves written to the database, by outcome (inserted, duplicate)")                    \
  F(kStoreWriteFailures, "mayhem_store_write_failures_total", "counter",                  \
    "Saves the database could not write (reported as save failures)")                     \
  F(kStoreTransactions, "mayhem_store_transactions_total", "counter",                     \
    "Committed database transactions (group commits)")                                    \
  F(kInFlight, "mayhem_in_flight_messages", "gauge",                                      \
    "Messages pulled and not yet acked or nacked")                                        \
  F(kPeakInFlight, "mayhem_peak_in_flight_messages", "gauge",                             \
    "The most messages in flight at once")                                                \
  F(kMaxInFlight, "mayhem_max_in_flight_messages", "gauge", "The --max-in-flight bound")  \
  F(kQueueDepth, "mayhem_queue_depth_messages", "gauge", "Messages waiting, per queue")   \
  F(kPeakQueueDepth, "mayhem_peak_queue_depth_messages", "gauge",                         \
    "The most messages waiting at once, per queue")                                       \
  F(kQueueCapacity, "mayhem_queue_capacity_messages", "gauge", "The bound of each queue") \
  F(kLeasedLots, "mayhem_leased_lots", "gauge",                                           \
    "Lots (pulled batches) whose deadlines are extended")                                 \
  F(kAcksUnconfirmed, "mayhem_acks_unconfirmed_messages", "gauge",                        \
    "Acks sent that the broker has not confirmed yet (no successful flush after them)")   \
  F(kPoolMessages, "mayhem_pool_messages", "gauge",                                       \
    "Messages the message pool ever allocated (its memory high-water mark)")

// How a number is read when the service gathers them: `M(member)` from the `Metrics` counter or
// atomic the pipeline and the lease thread bump; `OWNER` when its owner fills it in (see top).
#define MAYHEM_NUMBER_FROM_METRICS(member) \
  [](const Metrics& m) -> std::uint64_t { return ::mayhem::read_number(m.member); }

// clang-format off
#define MAYHEM_NUMBERS(X, M, OWNER)                                                                \
  /* member,         kind,     scope,      unit,       writer,    read,                 JSON path,            family,              Prometheus labels,                        help */ \
  X(published,       kCounter, kInProcess, "messages", "publish", M(published),         "published",          kMessages,           "stage=\"publish\",outcome=\"published\"", "Messages published into the in-process pub/sub") \
  X(received,        kCounter, kBroker,    "messages", "source",  M(published),         "received",           kMessages,           "stage=\"receive\",outcome=\"received\"",  "Messages the broker delivered (redeliveries included)") \
  X(malformed,       kCounter, kBroker,    "messages", "source",  OWNER,                "malformed",          kMessages,           "stage=\"receive\",outcome=\"malformed\"", "Deliveries whose payload could not be decoded (terminated)") \
  X(redelivered,     kCounter, kBroker,    "messages", "source",  OWNER,                "redelivered",        kMessages,           "stage=\"receive\",outcome=\"redelivered\"", "Deliveries the broker had delivered before") \
  X(consumed,        kCounter, kAll,       "messages", "consume", M(consumed),          "consumed",           kMessages,           "stage=\"consume\",outcome=\"pulled\"",    "Messages consume pulled from the source") \
  X(saved,           kCounter, kAll,       "messages", "saved",   M(saved),             "saved",              kMessages,           "stage=\"saved\",outcome=\"ok\"",          "Saves that succeeded") \
  X(save_failed,     kCounter, kAll,       "messages", "saved",   M(save_failed),       "save_failed",        kMessages,           "stage=\"saved\",outcome=\"failed\"",      "Saves that failed") \
  X(restarted,       kCounter, kAll,       "messages", "restarted", M(restarted),       "restarted",          kMessages,           "stage=\"restarted\",outcome=\"ok\"",      "Restarts that succeeded") \
  X(restart_failed,  kCounter, kAll,       "messages", "restarted", M(restart_failed),  "restart_failed",     kMessages,           "stage=\"restarted\",outcome=\"failed\"",  "Restarts that failed every attempt") \
  X(restart_retries, kCounter, kAll,       "attempts", "restarted", M(restart_retries), "restart_retries",    kMessages,           "stage=\"restarted\",outcome=\"retried\"", "Restart attempts that failed and were retried") \
  X(acked,           kCounter, kAll,       "messages", "settle",  M(acked),           "acked",              kMessages,           "stage=\"settle\",outcome=\"acked\"",      "Messages acked (broker: acks the server confirmed)") \
  X(nacked,          kCounter, kAll,       "messages", "settle",  M(nacked),            "nacked",             kMessages,           "stage=\"settle\",outcome=\"nacked\"",     "Messages nacked") \
  X(extensions,      kCounter, kAll,       "extensions", "lease", M(extensions),        "extensions",         kExtensions,         "",                                        "Ack-deadline extensions (the first, at pull, included)") \
  X(late_extensions, kCounter, kAll,       "extensions", "lease", M(late_extensions),   "late_extensions",    kLateExtensions,     "",                                        "Extensions made after the deadline had passed") \
  X(extension_failed, kCounter, kAll,      "extensions", "lease", M(extension_failed),  "extension_failed",   kExtensionFailures,  "",                                        "Extensions that failed and were retried") \
  X(log_dropped,     kCounter, kAll,       "lines",    "log",     OWNER,                "log_dropped",        kLogOverruns,        "",                                        "Log lines the async queue dropped (--log-overflow drop-oldest)") \
  X(store_rows,      kCounter, kAll,       "rows",     "store",   OWNER,                "store.rows_inserted", kStoreRows,         "outcome=\"inserted\"",                    "Saves that created a row") \
  X(store_duplicates, kCounter, kAll,      "rows",     "store",   OWNER,                "store.duplicates",   kStoreRows,          "outcome=\"duplicate\"",                   "Saves whose message_id already had a row (redeliveries)") \
  X(store_write_failures, kCounter, kAll,  "rows",     "store",   OWNER,                "store.write_failures", kStoreWriteFailures, "",                                      "Saves the database could not write") \
  X(store_transactions, kCounter, kAll,    "transactions", "store", OWNER,              "store.transactions", kStoreTransactions,  "",                                        "Committed transactions (group commits)") \
  X(in_flight,       kGauge,   kAll,       "messages", "consume", M(in_flight),         "in_flight",          kInFlight,           "",                                        "Messages pulled and not yet settled") \
  X(peak_in_flight,  kGauge,   kAll,       "messages", "consume", M(peak_in_flight),    "peak_in_flight",     kPeakInFlight,       "",                                        "The most messages in flight at once") \
  X(max_in_flight,   kGauge,   kAll,       "messages", "config",  OWNER,                "max_in_flight",      kMaxInFlight,        "",                                        "The --max-in-flight bound") \
  X(backlog,         kGauge,   kAll,       "messages", "source",  OWNER,                "backlog",            kQueueDepth,         "queue=\"pubsub\"",                        "Messages waiting in the source to be pulled (in-process queue, or prefetched from the broker)") \
  X(log_queue_depth, kGauge,   kAll,       "lines",    "log",     OWNER,                "log_queue_depth",    kQueueDepth,         "queue=\"log\"",                           "Log lines waiting for the async writer") \
  X(peak_backlog,    kGauge,   kInProcess, "messages", "source",  OWNER,                "peak_backlog",       kPeakQueueDepth,     "queue=\"pubsub\"",                        "The most messages waiting in the in-process pub/sub at once") \
  X(queue_capacity,  kGauge,   kInProcess, "messages", "source",  OWNER,                "queue_capacity",     kQueueCapacity,      "queue=\"pubsub\"",                        "The in-process pub/sub's bound (--queue-capacity)") \
  X(leased_lots,     kGauge,   kAll,       "lots",     "lease",   OWNER,                "leased_lots",        kLeasedLots,         "",                                        "Lots whose deadlines the lease thread extends now") \
  X(ack_unconfirmed, kGauge,   kBroker,    "messages", "source",  OWNER,                "ack_unconfirmed",    kAcksUnconfirmed,    "",                                        "Acks sent that the broker has not confirmed (not in acked)") \
  X(pool_messages,   kGauge,   kAll,       "messages", "pools",   OWNER,                "pool_messages",      kPoolMessages,       "",                                        "Messages the pool ever allocated (memory high-water mark)")
// clang-format on

enum class NumberFamily : std::uint8_t {
#define MAYHEM_FAMILY_ID(id, name, type, help) id,
  MAYHEM_NUMBER_FAMILIES(MAYHEM_FAMILY_ID)
#undef MAYHEM_FAMILY_ID
      kCount
};

struct FamilyDef {
  const char* name;  // Prometheus metric name
  const char* type;  // "counter" or "gauge"
  const char* help;
};

inline constexpr FamilyDef kFamilies[] = {
#define MAYHEM_FAMILY_DEF(id, name, type, help) {name, type, help},
    MAYHEM_NUMBER_FAMILIES(MAYHEM_FAMILY_DEF)
#undef MAYHEM_FAMILY_DEF
};

inline std::uint64_t read_number(const Counter& c) {
  return c.get();
}
inline std::uint64_t read_number(const std::atomic<std::uint64_t>& a) {
  return a.load(std::memory_order_relaxed);
}

// Every number of one run (or one moment of it). `scope` says which source the run consumes from:
// numbers of the other scope are not reported (left 0 and out of every output).
struct Numbers {
#define MAYHEM_NUMBER_MEMBER(member, ...) std::uint64_t member = 0;
#define MAYHEM_NUMBER_IGNORE(...) nullptr
  MAYHEM_NUMBERS(MAYHEM_NUMBER_MEMBER, MAYHEM_NUMBER_IGNORE, nullptr)
#undef MAYHEM_NUMBER_MEMBER
#undef MAYHEM_NUMBER_IGNORE
  NumberScope scope = NumberScope::kInProcess;
};

struct NumberDef {
  const char* name;  // the C++ member, and the name `mayhem top` shows
  NumberKind kind;
  NumberScope scope;
  const char* unit;
  const char* writer;                             // the stage or part of the service that writes it
  std::uint64_t (*from_metrics)(const Metrics&);  // null: its owner fills it in
  const char* json_path;                          // "a.b": key b of object a
  NumberFamily family;
  const char* labels;  // Prometheus labels ("" for none)
  const char* help;
  std::uint64_t Numbers::*member;

  bool reported_in(NumberScope s) const { return scope == NumberScope::kAll || scope == s; }
};

inline constexpr NumberDef kNumberDefs[] = {
#define MAYHEM_NUMBER_DEF(member, kind, scope, unit, writer, read, path, family, labels, help) \
  {#member,                                                                                    \
   NumberKind::kind,                                                                           \
   NumberScope::scope,                                                                         \
   unit,                                                                                       \
   writer,                                                                                     \
   read,                                                                                       \
   path,                                                                                       \
   NumberFamily::family,                                                                       \
   labels,                                                                                     \
   help,                                                                                       \
   &Numbers::member},
    MAYHEM_NUMBERS(MAYHEM_NUMBER_DEF, MAYHEM_NUMBER_FROM_METRICS, nullptr)
#undef MAYHEM_NUMBER_DEF
};

inline constexpr std::size_t kNumberCount = sizeof(kNumberDefs) / sizeof(kNumberDefs[0]);

// Calls f(def, value) for each number `n` reports, in table order.
template <class F>
void for_each_number(const Numbers& n, F&& f) {
  for (const NumberDef& d : kNumberDefs)
    if (d.reported_in(n.scope)) f(d, n.*d.member);
}

// Fills the numbers the table reads from `Metrics` (the `M(...)` entries).
void read_metrics(const Metrics& m, Numbers& n);

// The numbers as JSON (nested by path: "store.rows_inserted" goes to j["store"]["rows_inserted"]),
// into `j` (which may hold other keys). `kinds`: only counters, only gauges, or both.
enum class KindFilter : std::uint8_t { kAll, kCounters, kGauges };
void numbers_to_json(const Numbers& n, nlohmann::json& j, KindFilter kinds = KindFilter::kAll);
// Reads back what numbers_to_json wrote (missing keys stay 0); `n.scope` must be set first.
void numbers_from_json(const nlohmann::json& j, Numbers& n, KindFilter kinds = KindFilter::kAll);
// Where a number sits in a JSON object written by numbers_to_json (null if absent).
const nlohmann::json* find_number(const nlohmann::json& j, const NumberDef& d);
const char* to_string(NumberScope s);

}  // namespace mayhem
