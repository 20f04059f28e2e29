#include "mayhem/log/ordered_file_sink.hpp"

#include <fcntl.h>
#include <spdlog/common.h>
#include <spdlog/details/log_msg.h>
#include <spdlog/pattern_formatter.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <limits>
#include <new>
#include <stdexcept>

#include "mayhem/thread_name.hpp"

namespace mayhem {

namespace {

std::atomic<std::uint64_t> next_sink_id{1};

// A record in a block: the line's stamp (ns since the epoch), its length, its bytes.
constexpr std::size_t kHeader = sizeof(std::int64_t) + sizeof(std::uint32_t);
// The writer's watermark trails its clock by this much: a clock read the CPU moved across the
// neighbouring loads (nanoseconds) can never reach it.
constexpr std::int64_t kMarginNs = 50'000;
// Idle writer: it looks again after this long (a busy one after each round).
constexpr auto kInterval = std::chrono::milliseconds(2);
constexpr std::size_t kWriteBytes = 1 << 20;

std::int64_t stamp_ns(spdlog::log_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}
std::int64_t now_ns() {
  return stamp_ns(spdlog::log_clock::now());
}

int open_append(const std::string& path) {
  return ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

void cpu_relax(int& spins) {
  if (++spins < 64)
    __builtin_ia32_pause();
  else
    std::this_thread::yield();
}

}  // namespace

struct OrderedFileSink::Block {
  std::atomic<Block*> next{nullptr};
  std::atomic<std::uint32_t> committed{0};  // bytes of whole records; the producer's release
  std::uint32_t cap = 0;
  char* data() { return reinterpret_cast<char*>(this + 1); }

  static Block* make(std::size_t cap) {
    void* raw = ::operator new(sizeof(Block) + cap);
    auto* b = new (raw) Block;
    b->cap = static_cast<std::uint32_t>(cap);
    return b;
  }
  static void destroy(Block* b) {
    b->~Block();
    ::operator delete(b);
  }
};

struct OrderedFileSink::Slot {
  // Odd while the owning thread is between its mark and its commit (see the header).
  alignas(64) std::atomic<std::uint64_t> seq{0};
  // The producer's side.
  Block* tail = nullptr;
  std::unique_ptr<spdlog::formatter> formatter;
  spdlog::memory_buf_t scratch;
  std::atomic<std::uint64_t> lines{0}, restamped{0};  // written by the owner only
  // The writer's side.
  alignas(64) Block* head = nullptr;
  std::uint32_t read_pos = 0;
};

struct OrderedFileSink::Head {
  std::int64_t ts;
  Slot* slot;
  bool operator<(const Head& o) const { return ts > o.ts; }  // a min-heap by stamp
};

OrderedFileSink::OrderedFileSink(std::string path, Options opts)
    : path_(std::move(path)),
      opts_(opts),
      id_(next_sink_id.fetch_add(1, std::memory_order_relaxed)),
      prototype_(std::make_unique<spdlog::pattern_formatter>()) {
  if (opts_.block_bytes == 0) throw std::invalid_argument("log block of 0 bytes");
  fd_ = open_append(path_);
  if (fd_ < 0) throw std::runtime_error(std::strerror(errno));
  out_.reserve(kWriteBytes + 4096);
  writer_ = std::thread([this] {
    name_this_thread("mayhem-log");
    writer_loop();
  });
}

OrderedFileSink::~OrderedFileSink() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  writer_.join();
  for (auto& s : slots_) {
    for (Block* b = s->head; b != nullptr;) {
      Block* n = b->next.load(std::memory_order_relaxed);
      Block::destroy(b);
      b = n;
    }
  }
  for (Block* b : free_) Block::destroy(b);
  ::close(fd_);
}

OrderedFileSink::Slot& OrderedFileSink::local_slot() {
  struct Cache {
    std::uint64_t sink = 0;
    Slot* slot = nullptr;
  };
  thread_local Cache cache;
  if (cache.sink == id_) return *cache.slot;
  auto s = std::make_unique<Slot>();
  slot_count_.fetch_add(1, std::memory_order_relaxed);
  s->tail = s->head = take_block(opts_.block_bytes, false);
  std::lock_guard lock(slots_mutex_);
  s->formatter = prototype_->clone();
  cache = {id_, s.get()};
  slots_.push_back(std::move(s));
  return *cache.slot;
}

OrderedFileSink::Block* OrderedFileSink::take_block(std::size_t need, bool may_wait) {
  const std::size_t cap = std::max(opts_.block_bytes, need);
  std::unique_lock lock(pool_mutex_);
  // A thread's first block, and an oversized line's own block, are always granted.
  const bool always = cap > opts_.block_bytes || !may_wait;
  for (;;) {
    if (cap == opts_.block_bytes && !free_.empty()) {
      Block* b = free_.back();
      free_.pop_back();
      b->next.store(nullptr, std::memory_order_relaxed);
      b->committed.store(0, std::memory_order_relaxed);
      return b;
    }
    // Two blocks per thread at least: were every block a thread's last, which the writer cannot
    // free, the threads would wait for it forever.
    const std::size_t limit = std::max(
        opts_.max_bytes, 2 * (slot_count_.load(std::memory_order_relaxed) + 1) * opts_.block_bytes);
    if (always || blocks_bytes_ + cap <= limit) {
      blocks_bytes_ += cap;
      lock.unlock();
      return Block::make(cap);
    }
    waits_.fetch_add(1, std::memory_order_relaxed);
    {
      // Wake the writer now rather than at its next tick: it frees blocks as it writes.
      std::lock_guard wake(mutex_);
      hurry_ = true;
    }
    cv_.notify_one();
    pool_cv_.wait(lock);
  }
}

void OrderedFileSink::give_back(Block* b) {
  {
    std::lock_guard lock(pool_mutex_);
    if (b->cap == opts_.block_bytes && free_.size() < 64) {
      free_.push_back(b);
    } else {
      blocks_bytes_ -= b->cap;
      Block::destroy(b);
    }
  }
  pool_cv_.notify_all();
}

void OrderedFileSink::log(const spdlog::details::log_msg& msg) {
  Slot& s = local_slot();
  spdlog::details::log_msg restamped;
  for (;;) {
    // Busy first (seq_cst), then look at the writer's watermark (see the header).
    const std::uint64_t v = s.seq.load(std::memory_order_relaxed);
    s.seq.store(v + 1, std::memory_order_seq_cst);
    const spdlog::details::log_msg* line = &msg;
    std::int64_t ts = stamp_ns(msg.time);
    if (opts_.restamp && ts <= watermark_.load(std::memory_order_seq_cst)) {
      // Stamped before the writer's last watermark (the thread was preempted between spdlog's
      // clock read and here): written now, it would land behind later lines. Stamp it again.
      restamped = msg;
      restamped.time = spdlog::log_clock::now();
      ts = stamp_ns(restamped.time);
      line = &restamped;
      s.restamped.store(s.restamped.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    }
    s.scratch.clear();
    s.formatter->format(*line, s.scratch);
    const std::size_t need = kHeader + s.scratch.size();
    Block* b = s.tail;
    const std::uint32_t pos = b->committed.load(std::memory_order_relaxed);
    if (pos + need <= b->cap) {
      const auto len = static_cast<std::uint32_t>(s.scratch.size());
      char* p = b->data() + pos;
      std::memcpy(p, &ts, sizeof ts);
      std::memcpy(p + sizeof ts, &len, sizeof len);
      std::memcpy(p + kHeader, s.scratch.data(), len);
      b->committed.store(pos + static_cast<std::uint32_t>(need), std::memory_order_release);
      s.seq.store(v + 2, std::memory_order_release);
      s.lines.store(s.lines.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      return;
    }
    // The line does not fit: idle again, take a fresh block (waiting for the writer if need be,
    // never while marked busy: the writer waits for busy threads), then try again.
    s.seq.store(v + 2, std::memory_order_release);
    Block* nb = take_block(need, true);
    b->next.store(nb, std::memory_order_release);
    s.tail = nb;
  }
}

std::uint64_t OrderedFileSink::lines() const {
  std::lock_guard lock(slots_mutex_);
  std::uint64_t n = 0;
  for (const auto& s : slots_) n += s->lines.load(std::memory_order_relaxed);
  return n;
}

std::uint64_t OrderedFileSink::restamped() const {
  std::lock_guard lock(slots_mutex_);
  std::uint64_t n = 0;
  for (const auto& s : slots_) n += s->restamped.load(std::memory_order_relaxed);
  return n;
}

void OrderedFileSink::flush() {
  std::unique_lock lock(mutex_);
  const std::uint64_t ticket = ++flush_asked_;
  cv_.notify_all();
  done_cv_.wait(lock, [&] { return flush_done_ >= ticket; });
  const auto errors = write_errors_.load(std::memory_order_relaxed);
  if (errors != errors_reported_) {
    errors_reported_ = errors;
    throw spdlog::spdlog_ex("log file write failed", last_errno_.load(std::memory_order_relaxed));
  }
}

std::optional<std::string> OrderedFileSink::reopen() {
  std::unique_lock lock(mutex_);
  const std::uint64_t ticket = ++reopen_asked_;
  ++flush_asked_;
  cv_.notify_all();
  done_cv_.wait(lock, [&] { return reopen_done_ >= ticket; });
  return reopen_error_;
}

void OrderedFileSink::set_pattern(const std::string& pattern) {
  set_formatter(std::make_unique<spdlog::pattern_formatter>(pattern));
}

void OrderedFileSink::set_formatter(std::unique_ptr<spdlog::formatter> formatter) {
  std::lock_guard lock(slots_mutex_);
  prototype_ = std::move(formatter);
  for (auto& s : slots_) s->formatter = prototype_->clone();
}

void OrderedFileSink::writer_loop() {
  for (;;) {
    std::unique_lock lock(mutex_);
    cv_.wait_for(lock, kInterval, [&] {
      return stop_ || hurry_ || flush_asked_ != flush_done_ || reopen_asked_ != reopen_done_;
    });
    hurry_ = false;
    const bool stop = stop_;
    const std::uint64_t flush = flush_asked_, reopen = reopen_asked_;
    const bool asked = flush != flush_done_ || reopen != reopen_done_;
    lock.unlock();

    std::int64_t watermark = std::numeric_limits<std::int64_t>::max();
    if (!stop && opts_.restamp) {
      // A flush covers the lines logged before it: wait until the margin has passed them.
      const std::int64_t t = now_ns();
      if (asked)
        while (now_ns() - kMarginNs < t) std::this_thread::yield();
      watermark = now_ns() - kMarginNs;
      // Published before the threads are looked at: a line stamped at or before it that a thread
      // has not yet begun to commit is stamped again (log()).
      watermark_.store(watermark, std::memory_order_seq_cst);
    }
    round(watermark);
    write_out();

    std::optional<std::string> reopen_error;
    if (reopen != reopen_done_) {
      const int fd = open_append(path_);
      if (fd < 0) {
        reopen_error = std::strerror(errno);
      } else {
        ::close(fd_);
        fd_ = fd;
      }
    }
    lock.lock();
    flush_done_ = flush;
    if (reopen != reopen_done_) reopen_error_ = reopen_error;
    reopen_done_ = reopen;
    lock.unlock();
    done_cv_.notify_all();
    if (stop) return;
  }
}

void OrderedFileSink::round(std::int64_t watermark) {
  auto& slots = scan_;
  slots.clear();
  {
    std::lock_guard lock(slots_mutex_);
    for (auto& s : slots_) slots.push_back(s.get());
  }
  // Every thread idle once after the watermark was read: their lines up to it are committed.
  for (Slot* s : slots) {
    const std::uint64_t v = s->seq.load(std::memory_order_seq_cst);
    int spins = 0;
    if (v & 1)
      while (s->seq.load(std::memory_order_acquire) == v) cpu_relax(spins);
  }
  // The next record of a slot, moving on to its next block (and freeing the old one) at the end.
  auto peek = [this](Slot* s, std::int64_t& ts) {
    for (;;) {
      Block* b = s->head;
      Block* n = b->next.load(std::memory_order_acquire);
      const std::uint32_t c = b->committed.load(std::memory_order_acquire);
      if (s->read_pos + kHeader <= c) {
        std::memcpy(&ts, b->data() + s->read_pos, sizeof ts);
        return true;
      }
      if (n == nullptr) return false;
      s->head = n;
      s->read_pos = 0;
      give_back(b);
    }
  };
  heads_.clear();
  for (Slot* s : slots) {
    std::int64_t ts;
    if (peek(s, ts) && ts <= watermark) heads_.push_back({ts, s});
  }
  std::make_heap(heads_.begin(), heads_.end());
  while (!heads_.empty()) {
    std::pop_heap(heads_.begin(), heads_.end());
    Head h = heads_.back();
    heads_.pop_back();
    Slot* s = h.slot;
    // Lines of one slot in a row while they stay ahead of the other slots' next line.
    const std::int64_t bound = heads_.empty() ? watermark : std::min(watermark, heads_.front().ts);
    std::int64_t ts = h.ts;
    bool more = false;
    do {
      const char* p = s->head->data() + s->read_pos;
      std::uint32_t len;
      std::memcpy(&len, p + sizeof(std::int64_t), sizeof len);
      if (ts < last_written_ns_)
        late_.fetch_add(1, std::memory_order_relaxed);
      else
        last_written_ns_ = ts;
      out_.insert(out_.end(), p + kHeader, p + kHeader + len);
      s->read_pos += static_cast<std::uint32_t>(kHeader + len);
      if (out_.size() >= kWriteBytes) write_out();
      more = peek(s, ts);
    } while (more && ts <= bound);
    if (more && ts <= watermark) {
      heads_.push_back({ts, s});
      std::push_heap(heads_.begin(), heads_.end());
    }
  }
}

void OrderedFileSink::write_out() {
  if (out_.empty()) return;
  const char* p = out_.data();
  std::size_t left = out_.size();
  while (left > 0) {
    const ssize_t w = ::write(fd_, p, left);
    if (w < 0) {
      if (errno == EINTR) continue;
      last_errno_.store(errno, std::memory_order_relaxed);
      write_errors_.fetch_add(1, std::memory_order_relaxed);
      break;
    }
    p += w;
    left -= static_cast<std::size_t>(w);
  }
  out_.clear();
  writes_.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace mayhem
