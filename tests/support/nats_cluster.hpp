// A real three-node JetStream cluster for the tests: three `nats-server -js` processes (names
// n0..n2, cluster "mayhem-test") with routes to each other, on free loopback ports, each with its
// own store folder in one temporary directory, stopped by PID (SIGTERM, then SIGKILL) when the
// fixture goes out of scope, also when a REQUIRE throws; if the test process itself dies, the
// kernel kills them (PR_SET_PDEATHSIG). `kill(i)` (SIGKILL) and `restart(i)` (same ports, same
// store) play a server crashing and coming back. The servers' own accounting is asked with
// `consumer_state()`, `stream_info()` and `consumer_leader()` (JetStream's answer names the
// server that leads the consumer).
// Use: `NatsCluster c; ... c.urls() ...; c.kill(c.index_of(c.consumer_leader("MAYHEM", "mayhem")));`
#pragma once

#include <fcntl.h>
#include <nats/nats.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "support/nats_server.hpp"

#include "support/server_process.hpp"
#include "support/subprocess.hpp"

namespace mayhem::test {

struct StreamFacts {
  bool found = false;
  std::int64_t replicas = 0;  // the stream's configured replicas
  std::size_t peers = 0;      // servers holding a copy (leader + replicas) per the answer
  std::string leader;         // the server that leads the stream
  std::uint64_t msgs = 0;
};

class NatsCluster {
 public:
  static constexpr int kNodes = 3;

  NatsCluster() {
    char tmpl[] = "/tmp/mayhem-natsc-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    // Ports are probed free and released before the servers bind them: under ctest -j2 another
    // process may take one; then a server exits at once and every port is picked again.
    for (int attempt = 1;; ++attempt) {
      for (auto& n : nodes_) n = Node{free_loopback_port(), free_loopback_port(), -1};
      try {
        for (int i = 0; i < kNodes; ++i) start(i);
        break;
      } catch (const std::exception&) {
        for (int i = 0; i < kNodes; ++i) stop(i, SIGKILL);
        if (attempt == 5) throw;
      }
    }
    wait_ready();
  }
  ~NatsCluster() {
    for (int i = 0; i < kNodes; ++i) stop(i, SIGTERM);
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  NatsCluster(const NatsCluster&) = delete;
  NatsCluster& operator=(const NatsCluster&) = delete;

  std::string url(int i) const { return "nats://127.0.0.1:" + std::to_string(nodes_[i].port); }
  // Every server, comma-separated: what --source and `publish --nats` take.
  std::string urls() const {
    std::string all;
    for (int i = 0; i < kNodes; ++i) all += (i ? "," : "") + url(i);
    return all;
  }
  static std::string name(int i) { return "n" + std::to_string(i); }
  static int index_of(const std::string& name) {
    for (int i = 0; i < kNodes; ++i)
      if (name == NatsCluster::name(i)) return i;
    return -1;
  }
  bool running(int i) const { return nodes_[i].pid > 0; }

  // SIGKILL (a crash): the server is gone at once, its store stays.
  void kill(int i) { stop(i, SIGKILL); }
  // Starts it again on the same ports with the same store.
  void restart(int i) { start(i); }

  // Waits until every running server answers JetStream requests (a meta leader is known).
  void wait_ready(std::chrono::seconds timeout = std::chrono::seconds(30)) const {
    for (int i = 0; i < kNodes; ++i) {
      if (!running(i)) continue;
      const bool ok = eventually(
          [&] {
            bool ready = false;
            with_js(url(i), [&](jsCtx* js) {
              jsAccountInfo* ai = nullptr;
              jsOptions o;
              jsOptions_Init(&o);
              o.Wait = 500;
              ready = js_GetAccountInfo(&ai, js, &o, nullptr) == NATS_OK;
              jsAccountInfo_Destroy(ai);
            });
            return ready;
          },
          timeout, std::chrono::milliseconds(20));
      if (!ok) throw std::runtime_error("JetStream cluster not ready: " + name(i));
    }
  }

  // The server leading the durable consumer, from its own answer ("" when nobody answers).
  std::string consumer_leader(const std::string& stream, const std::string& durable) const {
    std::string leader;
    for (int i = 0; i < kNodes && leader.empty(); ++i) {
      if (!running(i)) continue;
      with_js(url(i), [&](jsCtx* js) {
        jsConsumerInfo* ci = nullptr;
        jsOptions o;
        jsOptions_Init(&o);
        o.Wait = 1000;
        if (js_GetConsumerInfo(&ci, js, stream.c_str(), durable.c_str(), &o, nullptr) == NATS_OK) {
          if (ci->Cluster != nullptr && ci->Cluster->Leader != nullptr)
            leader = ci->Cluster->Leader;
          jsConsumerInfo_Destroy(ci);
        }
      });
    }
    return leader;
  }

  StreamFacts stream_info(const std::string& stream) const {
    StreamFacts f;
    for (int i = 0; i < kNodes && !f.found; ++i) {
      if (!running(i)) continue;
      with_js(url(i), [&](jsCtx* js) {
        jsStreamInfo* si = nullptr;
        jsOptions o;
        jsOptions_Init(&o);
        o.Wait = 1000;
        if (js_GetStreamInfo(&si, js, stream.c_str(), &o, nullptr) == NATS_OK) {
          f.found = true;
          f.replicas = si->Config->Replicas;
          f.msgs = si->State.Msgs;
          if (si->Cluster != nullptr) {
            f.leader = si->Cluster->Leader ? si->Cluster->Leader : "";
            f.peers =
                static_cast<std::size_t>(si->Cluster->ReplicasLen) + (f.leader.empty() ? 0 : 1);
          }
          jsStreamInfo_Destroy(si);
        }
      });
    }
    return f;
  }

  // The consumer's accounting, from the first running server that answers (found = false when
  // none does, e.g. while a majority is down).
  ConsumerState consumer_state(const std::string& stream, const std::string& durable) const {
    ConsumerState st;
    for (int i = 0; i < kNodes && !st.found; ++i) {
      if (!running(i)) continue;
      with_js(url(i), [&](jsCtx* js) {
        jsOptions o;
        jsOptions_Init(&o);
        o.Wait = 1000;
        jsConsumerInfo* ci = nullptr;
        if (js_GetConsumerInfo(&ci, js, stream.c_str(), durable.c_str(), &o, nullptr) != NATS_OK)
          return;
        jsStreamInfo* si = nullptr;
        if (js_GetStreamInfo(&si, js, stream.c_str(), &o, nullptr) == NATS_OK) {
          st = consumer_state_from(ci, si);
          jsStreamInfo_Destroy(si);
        }
        jsConsumerInfo_Destroy(ci);
      });
    }
    return st;
  }

 private:
  struct Node {
    int port = 0, route = 0;
    pid_t pid = -1;
  };

  // Connects to one server (no reconnects, short timeout) and runs `fn` with its JetStream.
  template <typename Fn>
  static void with_js(const std::string& url, Fn fn) {
    natsOptions* opts = nullptr;
    natsConnection* nc = nullptr;
    jsCtx* js = nullptr;
    if (natsOptions_Create(&opts) != NATS_OK) return;
    natsOptions_SetURL(opts, url.c_str());
    natsOptions_SetTimeout(opts, 1000);
    natsOptions_SetAllowReconnect(opts, false);
    if (natsConnection_Connect(&nc, opts) == NATS_OK &&
        natsConnection_JetStream(&js, nc, nullptr) == NATS_OK)
      fn(js);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    natsOptions_Destroy(opts);
  }

  std::string node_dir(int i) const { return dir_ + "/" + name(i); }

  void stop(int i, int signo) {
    Node& n = nodes_[i];
    stop_server(n.pid, signo, std::chrono::seconds(5));
    n.pid = -1;
  }

  void start(int i) {
    Node& n = nodes_[i];
    std::filesystem::create_directories(node_dir(i));
    const std::string port = std::to_string(n.port);
    const std::string cluster = "nats://127.0.0.1:" + std::to_string(n.route);
    std::string routes;
    for (int j = 0; j < kNodes; ++j)
      if (j != i)
        routes += (routes.empty() ? "" : ",") + std::string("nats://127.0.0.1:") +
                  std::to_string(nodes_[j].route);
    const std::string store = node_dir(i) + "/store";
    const std::string log = node_dir(i) + "/server.log";
    const std::string nm = name(i);
    n.pid = spawn_server({NATS_SERVER_BINARY, "-js", "-a", "127.0.0.1", "-p", port, "-sd", store,
                          "--name", nm, "--cluster_name", "mayhem-test", "--cluster", cluster,
                          "--routes", routes, "-l", log});
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!loopback_accepting(n.port)) {
      int st = 0;
      if (waitpid(n.pid, &st, WNOHANG) == n.pid) {
        n.pid = -1;
        throw std::runtime_error("nats-server " + nm +
                                 " exited at start; its log ends: " + file_tail(log));
      }
      if (std::chrono::steady_clock::now() > deadline) {
        stop(i, SIGKILL);
        throw std::runtime_error("nats-server " + nm + " did not accept connections within 10 s");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

  std::string dir_;
  std::array<Node, kNodes> nodes_{};
};

}  // namespace mayhem::test
