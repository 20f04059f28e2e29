// `--log-buffer 0`: the simplest file sink, one stdio buffer shared by every logging thread under
// one lock, written once a second and at exit (as spdlog's basic_file_sink_mt, which it replaces
// for two reasons): each line is stamped again inside the lock, so the file is in timestamp order
// (spdlog stamps a line before it waits for the lock), and reopen() opens the path again for
// logrotate (SIGUSR1). The file is opened for appending. Also the sink behind the async logger,
// whose one thread needs no more than this.
// Use: `auto sink = std::make_shared<LockedFileSink>(path);` as any spdlog sink.
#pragma once

#include <spdlog/sinks/base_sink.h>

#include <cstdio>
#include <mutex>
#include <optional>
#include <string>

namespace mayhem {

class LockedFileSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  // Throws std::runtime_error with the reason when the file cannot be opened.
  // `restamp = false`: lines keep spdlog's stamp (the async logger's one thread, which writes
  // lines in its queue's order, stamped when they were logged).
  explicit LockedFileSink(const std::string& path, bool restamp = true);
  ~LockedFileSink() override;
  LockedFileSink(const LockedFileSink&) = delete;
  LockedFileSink& operator=(const LockedFileSink&) = delete;
  // Opens the path again (the old file is closed after its buffer is written); returns the error,
  // if any (the old file is then kept).
  std::optional<std::string> reopen();

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override;
  void flush_() override;

 private:
  std::string path_;
  bool restamp_;
  std::FILE* file_ = nullptr;
  spdlog::memory_buf_t line_;
};

}  // namespace mayhem
