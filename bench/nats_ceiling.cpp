// The broker's own ceiling, for bench/nats_bench.py: how fast this NATS JetStream server takes
// asynchronous publishes of Mayhem-sized payloads (with Nats-Msg-Id, at most 4096 unconfirmed)
// and how fast one client can fetch (pull, batches of 256) and ack them, with no work in
// between. Same stream settings as Mayhem's (work queue, file storage). Prints one JSON object.
// Use: mayhem_nats_ceiling nats://127.0.0.1:4222 200000 [STREAM]
#include <fmt/format.h>
#include <nats/nats.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <iostream>
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
void check(natsStatus s, const char* what) {
  if (s != NATS_OK) throw_nats(what, s);
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: mayhem_nats_ceiling nats://HOST:PORT MESSAGES [STREAM]\n";
    return 2;
  }
  const std::string url = argv[1];
  const std::uint64_t n = std::strtoull(argv[2], nullptr, 10);
  const std::string stream = argc > 3 ? argv[3] : "CEILING";
  const std::string subject = stream + ".x";
  auto log = std::make_shared<spdlog::logger>("ceiling",
                                              std::make_shared<spdlog::sinks::stderr_sink_mt>());
  log->set_level(spdlog::level::warn);
  try {
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.PublishAsync.MaxPending = 4096;
    jo.PublishAsync.AckHandler = on_ack;
    NatsClient client(url, log, &jo);
    client.ensure_stream(stream, subject);

    // 1. Raw asynchronous publish.
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
    const double publish_s = since(t0);

    // 2. Raw fetch + ack from a durable pull consumer.
    jsConsumerConfig cc;
    jsConsumerConfig_Init(&cc);
    cc.Durable = "ceiling";
    cc.AckPolicy = js_AckExplicit;
    cc.AckWait = 60LL * kNanosPerSecond;
    cc.MaxAckPending = 1'000'000;
    jsConsumerInfo* ci = nullptr;
    check(js_AddConsumer(&ci, client.js(), stream.c_str(), &cc, nullptr, nullptr), "consumer");
    jsConsumerInfo_Destroy(ci);
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = stream.c_str();
    so.Consumer = "ceiling";
    natsSubscription* sub = nullptr;
    check(js_PullSubscribe(&sub, client.js(), subject.c_str(), "ceiling", nullptr, &so, nullptr),
          "subscribe");
    const auto t1 = WallClock::now();
    std::uint64_t got = 0;
    while (got < n) {
      natsMsgList list{nullptr, 0};
      const natsStatus s = natsSubscription_Fetch(&list, sub, 256, 1000, nullptr);
      if (s == NATS_TIMEOUT) continue;
      check(s, "fetch");
      for (int i = 0; i < list.Count; ++i) natsMsg_Ack(list.Msgs[i], nullptr);
      got += static_cast<std::uint64_t>(list.Count);
      natsMsgList_Destroy(&list);
    }
    check(natsConnection_FlushTimeout(client.connection(), 10'000), "flush");
    const double fetch_s = since(t1);
    natsSubscription_Destroy(sub);

    std::cout << fmt::format(
                     "{{\"messages\": {}, \"publish_s\": {:.4f}, \"publish_msgs_per_s\": {:.0f}, "
                     "\"confirmed\": {}, \"fetch_ack_s\": {:.4f}, \"fetch_ack_msgs_per_s\": "
                     "{:.0f}}}",
                     n, publish_s, static_cast<double>(n) / publish_s, g_confirmed.load(), fetch_s,
                     static_cast<double>(got) / fetch_s)
              << std::endl;
  } catch (const std::exception& e) {
    std::cerr << "mayhem_nats_ceiling: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
