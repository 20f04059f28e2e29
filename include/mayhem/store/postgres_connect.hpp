// Connecting to PostgreSQL at start, riding out a restart: a server that answers "the database
// system is shutting down / starting up / in recovery" (SQLSTATE 57P03) is waited for with
// backoff (100 ms doubling to 2 s), logged when the wait starts and every 5 s, and the connection
// it accepts is logged with the time it took; once it said so, a refused connection counts as
// the same restart. Any other failure (unreachable, wrong database, password) or the wait running
// out returns at once. The PostgreSQL store calls it for each connection it opens at start.
// Use: `std::string e; PGconn* c = connect_postgres(url, wait, log, redacted, e); if (!c) ...`
#pragma once

#include <spdlog/logger.h>

#include <string>
#include <string_view>

#include "mayhem/clock.hpp"

struct pg_conn;

namespace mayhem {

// Connects to `url` (a libpq URI; Mayhem's defaults first, which the URL may override:
// connect_timeout 10 s, application_name mayhem, TCP keepalives 10 s / 5 s / 3), retried as above
// for up to `wait`. Returns the open connection, or nullptr with `error` set to libpq's message
// on one line. `name` is the redacted URL for the log.
pg_conn* connect_postgres(const std::string& url, Nanos wait, spdlog::logger& log,
                          const std::string& name, std::string& error);

// libpq's message on one line: its newlines and tabs ("...failed: Connection refused\n\tIs the
// server running...") and runs of spaces become one space.
std::string postgres_one_line(std::string_view text);

// True when libpq's connection error says the server is restarting (57P03's texts).
bool postgres_restarting(const std::string& error);

}  // namespace mayhem
