#include "mayhem/chunked_file_sink.hpp"

#include <fcntl.h>
#include <spdlog/common.h>
#include <spdlog/details/log_msg.h>
#include <spdlog/pattern_formatter.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <stdexcept>

namespace mayhem {

namespace {
std::atomic<std::uint64_t> next_sink_id{1};
}  // namespace

struct ChunkedFileSink::Slot {
  std::mutex mutex;  // taken by its own thread per line (uncontended) and by flush()
  spdlog::memory_buf_t buf;
  std::unique_ptr<spdlog::formatter> formatter;
};

ChunkedFileSink::ChunkedFileSink(const std::string& path, std::size_t chunk_bytes)
    : chunk_(chunk_bytes),
      id_(next_sink_id.fetch_add(1, std::memory_order_relaxed)),
      prototype_(std::make_unique<spdlog::pattern_formatter>()) {
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) throw std::runtime_error(std::strerror(errno));
}

ChunkedFileSink::~ChunkedFileSink() {
  try {
    flush();
  } catch (...) {  // counted in write_errors_; nothing else to do at teardown
  }
  ::close(fd_);
}

ChunkedFileSink::Slot& ChunkedFileSink::local_slot() {
  struct Cache {
    std::uint64_t sink = 0;
    Slot* slot = nullptr;
  };
  thread_local Cache cache;
  if (cache.sink == id_) return *cache.slot;
  std::lock_guard lock(slots_mutex_);
  auto s = std::make_unique<Slot>();
  s->formatter = prototype_->clone();
  s->buf.reserve(chunk_ + 512);
  cache = {id_, s.get()};
  slots_.push_back(std::move(s));
  return *cache.slot;
}

void ChunkedFileSink::write_out(Slot& s) {
  if (s.buf.size() == 0) return;
  const char* p = s.buf.data();
  std::size_t left = s.buf.size();
  int err = 0;
  {
    std::lock_guard lock(file_mutex_);
    while (left > 0) {
      const ssize_t w = ::write(fd_, p, left);
      if (w < 0) {
        if (errno == EINTR) continue;
        err = errno;
        break;
      }
      p += w;
      left -= static_cast<std::size_t>(w);
    }
  }
  s.buf.clear();
  writes_.fetch_add(1, std::memory_order_relaxed);
  if (err != 0) {
    write_errors_.fetch_add(1, std::memory_order_relaxed);
    throw spdlog::spdlog_ex("log file write failed", err);  // spdlog's error handler reports it
  }
}

void ChunkedFileSink::log(const spdlog::details::log_msg& msg) {
  Slot& s = local_slot();
  std::lock_guard lock(s.mutex);
  s.formatter->format(msg, s.buf);
  if (s.buf.size() >= chunk_) write_out(s);
}

void ChunkedFileSink::flush() {
  std::lock_guard lock(slots_mutex_);
  std::exception_ptr first;
  for (auto& s : slots_) {
    std::lock_guard slot_lock(s->mutex);
    try {
      write_out(*s);
    } catch (...) {
      if (!first) first = std::current_exception();
    }
  }
  if (first) std::rethrow_exception(first);
}

void ChunkedFileSink::set_pattern(const std::string& pattern) {
  set_formatter(std::make_unique<spdlog::pattern_formatter>(pattern));
}

void ChunkedFileSink::set_formatter(std::unique_ptr<spdlog::formatter> formatter) {
  std::lock_guard lock(slots_mutex_);
  prototype_ = std::move(formatter);
  for (auto& s : slots_) {
    std::lock_guard slot_lock(s->mutex);
    s->formatter = prototype_->clone();
  }
}

}  // namespace mayhem
