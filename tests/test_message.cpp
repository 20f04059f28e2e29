#include <fmt/format.h>
#include <catch2/catch.hpp>

#include <regex>
#include <set>

#include "mayhem/message.hpp"

using namespace mayhem;

TEST_CASE("MessageFactory makes the reference's PubSubMessage", "[message]") {
  MessageFactory f(42);
  Message m;
  f.fill(m, 7, 1234);
  const std::string name = m.instance_name;
  CHECK(std::regex_match(name, std::regex("cattle-[a-z0-9]{4}")));
  CHECK(m.hostname() == name + ".example.net");
  CHECK(std::regex_match(
      m.id_string(),
      std::regex("[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")));
  CHECK(m.seq == 7);
  CHECK(m.published_ns == 1234);
  CHECK(fmt::format("{}", m) == "PubSubMessage(instance_name='" + name + "')");
  CHECK_FALSE(m.saved);
  CHECK_FALSE(m.acked);
  CHECK(m.extended_cnt == 0);
}

TEST_CASE("MessageFactory is deterministic per seed and varied across messages", "[message]") {
  MessageFactory a(1), b(1), c(2);
  Message ma, mb, mc;
  std::set<std::string> names, ids;
  for (int i = 0; i < 2000; ++i) {
    a.fill(ma, i, 0);
    b.fill(mb, i, 0);
    c.fill(mc, i, 0);
    REQUIRE(ma.id_string() == mb.id_string());
    REQUIRE(std::string(ma.instance_name) == mb.instance_name);
    REQUIRE(ma.id_string() != mc.id_string());
    names.insert(ma.instance_name);
    ids.insert(ma.id_string());
  }
  CHECK(ids.size() == 2000);
  CHECK(names.size() > 1900);  // 36^4 = 1.7M possible names
}

TEST_CASE("fill resets the per-message state of a reused message", "[message]") {
  MessageFactory f(3);
  Message m;
  f.fill(m, 0, 0);
  m.saved = m.restarted = m.acked = true;
  m.extended_cnt = 9;
  m.pending.store(1);
  f.fill(m, 1, 0);
  CHECK_FALSE(m.saved);
  CHECK_FALSE(m.restarted);
  CHECK_FALSE(m.acked);
  CHECK(m.extended_cnt == 0);
  CHECK(m.pending.load() == 0);
}

TEST_CASE("Pool hands out distinct objects and reuses released ones", "[message][pool]") {
  Pool<Message> pool(64);
  std::vector<Message*> got(100);
  pool.acquire(got.data(), got.size());
  std::set<Message*> unique(got.begin(), got.end());
  CHECK(unique.size() == 100);
  CHECK(pool.capacity() == 128);  // two slabs of 64
  pool.release(got.data(), got.size());
  std::vector<Message*> again(100);
  pool.acquire(again.data(), again.size());
  CHECK(pool.capacity() == 128);  // no growth: released objects were reused
  std::set<Message*> unique_again(again.begin(), again.end());
  CHECK(unique_again.size() == 100);
}
