// PostgresStore: a GroupCommitStore (group_commit.hpp) over one libpq connection (see
// postgres_store.hpp). Why one statement rather than pipeline mode: a single statement is its own
// transaction, so BEGIN/COMMIT cost nothing extra, one prepared statement carries any number of
// rows as nine array parameters (no 65,535-parameter limit, no statement per batch size), and the
// round trip is one Bind/Execute/Sync in libpq's ordinary blocking API. Pipeline mode would need
// BEGIN, one INSERT per row (or the same arrays), the UPDATEs and COMMIT queued and their results
// read back one by one for the same single round trip.
// The arrays go in PostgreSQL's binary format (array_send's layout: no text to parse on the
// server), built into buffers that keep their capacity, as do the orderings below: nothing is
// allocated per message in the steady state. Both arrays are in message_id order (index pages
// visited in key order; concurrent writers take row locks in one order), and the settlements hold
// one entry per message (the last), so the UPDATE needs no sort.
#include "mayhem/store/postgres_store.hpp"

#include <fmt/format.h>
#include <libpq-fe.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

namespace mayhem {

namespace {

// fillfactor 50: room on each page for its rows' settlement UPDATEs, which are then HOT (no index
// entry): measured 50% faster settlements than at the default 100. COLLATE "C": the key index
// compares bytes (the database's default collation would go through strcoll for every comparison,
// and C.UTF-8 is not "C" to PostgreSQL 15); equality, all the semantics need, is the same.
constexpr const char* kSchema =
    "CREATE TABLE IF NOT EXISTS saves (\n"
    "  message_id    text COLLATE \"C\" PRIMARY KEY,  -- uuid, 8-4-4-4-12\n"
    "  instance_name text NOT NULL,\n"
    "  hostname      text NOT NULL,\n"
    "  published_at  bigint NOT NULL,   -- unix ms\n"
    "  saved_at      bigint NOT NULL,   -- unix ms, the commit that wrote the row\n"
    "  settled_at    bigint,            -- unix ms, last settlement (NULL until settled)\n"
    "  outcome       text NOT NULL,     -- saved | acked | nacked (last; acked is final)\n"
    "  restarted     integer            -- 1 restarted, 0 restart failed or cancelled\n"
    ") WITH (fillfactor = 50)";

// $1-$4 the saves (message_id, instance_name, hostname, published_at), $5 saved_at, $6-$9 the
// settlements (message_id, outcome, restarted, settled_at; one per message: its last ack, else its
// last settlement). A row once `acked` stays `acked`: an earlier delivery's late nack must not
// undo a later ack. The UPDATE sees the rows committed before this statement: a settlement's row
// always is.
constexpr const char* kWrite =
    "WITH ins AS (\n"
    "  INSERT INTO saves (message_id, instance_name, hostname, published_at, saved_at, outcome)\n"
    "  SELECT v.message_id, v.instance_name, v.hostname, v.published_at, $5::bigint, 'saved'\n"
    "  FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])\n"
    "       AS v(message_id, instance_name, hostname, published_at)\n"
    "  ON CONFLICT (message_id) DO NOTHING RETURNING 1),\n"
    "upd AS (\n"
    "  UPDATE saves AS s SET outcome = u.outcome, restarted = u.restarted,\n"
    "                        settled_at = u.settled_at\n"
    "  FROM unnest($6::text[], $7::text[], $8::integer[], $9::bigint[])\n"
    "       AS u(message_id, outcome, restarted, settled_at)\n"
    "  WHERE s.message_id = u.message_id AND s.outcome <> 'acked' RETURNING 1)\n"
    "SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM upd)";

// Creating the table: processes that start together take turns (a transaction-level advisory
// lock; the key is arbitrary but fixed), so CREATE TABLE IF NOT EXISTS never races itself.
constexpr const char* kCreate =
    "BEGIN;\nSELECT pg_advisory_xact_lock(7195322145104219);\n{};\nCOMMIT";

// One line: libpq's messages have newlines and tabs ("...failed: Connection refused\n\tIs the
// server running...").
std::string one_line(std::string_view text) {
  std::string out;
  bool space = false;
  for (char c : text) {
    if (c == '\n' || c == '\t' || c == '\r' || c == ' ') {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += c;
  }
  return out;
}

// Worth another try: the connection is gone, the server is shutting down or starting, a
// serialization failure or deadlock (class 40), lack of resources (53), a lock not available.
bool transient(PGconn* c, const PGresult* r) {
  if (PQstatus(c) != CONNECTION_OK) return true;
  const char* code = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  if (!code) return true;  // no answer from the server
  const std::string_view s(code);
  const std::string_view cls = s.substr(0, 2);
  return cls == "08" || cls == "40" || cls == "53" || s == "57P01" || s == "57P02" ||
         s == "57P03" || s == "55P03";
}

// A one-dimensional array parameter in PostgreSQL's binary format (what array_recv reads): a
// header (dimensions, null flag, element type, length, lower bound), then each element as its
// length and its big-endian bytes. The buffer keeps its capacity across batches.
class BinaryArray {
 public:
  void start(std::uint32_t element_oid) {
    buf_.clear();
    put32(1);  // dimensions, rewritten to 0 by finish() when empty
    put32(0);  // no NULLs
    put32(element_oid);
    put32(0);  // length, set by finish()
    put32(1);  // lower bound
    n_ = 0;
  }
  void text(std::string_view s) {
    put32(static_cast<std::uint32_t>(s.size()));
    buf_.append(s);
    ++n_;
  }
  void int8(std::int64_t v) {
    put32(8);
    put32(static_cast<std::uint32_t>(static_cast<std::uint64_t>(v) >> 32));
    put32(static_cast<std::uint32_t>(static_cast<std::uint64_t>(v)));
    ++n_;
  }
  void int4(std::int32_t v) {
    put32(4);
    put32(static_cast<std::uint32_t>(v));
    ++n_;
  }
  void finish() {
    if (n_ == 0) {
      // An empty array has no dimensions: just the dimension count, null flag and element type.
      set32(0, 0);
      buf_.resize(12);
    } else {
      set32(12, n_);
    }
  }
  const char* data() const { return buf_.data(); }
  int size() const { return static_cast<int>(buf_.size()); }

 private:
  void put32(std::uint32_t v) {
    const char b[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                       static_cast<char>(v >> 8), static_cast<char>(v)};
    buf_.append(b, 4);
  }
  void set32(std::size_t at, std::uint32_t v) {
    buf_[at] = static_cast<char>(v >> 24);
    buf_[at + 1] = static_cast<char>(v >> 16);
    buf_[at + 2] = static_cast<char>(v >> 8);
    buf_[at + 3] = static_cast<char>(v);
  }
  std::string buf_;
  std::uint32_t n_ = 0;
};

// Element type OIDs (pg_type.dat; fixed across releases).
constexpr std::uint32_t kInt4Oid = 23, kInt8Oid = 20, kTextOid = 25;

// The nine parameters of the write; $5 (saved_at) is one binary bigint.
struct Arrays {
  BinaryArray ids, names, hosts, published, s_ids, s_outcomes, s_restarted, s_settled;
  char saved_at[8] = {};
  // Indices into the saves and the settlements, in message_id order (reused across batches).
  std::vector<std::uint32_t> save_order, settle_order;
  void start() {
    for (BinaryArray* a : {&ids, &names, &hosts, &s_ids, &s_outcomes}) a->start(kTextOid);
    published.start(kInt8Oid);
    s_settled.start(kInt8Oid);
    s_restarted.start(kInt4Oid);
  }
  void finish(std::int64_t now) {
    for (BinaryArray* a :
         {&ids, &names, &hosts, &published, &s_ids, &s_outcomes, &s_restarted, &s_settled})
      a->finish();
    const auto v = static_cast<std::uint64_t>(now);
    for (int i = 0; i < 8; ++i) saved_at[i] = static_cast<char>(v >> (56 - 8 * i));
  }
};

class PostgresBackend final : public StoreBackend {
 public:
  PostgresBackend(std::string url, const Clock& clock, std::shared_ptr<spdlog::logger> log)
      : url_(std::move(url)), log_(std::move(log)) {
    wall_offset_ns_ = unix_ms() * 1'000'000 - clock.now();
  }
  ~PostgresBackend() override { close(); }

  void open();
  Result write(const std::vector<Message*>& batch, const std::vector<Settlement>& done,
               WriteCounts& counts) override;
  void reconnect() override;
  std::string error() const override { return error_; }
  void close() override {
    if (conn_) PQfinish(conn_);
    conn_ = nullptr;
  }
  const char* label() const override { return "PostgreSQL store"; }
  const char* thread_name() const override { return "mayhem-postgres"; }
  std::string describe() const override {
    return fmt::format("{} (one connection, one writer, group commit, synchronous_commit on)",
                       PostgresStore::redact(url_));
  }

 private:
  [[noreturn]] void fail(const std::string& what) {
    const std::string msg = fmt::format("--store {}: {}", PostgresStore::redact(url_), what);
    close();
    throw StoreError(msg);
  }
  std::string conn_error() const {
    return one_line(conn_ ? PQerrorMessage(conn_) : "out of memory");
  }
  static std::string result_error(const PGresult* r) {
    const char* primary = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : nullptr;
    return one_line(primary ? primary : (r ? PQresultErrorMessage(r) : ""));
  }
  // Runs `sql` (no parameters); an empty string when it worked, else the error.
  std::string exec(const char* sql) {
    PGresult* r = PQexec(conn_, sql);
    const ExecStatusType st = PQresultStatus(r);
    std::string err;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
      err = result_error(r);
      if (err.empty()) err = conn_error();
    }
    PQclear(r);
    return err;
  }
  // What every new connection needs: quiet notices, synchronous commits, the prepared statement.
  std::string set_up_session();
  // Runs the prepared write over `a`; fills inserted/recorded when it worked.
  PGresult* run(const Arrays& a);
  void fill(Arrays& a, Message* const* msgs, std::size_t n, const std::vector<Settlement>* done,
            std::int64_t now);
  Result row_by_row(const std::vector<Message*>& batch, const std::vector<Settlement>& done,
                    std::int64_t now, WriteCounts& counts);

  std::string url_;
  std::shared_ptr<spdlog::logger> log_;
  Nanos wall_offset_ns_ = 0;
  std::string error_;
  PGconn* conn_ = nullptr;
  Arrays arrays_;
};

std::string PostgresBackend::set_up_session() {
  PQsetNoticeProcessor(
      conn_, [](void*, const char*) {}, nullptr);
  if (auto e = exec("SET synchronous_commit = on"); !e.empty())
    return "cannot set synchronous_commit: " + e;
  // The UPDATE must find each row by its key: with thousands of settlements per commit the planner
  // hashed the whole table, a scan per commit growing with it (79 ms against 21 ms by index for
  // 3,000 settlements in 200,000 rows). This connection runs nothing else.
  if (auto e = exec("SET enable_hashjoin = off; SET enable_mergejoin = off"); !e.empty())
    return "cannot set the planner's options: " + e;
  PGresult* r = PQprepare(conn_, "mayhem_write", kWrite, 9, nullptr);
  std::string err;
  if (PQresultStatus(r) != PGRES_COMMAND_OK) err = "cannot prepare the write: " + result_error(r);
  PQclear(r);
  return err;
}

void PostgresBackend::open() {
  // Defaults the URL may override (its settings are processed after these).
  const char* keys[] = {"connect_timeout",
                        "application_name",
                        "keepalives_idle",
                        "keepalives_interval",
                        "keepalives_count",
                        "dbname",
                        nullptr};
  const char* values[] = {"10", "mayhem", "10", "5", "3", url_.c_str(), nullptr};
  conn_ = PQconnectdbParams(keys, values, 1);
  if (PQstatus(conn_) != CONNECTION_OK) fail("cannot connect: " + conn_error());
  PQsetNoticeProcessor(
      conn_, [](void*, const char*) {}, nullptr);
  // The table: created when missing (a role that may write to an existing table need not be
  // allowed to create one).
  PGresult* r = PQexec(conn_, "SELECT to_regclass('saves') IS NOT NULL");
  const bool ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
  const bool exists = ok && std::strcmp(PQgetvalue(r, 0, 0), "t") == 0;
  const std::string err = ok ? "" : result_error(r);
  PQclear(r);
  if (!ok) fail("cannot look up table saves: " + err);
  if (!exists) {
    if (auto e = exec(fmt::format(fmt::runtime(kCreate), kSchema).c_str()); !e.empty())
      fail("cannot create table saves: " + e);
  }
  if (auto e = set_up_session(); !e.empty()) fail(e);
  // Each write is one statement in autocommit: no transaction may be left open.
  if (PQtransactionStatus(conn_) != PQTRANS_IDLE) fail("a transaction was left open at start");
  // May it insert and update? Privileges are checked when the statement starts, rows or none.
  arrays_.start();
  arrays_.finish(0);
  r = run(arrays_);
  const bool writable = PQresultStatus(r) == PGRES_TUPLES_OK;
  const std::string werr = writable ? "" : result_error(r);
  PQclear(r);
  if (!writable) fail("cannot write to table saves: " + werr);
}

void PostgresBackend::reconnect() {
  if (!conn_) return;
  PQreset(conn_);
  if (PQstatus(conn_) != CONNECTION_OK) {
    error_ = "cannot reconnect: " + conn_error();
    return;
  }
  if (auto e = set_up_session(); !e.empty()) error_ = e;
}

PGresult* PostgresBackend::run(const Arrays& a) {
  const BinaryArray* arrays[9] = {&a.ids,   &a.names,      &a.hosts,       &a.published, nullptr,
                                  &a.s_ids, &a.s_outcomes, &a.s_restarted, &a.s_settled};
  const char* params[9];
  int lengths[9];
  int formats[9];
  for (int i = 0; i < 9; ++i) {
    params[i] = arrays[i] ? arrays[i]->data() : a.saved_at;
    lengths[i] = arrays[i] ? arrays[i]->size() : static_cast<int>(sizeof a.saved_at);
    formats[i] = 1;
  }
  return PQexecPrepared(conn_, "mayhem_write", 9, params, lengths, formats, 0);
}

void PostgresBackend::fill(Arrays& a, Message* const* msgs, std::size_t n,
                           const std::vector<Settlement>* done, std::int64_t now) {
  a.start();
  // The saves in message_id order (the uuid's bytes sort as its text does).
  a.save_order.resize(n);
  for (std::size_t i = 0; i < n; ++i) a.save_order[i] = static_cast<std::uint32_t>(i);
  std::sort(a.save_order.begin(), a.save_order.end(),
            [msgs](std::uint32_t x, std::uint32_t y) { return msgs[x]->id < msgs[y]->id; });
  char id[37];
  char host[64];
  for (const std::uint32_t i : a.save_order) {
    const Message& m = *msgs[i];
    uuid_text(m.id, id);
    a.ids.text(std::string_view(id, 36));
    a.names.text(
        std::string_view(m.instance_name, strnlen(m.instance_name, sizeof m.instance_name - 1)));
    const auto hn = fmt::format_to_n(host, sizeof host, "{}", Host{m}).size;
    a.hosts.text(std::string_view(host, std::min(hn, sizeof host)));
    a.published.int8((m.published_ns + wall_offset_ns_) / 1'000'000);
  }
  if (done) {
    // One settlement per message, in message_id order: sorted by id and then by position, each
    // run of equal ids gives its last ack (acked is final), else its last settlement.
    const std::vector<Settlement>& d = *done;
    std::vector<std::uint32_t>& order = a.settle_order;
    order.resize(d.size());
    for (std::size_t i = 0; i < d.size(); ++i) order[i] = static_cast<std::uint32_t>(i);
    std::sort(order.begin(), order.end(), [&d](std::uint32_t x, std::uint32_t y) {
      return d[x].id < d[y].id || (d[x].id == d[y].id && x < y);
    });
    for (std::size_t k = 0, pick = 0; k < order.size(); ++k) {
      if (k == 0 || d[order[k]].id != d[order[k - 1]].id || d[order[k]].acked ||
          !d[order[pick]].acked)
        pick = k;
      if (k + 1 < order.size() && d[order[k + 1]].id == d[order[k]].id) continue;
      const Settlement& s = d[order[pick]];
      uuid_text(s.id, id);
      a.s_ids.text(std::string_view(id, 36));
      a.s_outcomes.text(s.acked ? "acked" : "nacked");
      a.s_restarted.int4(s.restarted ? 1 : 0);
      a.s_settled.int8(s.settled_ms);
    }
  }
  a.finish(now);
}

// Counts of a successful write: rows inserted, settlements recorded.
std::pair<std::uint64_t, std::uint64_t> counts_of(const PGresult* r) {
  return {std::strtoull(PQgetvalue(r, 0, 0), nullptr, 10),
          std::strtoull(PQgetvalue(r, 0, 1), nullptr, 10)};
}

// One group commit: one statement (one round trip, one transaction).
StoreBackend::Result PostgresBackend::write(const std::vector<Message*>& batch,
                                            const std::vector<Settlement>& done,
                                            WriteCounts& counts) {
  if (PQstatus(conn_) != CONNECTION_OK) {
    error_ = "not connected: " + conn_error();
    return Result::kTransient;
  }
  const std::int64_t now = unix_ms();
  fill(arrays_, batch.data(), batch.size(), &done, now);
  PGresult* r = run(arrays_);
  if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
    const auto [inserted, recorded] = counts_of(r);
    PQclear(r);
    counts.inserted = inserted;
    counts.duplicates = batch.size() - std::min<std::uint64_t>(inserted, batch.size());
    counts.recorded = recorded;
    counts.transactions = 1;
    return Result::kDone;
  }
  error_ = result_error(r);
  if (error_.empty()) error_ = conn_error();
  const bool again = transient(conn_, r);
  PQclear(r);
  if (again) return Result::kTransient;
  return row_by_row(batch, done, now, counts);
}

// The group's statement failed for good (a row the table refuses): each save on its own, then the
// settlements, so that only the bad rows fail. A transient failure meanwhile retries the whole
// group (rows already written count as duplicates then).
StoreBackend::Result PostgresBackend::row_by_row(const std::vector<Message*>& batch,
                                                 const std::vector<Settlement>& done,
                                                 std::int64_t now, WriteCounts& counts) {
  const std::string group_error = error_;
  Arrays one;
  for (Message* m : batch) {
    fill(one, &m, 1, nullptr, now);
    PGresult* r = run(one);
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
      const auto inserted = counts_of(r).first;
      counts.inserted += inserted;
      counts.duplicates += 1 - std::min<std::uint64_t>(inserted, 1);
      ++counts.transactions;
    } else if (transient(conn_, r)) {
      error_ = result_error(r);
      if (error_.empty()) error_ = conn_error();
      PQclear(r);
      return Result::kTransient;
    } else {
      m->save_failed = true;
      ++counts.failed;
    }
    PQclear(r);
  }
  if (counts.failed != 0)
    log_->error("PostgreSQL store: {} of {} saves failed: {}", counts.failed, batch.size(),
                group_error);
  if (!done.empty()) {
    fill(one, nullptr, 0, &done, now);
    PGresult* r = run(one);
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
      counts.recorded = counts_of(r).second;
      ++counts.transactions;
    } else if (transient(conn_, r)) {
      error_ = result_error(r);
      PQclear(r);
      return Result::kTransient;
    } else {
      counts.settlements_lost = true;
      log_->error("PostgreSQL store: {} settlements not recorded: {}", done.size(),
                  result_error(r));
    }
    PQclear(r);
  }
  return Result::kDone;
}

std::unique_ptr<StoreBackend> open_postgres(const std::string& url, const Clock& clock,
                                            std::shared_ptr<spdlog::logger> log) {
  auto db = std::make_unique<PostgresBackend>(url, clock, std::move(log));
  db->open();
  return db;
}

}  // namespace

PostgresStore::PostgresStore(const std::string& url, BatchPool& batches, const Clock& clock,
                             std::shared_ptr<spdlog::logger> log, Nanos retry_for,
                             bool group_commit)
    : GroupCommitStore(open_postgres(url, clock, log), batches, clock, log, retry_for,
                       group_commit) {}

const char* PostgresStore::schema() {
  return kSchema;
}

std::string PostgresStore::redact(const std::string& url) {
  std::string out = url;
  const auto scheme = out.find("://");
  if (scheme != std::string::npos) {
    const auto start = scheme + 3;
    const auto end = out.find_first_of("/?", start);
    const auto at = out.rfind('@', end == std::string::npos ? out.size() : end);
    if (at != std::string::npos && at >= start) {
      const auto colon = out.find(':', start);
      if (colon != std::string::npos && colon < at) out.replace(colon + 1, at - colon - 1, "***");
    }
  }
  // A password given as a parameter: ?password=... or &password=...
  for (std::size_t p = out.find("password="); p != std::string::npos;
       p = out.find("password=", p + 1)) {
    if (p != 0 && out[p - 1] != '?' && out[p - 1] != '&') continue;
    const auto v = p + 9;
    const auto e = out.find('&', v);
    out.replace(v, (e == std::string::npos ? out.size() : e) - v, "***");
  }
  return out;
}

}  // namespace mayhem
