// The service's default `--log-file` sink: many threads log without a shared lock, and the file is
// still in timestamp order. Each logging thread formats its line into a block of its own (a
// single-producer, single-consumer chain of blocks); one writer thread merges the threads' lines
// by timestamp up to a watermark and writes them in large `write(2)`s.
//
// Why the watermark is safe: a logging thread marks itself busy (an odd sequence number, a
// sequentially consistent store) when its line enters the sink, and idle again once the line is
// committed to its block. The writer reads the clock, publishes W (its time less a margin for
// clock reads the CPU moves across neighbouring loads) and then looks at every thread: a busy one
// is waited out (it is between two instructions of one line); an idle one has committed every
// line that entered before the look, and any line entering later sees W (the store came before
// the look). A line whose stamp is at or before the W it sees was stamped by spdlog before its
// thread was preempted; it is stamped again, now (after W), and counted in restamped(). So once
// the threads are scanned, every line stamped at or before W is in a block, and writing those in
// merged order never has to go back. Lines stamped later wait for the next round (every 2 ms).
// Lines keep spdlog's stamp otherwise: the sink reads no clock per line.
// A line that still arrives late (the wall clock stepped back) is written, never dropped, and
// counted in late_lines().
//
// Memory is bounded: at most `max_bytes` of blocks exist; a thread that needs one more waits for
// the writer (outside its busy mark, then stamps its line again). flush() returns once every line
// logged before it is in the file; reopen() makes the writer open the path again (logrotate's
// postrotate, SIGUSR1); the file is opened for appending. Stamping can be turned off
// (`restamp = false`) for a single producer that stamps its lines itself (the async logger's
// thread): lines are then written in the order they arrive.
// Use: `auto sink = std::make_shared<OrderedFileSink>(path, OrderedFileSink::Options{});` as any
// spdlog sink; `sink->reopen()` after the file was moved away.
#pragma once

#include <spdlog/sinks/sink.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace mayhem {

class OrderedFileSink final : public spdlog::sinks::sink {
 public:
  struct Options {
    std::size_t block_bytes = 64 * 1024;  // one thread's block; a longer line gets its own
    std::size_t max_bytes = 32u << 20;    // all blocks together (at least two per thread)
    bool restamp = true;                  // false: lines keep spdlog's stamp, arrival order
  };
  // Opens `path` for appending (creates it); throws std::runtime_error with the reason when it
  // cannot. Starts the writer thread.
  OrderedFileSink(std::string path, Options opts);
  ~OrderedFileSink() override;  // writes every line, then stops the writer
  OrderedFileSink(const OrderedFileSink&) = delete;
  OrderedFileSink& operator=(const OrderedFileSink&) = delete;

  void log(const spdlog::details::log_msg& msg) override;
  // Returns once every line logged before the call is written; throws spdlog::spdlog_ex if a write
  // failed since the last flush (spdlog's error handler reports it).
  void flush() override;
  void set_pattern(const std::string& pattern) override;
  void set_formatter(std::unique_ptr<spdlog::formatter> formatter) override;
  // Opens the path again (after logrotate moved the file away); returns the error, if any (the
  // old file is then kept). Lines logged before the call go to the old file.
  std::optional<std::string> reopen();

  std::uint64_t lines() const;
  // Lines stamped again because their thread was preempted past a watermark before committing.
  std::uint64_t restamped() const;
  std::uint64_t writes() const { return writes_.load(std::memory_order_relaxed); }
  std::uint64_t write_errors() const { return write_errors_.load(std::memory_order_relaxed); }
  std::uint64_t late_lines() const { return late_.load(std::memory_order_relaxed); }
  // Times a logging thread waited for the writer to free a block.
  std::uint64_t waits() const { return waits_.load(std::memory_order_relaxed); }

 private:
  struct Block;
  struct Slot;
  struct Head;
  Slot& local_slot();
  Block* take_block(std::size_t need, bool may_wait);
  void give_back(Block* b);
  void writer_loop();
  // One merge round: writes every line stamped at or before `watermark_ns`.
  void round(std::int64_t watermark_ns);
  void write_out();

  const std::string path_;
  const Options opts_;
  const std::uint64_t id_;  // distinguishes this sink from earlier ones in thread-local caches
  int fd_ = -1;             // the writer's (and reopen's, under mutex_)

  mutable std::mutex slots_mutex_;  // guards slots_ and prototype_
  std::vector<std::unique_ptr<Slot>> slots_;
  std::unique_ptr<spdlog::formatter> prototype_;

  std::mutex pool_mutex_;  // guards free_; blocks_bytes_ is the total handed out and free
  std::condition_variable pool_cv_;
  std::vector<Block*> free_;
  std::size_t blocks_bytes_ = 0;
  std::atomic<std::size_t> slot_count_{0};

  std::mutex mutex_;  // the writer's requests: flush, reopen, stop
  std::condition_variable cv_, done_cv_;
  std::uint64_t flush_asked_ = 0, flush_done_ = 0;
  std::uint64_t reopen_asked_ = 0, reopen_done_ = 0;
  std::optional<std::string> reopen_error_;
  bool stop_ = false;
  bool hurry_ = false;                 // a logging thread waits for a block
  std::uint64_t errors_reported_ = 0;  // write errors already thrown from flush()

  // Writer-only state.
  std::vector<char> out_;
  std::int64_t last_written_ns_ = 0;
  std::vector<Head> heads_;
  std::vector<Slot*> scan_;

  std::atomic<int> last_errno_{0};
  // The writer's latest watermark, read by every logging thread per line (its own cache line).
  alignas(64) std::atomic<std::int64_t> watermark_{0};
  alignas(64) std::atomic<std::uint64_t> writes_{0}, write_errors_{0}, late_{0}, waits_{0};
  std::thread writer_;
};

}  // namespace mayhem
