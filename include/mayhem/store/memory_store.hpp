// `--store memory`: the null store (the null object pattern, as spdlog's null_sink). Its save is
// the reference's mocked database call: the saves go to the simulated I/O (io/simulated_io.hpp:
// the same latency and --fail-rate draws as restart and cleanup, so a --seed gives the same run)
// and complete through the IoService's sink, which the service wires to the same place as the
// store's sink (the save stage's completion gateway); zero-delay saves are returned for the
// caller to complete inline. It writes nothing, records no settlement, and its stats are zeros.
// Use: made by open_store (store.hpp) for "memory"; `MemoryStore store(sim)` in tests.
#pragma once

#include <stdexcept>

#include "mayhem/io/simulated_io.hpp"
#include "mayhem/store/store.hpp"

namespace mayhem {

class MemoryStore final : public Store {
 public:
  explicit MemoryStore(SimulatedIo& sim) : Store(&sim), sim_(sim) {}

  void start(SaveSink, RecordSink) override {}
  using Store::start;
  Batch* save(Message* const* msgs, std::size_t n) override {
    return sim_.submit(Op::kSave, msgs, static_cast<std::uint32_t>(n));
  }
  void settled(Message* const*, std::size_t) override {}
  // Never called: ack_needs_row() is false, settle acks at once (as the reference does).
  void record_acks(Message* const*, std::size_t) override {
    throw std::logic_error("MemoryStore::record_acks: the memory store records nothing");
  }
  // The simulated saves are cancelled with the IoService's (IoService::cancel_all).
  bool cancel_saves(Nanos) override { return true; }
  bool close(Nanos) override { return true; }
  using Store::close;
  StoreStats stats() const override { return {}; }
  const char* kind() const override { return "memory"; }

 private:
  SimulatedIo& sim_;
};

}  // namespace mayhem
