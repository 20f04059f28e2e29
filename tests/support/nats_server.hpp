// A real `nats-server -js` for the tests: started on a free loopback port with a temporary store
// directory, stopped by its PID (SIGTERM, then SIGKILL) when the fixture goes out of scope, also
// when a REQUIRE throws; if the test process itself dies, the kernel kills the server
// (PR_SET_PDEATHSIG). `kill()` + `restart()` play the broker going away and coming back (same
// port, same store). `consumer_state()` reads the server's own accounting for a durable consumer
// (`consumer_state_from()` maps the infos to it; the cluster fixture uses it too).
// Use: `NatsServer srv; ... srv.url() ...; auto c = srv.consumer_state("MAYHEM", "mayhem");`
#pragma once

#include <fcntl.h>
#include <nats/nats.h>
#include <netinet/in.h>
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

#include "support/server_process.hpp"

namespace mayhem::test {

#ifndef NATS_SERVER_BINARY
#define NATS_SERVER_BINARY "nats-server"
#endif

struct ConsumerState {
  bool found = false;
  std::uint64_t delivered_stream = 0;    // highest stream sequence delivered
  std::uint64_t delivered_consumer = 0;  // deliveries, redeliveries included
  std::uint64_t ack_floor_stream = 0;    // every stream sequence up to here is acked
  std::int64_t ack_pending = 0;          // delivered, not acked
  std::int64_t redelivered = 0;
  std::uint64_t pending = 0;  // not yet delivered
  std::uint64_t stream_msgs = 0;
  std::uint64_t stream_last_seq = 0;
  std::int64_t ack_wait_ns = 0;
};

// The servers' accounting from a consumer's and its stream's info (either may be null: found says
// whether the consumer's was there). Both fixtures read it this way.
inline ConsumerState consumer_state_from(const jsConsumerInfo* ci, const jsStreamInfo* si) {
  ConsumerState st;
  if (ci != nullptr) {
    st.found = true;
    st.delivered_stream = ci->Delivered.Stream;
    st.delivered_consumer = ci->Delivered.Consumer;
    st.ack_floor_stream = ci->AckFloor.Stream;
    st.ack_pending = ci->NumAckPending;
    st.redelivered = ci->NumRedelivered;
    st.pending = ci->NumPending;
    st.ack_wait_ns = ci->Config->AckWait;
  }
  if (si != nullptr) {
    st.stream_msgs = si->State.Msgs;
    st.stream_last_seq = si->State.LastSeq;
  }
  return st;
}

class NatsServer {
 public:
  NatsServer() {
    char tmpl[] = "/tmp/mayhem-nats-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    // free_loopback_port() closes its probe socket before nats-server binds the port, so under ctest -j2
    // another process can take it in between; the server then exits at once. Pick another port
    // (restart() cannot: the broker must come back where it was).
    for (int attempt = 1;; ++attempt) {
      port_ = free_loopback_port();
      try {
        start();
        return;
      } catch (const ExitedEarly&) {
        if (attempt == 5) throw;
      }
    }
  }
  ~NatsServer() {
    kill(SIGTERM);
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  NatsServer(const NatsServer&) = delete;
  NatsServer& operator=(const NatsServer&) = delete;

  int port() const { return port_; }
  std::string url() const { return "nats://127.0.0.1:" + std::to_string(port_); }
  pid_t pid() const { return pid_; }

  // Stops the server (by PID) and waits for it to exit.
  void kill(int signo) {
    stop_server(pid_, signo, std::chrono::seconds(5));
    pid_ = -1;
  }
  // Starts it again on the same port with the same store.
  void restart() { start(); }

  ConsumerState consumer_state(const std::string& stream, const std::string& durable) const {
    ConsumerState st;
    natsConnection* nc = nullptr;
    jsCtx* js = nullptr;
    if (natsConnection_ConnectTo(&nc, url().c_str()) != NATS_OK)
      throw std::runtime_error("consumer_state: cannot connect to " + url());
    if (natsConnection_JetStream(&js, nc, nullptr) == NATS_OK) {
      jsConsumerInfo* ci = nullptr;
      jsStreamInfo* si = nullptr;
      if (js_GetConsumerInfo(&ci, js, stream.c_str(), durable.c_str(), nullptr, nullptr) != NATS_OK)
        ci = nullptr;
      if (js_GetStreamInfo(&si, js, stream.c_str(), nullptr, nullptr) != NATS_OK) si = nullptr;
      st = consumer_state_from(ci, si);
      jsConsumerInfo_Destroy(ci);
      jsStreamInfo_Destroy(si);
      jsCtx_Destroy(js);
    }
    natsConnection_Destroy(nc);
    return st;
  }

 private:
  struct ExitedEarly : std::runtime_error {
    using std::runtime_error::runtime_error;
  };

  void start() {
    const std::string port = std::to_string(port_);
    const std::string log = dir_ + "/server.log";
    const std::string store = dir_ + "/store";
    pid_ = spawn_server(
        {NATS_SERVER_BINARY, "-js", "-a", "127.0.0.1", "-p", port, "-sd", store, "-l", log});
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!loopback_accepting(port_)) {
      int st = 0;
      if (waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = -1;
        throw ExitedEarly(
            std::string("nats-server exited at start on port ") + std::to_string(port_) + " (is " +
            NATS_SERVER_BINARY +
            " installed? tools/install-deps.sh); its log ends: " + file_tail(dir_ + "/server.log"));
      }
      if (std::chrono::steady_clock::now() > deadline) {
        kill(SIGKILL);
        throw std::runtime_error("nats-server did not accept connections within 10 s");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

  std::string dir_;
  int port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace mayhem::test
