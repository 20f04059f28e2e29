// connect_postgres (postgres_connect.hpp): libpq's connection at start, a restart waited out.
#include "mayhem/store/postgres_connect.hpp"

#include <libpq-fe.h>

#include <algorithm>
#include <chrono>
#include <thread>

namespace mayhem {

std::string postgres_one_line(std::string_view text) {
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

bool postgres_restarting(const std::string& error) {
  for (const char* s : {"shutting down", "starting up", "in recovery", "not yet accepting"})
    if (error.find(s) != std::string::npos) return true;
  return false;
}

pg_conn* connect_postgres(const std::string& url, Nanos wait, spdlog::logger& log,
                          const std::string& name, std::string& error) {
  // Defaults the URL may override (its settings are processed after these).
  const char* keys[] = {"connect_timeout",
                        "application_name",
                        "keepalives_idle",
                        "keepalives_interval",
                        "keepalives_count",
                        "dbname",
                        nullptr};
  const char* values[] = {"10", "mayhem", "10", "5", "3", url.c_str(), nullptr};
  using std::chrono::steady_clock;
  const auto start = steady_clock::now();
  auto next_log = start;
  auto pause = std::chrono::milliseconds(100);
  bool said_restarting = false;
  for (;;) {
    PGconn* c = PQconnectdbParams(keys, values, 1);
    if (PQstatus(c) == CONNECTION_OK) {
      if (said_restarting)
        log.info("--store {}: PostgreSQL accepted the connection after {:.1f} s", name,
                 std::chrono::duration<double>(steady_clock::now() - start).count());
      return c;
    }
    error = postgres_one_line(c ? PQerrorMessage(c) : "out of memory");
    PQfinish(c);
    // Once the server said it restarts, a refused connection is that restart (down a moment).
    said_restarting = said_restarting || postgres_restarting(error);
    const auto now = steady_clock::now();
    if (!said_restarting || now - start >= std::chrono::nanoseconds(wait)) return nullptr;
    if (now >= next_log) {
      log.warn("--store {}: PostgreSQL is restarting ({}); waiting up to {:.0f} s", name, error,
               static_cast<double>(wait) / 1e9);
      next_log = now + std::chrono::seconds(5);
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(2000));
  }
}

}  // namespace mayhem
