// A spdlog sink for tests: keeps every formatted line so tests can count and search what the
// service logged (in the spirit of spdlog's own counting test sinks).
// Use: `auto [log, sink] = make_test_logger(); ... REQUIRE(sink->count("Pulled") == 10);`
#pragma once

#include <spdlog/logger.h>
#include <spdlog/sinks/base_sink.h>

#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace mayhem::test {

class TestSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  std::size_t count(const std::string& needle) const {
    std::lock_guard lock(const_cast<std::mutex&>(mutex_));
    std::size_t n = 0;
    for (const auto& l : lines_) n += l.find(needle) != std::string::npos;
    return n;
  }
  std::vector<std::string> lines() const {
    std::lock_guard lock(const_cast<std::mutex&>(mutex_));
    return lines_;
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    lines_.emplace_back(std::string(spdlog::level::to_string_view(msg.level).data()) + ": " +
                        std::string(msg.payload.data(), msg.payload.size()));
  }
  void flush_() override {}

 private:
  std::vector<std::string> lines_;
};

inline std::pair<std::shared_ptr<spdlog::logger>, std::shared_ptr<TestSink>> make_test_logger(
    spdlog::level::level_enum level = spdlog::level::info) {
  auto sink = std::make_shared<TestSink>();
  auto log = std::make_shared<spdlog::logger>("test", sink);
  log->set_level(level);
  return {log, sink};
}

}  // namespace mayhem::test
