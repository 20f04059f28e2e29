#include "mayhem/log/locked_file_sink.hpp"

#include <spdlog/common.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace mayhem {

namespace {
// stdio's buffer: 64 KiB per write(2) instead of the default 4 KiB (written once a second anyway).
constexpr std::size_t kStdioBuffer = 64 * 1024;
std::FILE* fopen_append(const std::string& path) {
  return std::fopen(path.c_str(), "ae");  // append, close-on-exec
}
}  // namespace

LockedFileSink::LockedFileSink(const std::string& path, bool restamp)
    : path_(path), restamp_(restamp) {
  file_ = fopen_append(path_);
  if (file_ == nullptr) throw std::runtime_error(std::strerror(errno));
  std::setvbuf(file_, nullptr, _IOFBF, kStdioBuffer);
}

LockedFileSink::~LockedFileSink() {
  std::fclose(file_);
}

std::optional<std::string> LockedFileSink::reopen() {
  std::lock_guard lock(mutex_);
  std::FILE* fresh = fopen_append(path_);
  if (fresh == nullptr) return std::string(std::strerror(errno));
  std::setvbuf(fresh, nullptr, _IOFBF, kStdioBuffer);
  std::fclose(file_);  // writes what the old file's buffer holds
  file_ = fresh;
  return std::nullopt;
}

void LockedFileSink::sink_it_(const spdlog::details::log_msg& msg) {
  line_.clear();
  if (restamp_) {
    spdlog::details::log_msg stamped = msg;
    stamped.time = spdlog::log_clock::now();  // under the lock: lines in the file in stamp order
    formatter_->format(stamped, line_);
  } else {
    formatter_->format(msg, line_);
  }
  if (std::fwrite(line_.data(), 1, line_.size(), file_) != line_.size())
    throw spdlog::spdlog_ex("log file write failed", errno);
}

void LockedFileSink::flush_() {
  if (std::fflush(file_) != 0) throw spdlog::spdlog_ex("log file flush failed", errno);
}

}  // namespace mayhem
