// The broker's own ceiling, for bench/nats_bench.py: how fast this NATS JetStream server takes
// asynchronous publishes of Mayhem-sized payloads (with Nats-Msg-Id, at most 4096 unconfirmed)
// and how fast one client can fetch (pull, batches of 256) and ack them, with no work in
// between. Same stream settings as Mayhem's (work queue, file storage); in a cluster it fetches
// from the consumer's leader, as Mayhem does. Prints one JSON object.
// Use: mayhem_nats_ceiling nats://127.0.0.1:4222 200000 [STREAM [both|publish|fetch [REPLICAS]]]
#include <fmt/format.h>
#include <nats/nats.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <thread>

#include "mayhem/message.hpp"
#include "mayhem/source/nats.hpp"
#include "mayhem/source/payload.hpp"

using namespace mayhem;
using WallClock = std::chrono::steady_clock;

namespace {
std::atomic<std::uint64_t> g_confirmed{0};
void on_ack(jsCtx*, natsMsg* msg, jsPubAck* pa, jsPubAckErr*, void*) {
  if (pa != nullptr) g_confirmed.fetch_add(1, std::memory_order_relaxed);
  natsMsg_Destroy(msg);
}
double since(WallClock::time_point t) {
  return std::chrono::duration<double>(WallClock::now() - t).count();
}
// CPU seconds (user + system) of this process so far, nats.c's threads included.
double cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}
void check(natsStatus s, const char* what) {
  if (s != NATS_OK) throw_nats(what, s);
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: mayhem_nats_ceiling nats://HOST:PORT MESSAGES [STREAM [both|publish|fetch "
                 "[REPLICAS]]]\n";
    return 2;
  }
  const std::string url = argv[1];
  const std::uint64_t n = std::strtoull(argv[2], nullptr, 10);
  const std::string stream = argc > 3 ? argv[3] : "CEILING";
  const std::string subject = stream + ".x";
  // Both phases in one process (the default), or one of them: `publish`, then `fetch` on the same
  // stream, so whoever runs this can read the server's CPU time around each phase.
  const std::string mode = argc > 4 ? argv[4] : "both";
  // Copies of the stream when this creates it (3 on a cluster).
  const int replicas = argc > 5 ? std::atoi(argv[5]) : 1;
  if (mode != "both" && mode != "publish" && mode != "fetch") {
    std::cerr << "mayhem_nats_ceiling: the phase is both, publish or fetch, not " << mode << "\n";
    return 2;
  }
  auto log = std::make_shared<spdlog::logger>("ceiling",
                                              std::make_shared<spdlog::sinks::stderr_sink_mt>());
  log->set_level(spdlog::level::warn);
  try {
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.PublishAsync.MaxPending = 4096;
    jo.PublishAsync.AckHandler = on_ack;
    NatsClient client(url, log, &jo);
    client.ensure_stream(stream, subject, replicas);

    double publish_s = 0, fetch_s = 0, fetch_cpu_s = 0;
    std::uint64_t got = 0;
    // 1. Raw asynchronous publish.
    if (mode != "fetch") {
      MessageFactory factory(1);
      Message m;
      const auto t0 = WallClock::now();
      for (std::uint64_t i = 0; i < n; ++i) {
        factory.fill(m, i, 0);
        const std::string id = m.id_string();
        const std::string payload = encode_payload(m.instance_name, id);
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MsgId = id.c_str();
        natsStatus s;
        while ((s = js_PublishAsync(client.js(), subject.c_str(), payload.data(),
                                    static_cast<int>(payload.size()), &po)) == NATS_TIMEOUT) {
        }
        check(s, "publish");
      }
      jsPubOptions co;
      jsPubOptions_Init(&co);
      co.MaxWait = 60'000;
      check(js_PublishAsyncComplete(client.js(), &co), "publish complete");
      publish_s = since(t0);
    }

    // 2. Raw fetch + ack from a durable pull consumer.
    if (mode != "publish") {
      jsConsumerConfig cc;
      jsConsumerConfig_Init(&cc);
      cc.Durable = "ceiling";
      cc.AckPolicy = js_AckExplicit;
      cc.AckWait = 60LL * kNanosPerSecond;
      cc.MaxAckPending = 1'000'000;
      jsConsumerInfo* ci = nullptr;
      check(js_AddConsumer(&ci, client.js(), stream.c_str(), &cc, nullptr, nullptr), "consumer");
      // In a cluster, fetch and ack on a connection to the consumer's leader, as Mayhem does:
      // attached to another server, every delivery and ack crosses a route (which server a client
      // lands on is random, and it moved one round's ratio by a third).
      const std::string leader =
          ci->Cluster != nullptr && ci->Cluster->Leader != nullptr ? ci->Cluster->Leader : "";
      jsConsumerInfo_Destroy(ci);
      const ServerLookup where = nats_find_server(client.connection(), url, leader, 300);
      std::unique_ptr<NatsClient> moved;
      if (!where.url.empty())
        moved = std::make_unique<NatsClient>(where.url + "," + url, log, nullptr, true);
      NatsClient& fc = moved ? *moved : client;
      jsSubOptions so;
      jsSubOptions_Init(&so);
      so.Stream = stream.c_str();
      so.Consumer = "ceiling";
      natsSubscription* sub = nullptr;
      check(js_PullSubscribe(&sub, fc.js(), subject.c_str(), "ceiling", nullptr, &so, nullptr),
            "subscribe");
      const auto t1 = WallClock::now();
      const double cpu1 = cpu_seconds();
      while (got < n) {
        natsMsgList list{nullptr, 0};
        const natsStatus s = natsSubscription_Fetch(&list, sub, 256, 1000, nullptr);
        if (s == NATS_TIMEOUT) continue;
        check(s, "fetch");
        for (int i = 0; i < list.Count; ++i) natsMsg_Ack(list.Msgs[i], nullptr);
        got += static_cast<std::uint64_t>(list.Count);
        natsMsgList_Destroy(&list);
      }
      check(natsConnection_FlushTimeout(fc.connection(), 10'000), "flush");
      fetch_s = since(t1);
      fetch_cpu_s = cpu_seconds() - cpu1;
      natsSubscription_Destroy(sub);
    }

    std::cout << fmt::format(
                     "{{\"messages\": {}, \"publish_s\": {:.4f}, \"publish_msgs_per_s\": {:.0f}, "
                     "\"confirmed\": {}, \"fetch_ack_s\": {:.4f}, \"fetch_ack_msgs_per_s\": "
                     "{:.0f}, \"fetch_ack_cpu_s\": {:.4f}}}",
                     n, publish_s, publish_s > 0 ? static_cast<double>(n) / publish_s : 0,
                     g_confirmed.load(), fetch_s,
                     fetch_s > 0 ? static_cast<double>(got) / fetch_s : 0, fetch_cpu_s)
              << std::endl;
  } catch (const std::exception& e) {
    std::cerr << "mayhem_nats_ceiling: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
