// A throwaway PostgreSQL cluster for the tests: `initdb` into a temporary directory, then
// `postgres -D DIR/data -p PORT -k DIR -c listen_addresses=127.0.0.1` on a free loopback port,
// waited for until it accepts connections. PostgreSQL refuses to run as root: when the tests run
// as root, initdb and the server run as the `postgres` account (setuid in the forked child).
// TCP logins need a password (scram-sha-256); the superuser `postgres` logs in over the socket
// in DIR without one (query()). The fixture makes role `mayhem` (password `mayhem`) and database
// `mayhem` it owns: url() is the store URL for them. The server is stopped by its PID (fast
// shutdown, SIGINT; SIGKILL if it has not exited after 20 s) when the fixture goes out of scope,
// also when a REQUIRE throws; if the test process dies, the kernel kills the server
// (PR_SET_PDEATHSIG). stop() + start() (or restart()) play a database restart: same port, same
// data. create_database() gives sections that share one server a database each.
// Use: `PostgresServer pg; ... pg.url() ...; pg.query("SELECT count(*) FROM saves", "mayhem");`
#pragma once

#include <fcntl.h>
#include <grp.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "support/server_process.hpp"

namespace mayhem::test {

#ifndef POSTGRES_BIN_DIR
#define POSTGRES_BIN_DIR "/usr/lib/postgresql/15/bin"
#endif

class PostgresServer {
 public:
  PostgresServer() {
    char tmpl[] = "/tmp/mayhem-pg-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    if (geteuid() == 0) {
      const passwd* pw = getpwnam("postgres");
      if (!pw)
        throw std::runtime_error(
            "running as root needs the `postgres` account (tools/install-deps.sh installs "
            "postgresql)");
      uid_ = pw->pw_uid;
      gid_ = pw->pw_gid;
      if (chown(dir_.c_str(), uid_, gid_) != 0) throw std::runtime_error("chown failed");
    }
    const std::string pwfile = dir_ + "/pw";
    std::ofstream(pwfile) << "postgres\n";
    if (uid_ != 0 && chown(pwfile.c_str(), uid_, gid_) != 0)
      throw std::runtime_error("chown failed");
    if (int rc = run_as_postgres({POSTGRES_BIN_DIR "/initdb", "-D", data(), "-U", "postgres",
                                  "--pwfile", pwfile, "--auth-local=trust",
                                  "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"});
        rc != 0)
      throw std::runtime_error("initdb failed (exit " + std::to_string(rc) +
                               "); its output ends: " + file_tail(dir_ + "/initdb.log"));
    // free_loopback_port() closes its probe socket before the server binds it: another process may take
    // it in between (ctest -j2). Then the server exits at once: pick another port.
    for (int attempt = 1;; ++attempt) {
      port_ = free_loopback_port();
      try {
        start();
        break;
      } catch (const ExitedEarly&) {
        if (attempt == 5) throw;
      }
    }
    query("CREATE ROLE mayhem LOGIN PASSWORD 'mayhem'");
    query("CREATE DATABASE mayhem OWNER mayhem");
  }
  ~PostgresServer() {
    stop();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  std::string url(const std::string& user = "mayhem", const std::string& password = "mayhem",
                  const std::string& db = "mayhem") const {
    return "postgres://" + user + ":" + password + "@127.0.0.1:" + std::to_string(port_) + "/" + db;
  }

  // Stops the server by its PID (SIGINT: fast shutdown) and waits for it to exit.
  void stop(int signo = SIGINT) {
    stop_server(pid_, signo, std::chrono::seconds(20));
    pid_ = -1;
  }
  // Starts it (again: same port, same data) and waits until it accepts connections.
  void start() {
    const std::string port = std::to_string(port_);
    const std::string log = dir_ + "/server.log";
    pid_ = spawn(
        {POSTGRES_BIN_DIR "/postgres", "-D", data(), "-p", port, "-k", dir_, "-c",
         "listen_addresses=127.0.0.1", "-c", "max_connections=40", "-c", "shared_buffers=32MB"},
        log);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    const std::string conninfo = admin_conninfo("postgres");
    while (PQping(conninfo.c_str()) != PQPING_OK) {
      int st = 0;
      if (waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = -1;
        throw ExitedEarly("postgres exited at start on port " + port +
                          "; its log ends: " + file_tail(log));
      }
      if (std::chrono::steady_clock::now() > deadline) {
        stop(SIGKILL);
        throw std::runtime_error("postgres did not accept connections within 30 s");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  void restart() {
    stop(SIGINT);
    start();
  }

  // Runs `sql` as the superuser in `db`; the first column of the first row ("" if none). Throws
  // with the server's message on an error.
  std::string query(const std::string& sql, const std::string& db = "postgres") const {
    PGconn* c = PQconnectdb(admin_conninfo(db).c_str());
    if (PQstatus(c) != CONNECTION_OK) {
      const std::string e = PQerrorMessage(c);
      PQfinish(c);
      throw std::runtime_error("cannot connect to the test cluster: " + e);
    }
    PQsetNoticeProcessor(
        c, [](void*, const char*) {}, nullptr);
    PGresult* r = PQexec(c, sql.c_str());
    const ExecStatusType st = PQresultStatus(r);
    std::string out;
    std::string err;
    if (st == PGRES_TUPLES_OK && PQntuples(r) > 0)
      out = PQgetvalue(r, 0, 0);
    else if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
      err = PQresultErrorMessage(r);
    PQclear(r);
    PQfinish(c);
    if (!err.empty()) throw std::runtime_error(sql + ": " + err);
    return out;
  }
  long long count(const std::string& sql, const std::string& db = "mayhem") const {
    return std::stoll(query(sql, db));
  }
  // A new, empty database owned by `mayhem` (mayhem_1, mayhem_2, ...): its name. Sections of one
  // test case share a server (initdb costs seconds) and take a database each.
  std::string create_database() {
    const std::string name = "mayhem_" + std::to_string(++databases_);
    query("CREATE DATABASE " + name + " OWNER mayhem");
    return name;
  }

 private:
  struct ExitedEarly : std::runtime_error {
    using std::runtime_error::runtime_error;
  };

  std::string data() const { return dir_ + "/data"; }
  std::string admin_conninfo(const std::string& db) const {
    return "host=" + dir_ + " port=" + std::to_string(port_) + " user=postgres dbname=" + db +
           " connect_timeout=5";
  }

  // Forks and execs `args` (as `postgres` when we are root), its output appended to `log`.
  pid_t spawn(std::vector<std::string> args, const std::string& log) const {
    return spawn_server(std::move(args), log, uid_, gid_);
  }

  // Runs `args` to completion (initdb); its exit status.
  int run_as_postgres(std::vector<std::string> args) const {
    const pid_t pid = spawn(std::move(args), dir_ + "/initdb.log");
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }

  std::string dir_;
  uid_t uid_ = 0;
  gid_t gid_ = 0;
  int port_ = 0;
  pid_t pid_ = -1;
  int databases_ = 0;
};

}  // namespace mayhem::test
