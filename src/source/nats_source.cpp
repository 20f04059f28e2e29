// NatsSource at run time: the fetcher thread and its prefetch ring (with the extensions of what
// waits there), pull/drain, acks and nacks, the checkpoint thread that confirms acks, and close().
// The connection and the stream/consumer setup are in nats_stream.cpp.
#include "mayhem/log/context.hpp"
#include "mayhem/source/nats.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <limits>
#include <string_view>
#include <vector>

#include "mayhem/lease/lease_manager.hpp"
#include "mayhem/rng.hpp"
#include "mayhem/source/payload.hpp"
#include "mayhem/thread_name.hpp"

namespace mayhem {

namespace {
constexpr std::int64_t kFetchTimeoutMs = 200;  // bounds how long stop_fetching() waits
constexpr auto kCheckpointEvery = std::chrono::milliseconds(100);  // ack confirmation flushes
constexpr std::int64_t kCheckpointFlushMs = 250;
constexpr Nanos kFetchFailLogEvery = 5 * kNanosPerSecond;
// A fetch that times out is an idle stream or a consumer without a leader: after this long idle,
// JetStream is asked (consumer info, waiting at most a fetch's time) this often, so a lost
// majority is logged, not silent.
constexpr Nanos kProbeIdleAfter = 1 * kNanosPerSecond;
constexpr Nanos kProbeEvery = 1 * kNanosPerSecond;
constexpr std::int64_t kProbeWaitMs = kFetchTimeoutMs;

std::int64_t ms_until(const Clock& clock, Nanos give_up_at) {
  return std::max<std::int64_t>(1, (give_up_at - clock.now()) / 1'000'000);
}
}  // namespace

void NatsSource::start(std::function<void()> notify, std::function<bool()> stopping) {
  notify_ = std::move(notify);
  stopping_ = std::move(stopping);
  fetcher_ = std::thread([this] {
    name_this_thread("mayhem-fetch");
    fetch_loop();
  });
}

void NatsSource::stop_fetching() {
  {
    std::lock_guard lock(wait_mutex_);
    stop_.store(true);
  }
  wait_cv_.notify_all();
  if (fetcher_.joinable()) fetcher_.join();
}

void NatsSource::checkpoint_loop() {
  std::unique_lock lock(checkpoint_mutex_);
  while (!checkpoint_stop_) {
    checkpoint_cv_.wait_for(lock, kCheckpointEvery, [&] { return checkpoint_stop_; });
    if (checkpoint_stop_) break;
    if (acks_sent_.load() == acks_confirmed_.load()) continue;  // nothing new to confirm
    lock.unlock();
    (void)flush_and_confirm(kCheckpointFlushMs);  // a failure: the next pass tries again
    lock.lock();
  }
}

natsStatus NatsSource::flush_and_confirm(std::int64_t timeout_ms) {
  // Every ack counted in `sent` was written (under the connection's lock) before this flush's
  // PING: the PONG confirms the server read them.
  const std::uint64_t sent = acks_sent_.load(std::memory_order_acquire);
  const natsStatus s = natsConnection_FlushTimeout(client_->connection(), timeout_ms);
  if (s != NATS_OK) return s;
  std::uint64_t c = acks_confirmed_.load();
  while (c < sent && !acks_confirmed_.compare_exchange_weak(c, sent)) {
  }
  return NATS_OK;
}

void NatsSource::confirm_acks(Nanos give_up_at) {
  if (closed_ || acks_sent_.load() == acks_confirmed_.load()) return;
  if (flush_and_confirm(ms_until(clock_, give_up_at)) != NATS_OK)
    log_->error("NATS: could not flush acks before the shutdown deadline; {} stay unconfirmed",
                acks_unconfirmed());
}

void NatsSource::close(Nanos give_up_at) {
  if (closed_) return;
  // Acks are fire-and-forget publishes: make sure the server has them before the subscription
  // and the connection go away (a lost ack only means a redelivery, but a clean stop loses none).
  // Only until the shutdown deadline: a server that is gone or stuck cannot hold the shutdown.
  {
    std::lock_guard lock(checkpoint_mutex_);
    checkpoint_stop_ = true;
  }
  checkpoint_cv_.notify_all();
  // natsConnection_Close itself took 0.5 s with a server that stopped answering (SIGSTOP, the
  // connection still open; measured with nats.c 3.4.1): the flush leaves it up to that much of
  // the budget (at most half).
  const Nanos budget = give_up_at - clock_.now();
  const Nanos close_reserve = std::clamp<Nanos>(budget / 2, 0, 500'000'000);
  const natsStatus f = flush_and_confirm(ms_until(clock_, give_up_at - close_reserve));
  if (f != NATS_OK) {
    log_->error(
        "NATS: could not flush acks before closing ({}); {} acks unconfirmed: the server "
        "redelivers those it did not get",
        natsStatus_GetText(f), acks_unconfirmed());
  }
  if (checkpoint_.joinable()) checkpoint_.join();  // its flush is bounded (250 ms)
  closed_ = true;
  natsSubscription_Destroy(sub_);  // bound consumer: the durable stays on the server
  sub_ = nullptr;
  client_->close(std::chrono::nanoseconds(std::max<Nanos>(give_up_at - clock_.now(), 50'000'000)));
  client_.reset();
  if (const auto e = settle_errors_.load(); e != 0)
    log_->warn("NATS: {} acks/nacks could not be sent; the server redelivers those messages", e);
}

void NatsSource::fetch_loop() {
  std::vector<Message*> buf;
  // Every request asks for the same batch (the last one of a --messages N run aside): nats.c
  // 3.4.1 can fill a fetch's array with messages that answer an earlier request (after a
  // reconnect), and when that request was larger the array overflowed (see below).
  const std::uint64_t batch = std::min<std::uint64_t>(cfg_.fetch_batch, cfg_.max_queued);
  Nanos last_fetch_end = clock_.now();
  Nanos idle_since = -1, probed_at = 0;
  while (!stop_.load(std::memory_order_acquire)) {
    // The lease runs from delivery: what waits in the prefetch ring is extended when due, here,
    // between fetches (so up to one fetch timeout late: the margin start_broker asks for covers
    // it; shorter fetches would leave more late deliveries pending in the library, which is what
    // triggers its over-fill, below).
    extend_queued(clock_.now());
    if (stopping_ && stopping_()) {
      // Shutting down: fetch nothing more; wait for stop_fetching().
      std::unique_lock lock(wait_mutex_);
      wait_cv_.wait_for(lock, std::chrono::milliseconds(20), [&] { return stop_.load(); });
      continue;
    }
    if (cfg_.limit != 0 && fetched_ >= cfg_.limit) {
      // --messages N: all N fetched. Keep extending what still waits in the ring until stopped.
      std::unique_lock lock(wait_mutex_);
      wait_cv_.wait_for(lock, std::chrono::milliseconds(20), [&] { return stop_.load(); });
      continue;
    }
    const std::uint64_t depth = depth_.load();
    if (depth + batch > cfg_.max_queued) {
      // Consume has not caught up: wait for pull() (it wakes us) or stop.
      std::unique_lock lock(wait_mutex_);
      fetcher_waiting_.store(true);
      wait_cv_.wait_for(lock, std::chrono::milliseconds(20),
                        [&] { return stop_.load() || depth_.load() + batch <= cfg_.max_queued; });
      fetcher_waiting_.store(false);
      continue;
    }
    std::uint64_t want = batch;
    if (cfg_.limit != 0) want = std::min(want, cfg_.limit - fetched_);
    // Messages already pending in the library (late answers to an earlier request) are what makes
    // 3.4.1's fetch write past its array (below): take them one at a time, as a fetch of 1 cannot.
    int pending_msgs = 0;
    int pending_bytes = 0;
    if (natsSubscription_GetPending(sub_, &pending_msgs, &pending_bytes) == NATS_OK &&
        pending_msgs > 0)
      want = 1;
    natsMsgList list{nullptr, 0};
    jsErrCode jerr = jsErrCode(0);
    // The lease's start for what this fetch returns: the server's ack timer runs from delivery,
    // and a message the server sent for the previous request just as it expired waits in the
    // library and comes back with this one; so the end of the previous fetch, if earlier than
    // this one's start (earlier is safe: at worst an early extension).
    const Nanos delivered_at = std::min(clock_.now(), last_fetch_end);
    const natsStatus s =
        natsSubscription_Fetch(&list, sub_, static_cast<int>(want), kFetchTimeoutMs, &jerr);
    last_fetch_end = clock_.now();
    if (s == NATS_TIMEOUT) {
      // Nothing to fetch right now: an idle stream, or a consumer without a leader (a minority of
      // the cluster up), which looks the same. Told apart by asking JetStream (see probe_leader).
      if (idle_since < 0) idle_since = last_fetch_end;
      if (last_fetch_end - idle_since >= kProbeIdleAfter &&
          last_fetch_end - probed_at >= kProbeEvery && depth_.load() == 0) {
        probed_at = last_fetch_end;
        const std::string why = probe_leader();
        if (!why.empty())
          fetch_trouble(clock_.now(), why);
        else
          fetch_recovered(clock_.now());
      }
      continue;
    }
    idle_since = -1;
    if (s != NATS_OK) {
      // E.g. no responders while the consumer has no leader (a failover, a minority of the
      // cluster up) or the connection is down: never the end of the run.
      fetch_trouble(last_fetch_end, "fetch failed: " + describe_nats(s, jerr));
      std::unique_lock lock(wait_mutex_);
      wait_cv_.wait_for(lock, std::chrono::milliseconds(100), [&] { return stop_.load(); });
      continue;
    }
    fetch_recovered(last_fetch_end);

    // nats.c 3.4.1 handed back more messages than the batch asked for, after the connection came
    // back, when requests of different sizes were outstanding (the "server going away" test, 3 runs
    // in about 50 under load: ASan caught our read one past a 23-slot array, and the release build
    // died in malloc, so the library had written past it too). Asking for the same batch every
    // time (above) made it go away: 0 in 40 runs under the same load. (The cause, in 3.4.1's
    // _fetch: messages already pending on the subscription are taken first, then the request asks
    // for `Batch - count` and lowers req->Batch to that, but the loop waits for `count !=
    // req->Batch`; with more than half a batch pending it never stops at the array's end.) Should
    // it still happen, take the first `want` and say so. The messages past them were written
    // beyond the library's allocation: reading them (to nak or destroy them) would be the same
    // out-of-bounds access, so they are left alone (the server redelivers them after AckWait), and
    // natsMsgList_Destroy is kept inside the array.
    auto count = static_cast<std::size_t>(list.Count);
    if (count > want) {
      log_->error(
          "NATS: the client library returned {} messages for a fetch of {}; taking the first {} "
          "(the rest lie past its array: left for redelivery)",
          count, want, want);
      count = static_cast<std::size_t>(want);
      list.Count = static_cast<int>(want);  // natsMsgList_Destroy must stay inside the array too
    }
    buf.resize(count);
    messages_.acquire(buf.data(), count);
    std::size_t k = 0;
    const Nanos now = clock_.now();
    std::uint64_t redelivered = 0;
    for (std::size_t i = 0; i < count; ++i) {
      natsMsg* nm = list.Msgs[i];
      list.Msgs[i] = nullptr;  // ours now: natsMsgList_Destroy must not destroy it
      Payload p;
      const int len = natsMsg_GetDataLength(nm);
      const char* data = natsMsg_GetData(nm);
      const PayloadError e =
          decode_payload(std::string_view(data ? data : "", static_cast<std::size_t>(len)), p);
      if (e != PayloadError::kNone) {
        log_->error("Malformed message ({} bytes): {}; terminating it (no redelivery)", len,
                    to_string(e));
        natsMsg_Term(nm, nullptr);
        natsMsg_Destroy(nm);
        malformed_.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      const char* reply = natsMsg_GetReply(nm);
      const std::uint64_t delivered = delivery_count(reply ? reply : "");
      if (delivered > 1) ++redelivered;
      Message* m = buf[k++];
      m->reset_state();
      std::memcpy(m->instance_name, p.instance_name, sizeof(m->instance_name));
      m->id = p.id;
      std::uint64_t h0 = 0, h1 = 0;
      std::memcpy(&h0, p.id.data(), 8);
      std::memcpy(&h1, p.id.data() + 8, 8);
      // Simulated I/O draws: a function of the message and of its delivery, so a redelivered
      // message gets a fresh draw (a failed restart can succeed on the next delivery).
      m->seed = mix(mix(h0, h1), delivered);
      m->seq = seq_++;
      m->published_ns = now;  // latency is measured from arrival at this process
      m->deadline_ns = delivered_at + cfg_.ack_wait;  // the lease runs from delivery
      m->handle = nm;
    }
    natsMsgList_Destroy(&list);
    if (k < count) messages_.release(buf.data() + k, count - k);
    if (redelivered != 0) redelivered_.fetch_add(redelivered, std::memory_order_relaxed);
    if (k == 0) continue;
    fetched_ += k;
    {
      std::lock_guard lock(ring_mutex_);
      for (std::size_t i = 0; i < k; ++i)
        ring_[(ring_head_ + ring_size_ + i) % ring_.size()] = buf[i];
      ring_size_ += k;  // never past max_queued: the fetch asked for no more than the room left
    }
    depth_.fetch_add(k);
    metrics_.published.add(k);  // broker mode: "published" counts messages received
    if (notify_) notify_();
  }
}

std::string NatsSource::probe_leader() {
  jsConsumerInfo* ci = nullptr;
  jsErrCode jerr = jsErrCode(0);
  jsOptions o;
  jsOptions_Init(&o);
  o.Wait = kProbeWaitMs;
  const natsStatus s =
      js_GetConsumerInfo(&ci, client_->js(), cfg_.stream.c_str(), cfg_.durable.c_str(), &o, &jerr);
  jsConsumerInfo_Destroy(ci);
  if (!jetstream_unavailable(s, jerr)) return {};
  return fmt::format("consumer {} has no leader to answer (its info: {})", cfg_.durable,
                     describe_nats(s, jerr));
}

void NatsSource::fetch_trouble(Nanos now, const std::string& why) {
  ++trouble_attempts_;
  if (!trouble_) {
    trouble_ = true;
    trouble_since_ = trouble_logged_ = now;
    log_->warn(
        "NATS: {}; retrying (the consumer's leader may be changing, a majority of the cluster may "
        "be down, or the connection is down)",
        why);
  } else if (now - trouble_logged_ >= kFetchFailLogEvery) {
    trouble_logged_ = now;
    log_->warn("NATS: still waiting after {:.1f} s ({} failed attempts): {}; retrying",
               nanos_to_seconds(now - trouble_since_), trouble_attempts_, why);
  }
}

void NatsSource::fetch_recovered(Nanos now) {
  if (!trouble_) return;
  log_->warn("NATS: fetching again after {:.1f} s ({} failed attempts)",
             nanos_to_seconds(now - trouble_since_), trouble_attempts_);
  trouble_ = false;
  trouble_attempts_ = 0;
}

Nanos NatsSource::extend_queued(Nanos now) {
  if (depth_.load(std::memory_order_acquire) == 0) return std::numeric_limits<Nanos>::max();
  const Nanos interval = LeaseManager::clamp_interval(cfg_.extend_interval);  // as the lease's
  extended_.clear();
  Nanos next = std::numeric_limits<Nanos>::max();
  std::uint64_t errors = 0;
  {
    // Under the ring's lock: consume cannot pull a message while its in-progress ack goes out.
    std::lock_guard lock(ring_mutex_);
    for (std::size_t i = 0; i < ring_size_; ++i) {
      Message* m = ring_[(ring_head_ + i) % ring_.size()];
      Nanos due = m->deadline_ns - cfg_.ack_wait + interval;
      if (due <= now) {
        auto* nm = static_cast<natsMsg*>(m->handle);
        if (nm != nullptr && natsMsg_InProgress(nm, nullptr) != NATS_OK) ++errors;
        m->deadline_ns = now + cfg_.ack_wait;
        ++m->extended_cnt;
        extended_.push_back(m);
        due = now + interval;
      }
      next = std::min(next, due);
    }
  }
  if (errors != 0) log_->warn("NATS: {} in-progress acks (lease extensions) failed", errors);
  if (!extended_.empty()) {
    metrics_.extensions.add(extended_.size());
    // After the lock: a message may be pulled and settled meanwhile, but its identity (all the
    // log line reads) is written by this thread only, and only this thread takes messages from
    // the pool in broker mode.
    if (log_->should_log(spdlog::level::info)) {
      const double secs = nanos_to_seconds(cfg_.ack_wait);
      for (Message* m : extended_) {
        LogScope scope(*m, to_string(Stage::kLease));
        log_->info("Extended deadline by {:g} seconds for {} (prefetched)", secs, *m);
      }
    }
  }
  return next;
}

std::size_t NatsSource::pull(Message** out, std::size_t max) {
  if (depth_.load(std::memory_order_acquire) == 0) return 0;
  std::size_t got;
  {
    std::lock_guard lock(ring_mutex_);
    got = std::min(max, ring_size_);
    for (std::size_t i = 0; i < got; ++i) out[i] = ring_[(ring_head_ + i) % ring_.size()];
    ring_head_ = (ring_head_ + got) % ring_.size();
    ring_size_ -= got;
  }
  if (got != 0) {
    depth_.fetch_sub(got);
    if (fetcher_waiting_.load()) {
      std::lock_guard lock(wait_mutex_);
      wait_cv_.notify_one();
    }
  }
  return got;
}

void NatsSource::settle(Message* const* msgs, std::size_t n, bool ack) {
  if (ack) acks_.fetch_add(n, std::memory_order_release);  // before acks_sent_: never below it
  std::uint64_t errors = 0, none = 0;
  natsStatus first = NATS_OK;
  for (std::size_t i = 0; i < n; ++i) {
    auto* nm = static_cast<natsMsg*>(msgs[i]->handle);
    if (nm == nullptr) {
      ++none;
      continue;
    }
    const natsStatus s = ack ? natsMsg_Ack(nm, nullptr) : natsMsg_Nak(nm, nullptr);
    if (s != NATS_OK) {
      if (errors++ == 0) first = s;
    }
    natsMsg_Destroy(nm);  // exactly once: the handle is cleared with it
    msgs[i]->handle = nullptr;
  }
  // Written (or buffered for a reconnect) before this add: a flush that reads it comes after them.
  if (ack) acks_sent_.fetch_add(n - errors - none, std::memory_order_release);
  if (errors != 0) {
    settle_errors_.fetch_add(errors, std::memory_order_relaxed);
    log_->warn("NATS: {} of {} {} failed ({}); the server redelivers them after AckWait", errors, n,
               ack ? "acks" : "nacks", natsStatus_GetText(first));
  }
}

std::size_t NatsSource::drain(Message** out, std::size_t max) {
  return pull(out, max);  // the ring is under its mutex: safe beside a consume task still pulling
}

void NatsSource::ack(Message* const* msgs, std::size_t n) {
  settle(msgs, n, true);
}

void NatsSource::nack(Message* const* msgs, std::size_t n) {
  settle(msgs, n, false);
}

void NatsSource::extend(Message* const* msgs, std::size_t n) {
  std::uint64_t errors = 0;
  for (std::size_t i = 0; i < n; ++i) {
    auto* nm = static_cast<natsMsg*>(msgs[i]->handle);
    if (nm != nullptr && natsMsg_InProgress(nm, nullptr) != NATS_OK) ++errors;
  }
  if (errors != 0) log_->warn("NATS: {} in-progress acks (lease extensions) failed", errors);
}

}  // namespace mayhem
