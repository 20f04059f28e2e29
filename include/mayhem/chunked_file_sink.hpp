// A spdlog file sink for many logging threads: each thread formats its lines into a buffer of its
// own (no shared lock per line) and writes it to the file in one `write(2)` when it holds
// `chunk_bytes`, and on every `flush()` (the service flushes once a second and at shutdown).
// spdlog's `basic_file_sink_mt` takes one shared lock per line, so its logging threads wait on
// each other; this sink's threads do not (docs/ARCHITECTURE.md, "Log files").
// Order: lines of one thread stay in order; lines of different threads interleave by chunk, not by
// line (every line carries its timestamp). `chunk_bytes == 0` writes every line at once (one
// syscall per line); the service uses spdlog's basic_file_sink_mt instead for `--log-buffer 0`.
// Use: `auto sink = std::make_shared<ChunkedFileSink>(path, 64 * 1024);` as any spdlog sink.
#pragma once

#include <spdlog/sinks/sink.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace mayhem {

class ChunkedFileSink final : public spdlog::sinks::sink {
 public:
  // Truncates (or creates) `path`; throws std::runtime_error with the reason when it cannot.
  ChunkedFileSink(const std::string& path, std::size_t chunk_bytes);
  ~ChunkedFileSink() override;
  ChunkedFileSink(const ChunkedFileSink&) = delete;
  ChunkedFileSink& operator=(const ChunkedFileSink&) = delete;

  void log(const spdlog::details::log_msg& msg) override;
  void flush() override;  // writes every thread's buffered lines
  void set_pattern(const std::string& pattern) override;
  void set_formatter(std::unique_ptr<spdlog::formatter> formatter) override;

  std::uint64_t writes() const { return writes_.load(std::memory_order_relaxed); }
  std::uint64_t write_errors() const { return write_errors_.load(std::memory_order_relaxed); }

 private:
  struct Slot;
  Slot& local_slot();
  void write_out(Slot& s);  // caller holds s.mutex

  int fd_ = -1;
  std::size_t chunk_;
  const std::uint64_t id_;  // distinguishes this sink from earlier ones in thread-local caches
  std::mutex file_mutex_;   // keeps one chunk's bytes together in the file
  std::mutex slots_mutex_;  // guards slots_ and prototype_
  std::vector<std::unique_ptr<Slot>> slots_;
  std::unique_ptr<spdlog::formatter> prototype_;
  std::atomic<std::uint64_t> writes_{0};
  std::atomic<std::uint64_t> write_errors_{0};
};

}  // namespace mayhem
