#include "mayhem/log/format.hpp"

#include <spdlog/details/log_msg.h>

#include <chrono>
#include <cstdint>
#include <ctime>
#include <string_view>

#include "mayhem/log/context.hpp"
#include "mayhem/message.hpp"

namespace mayhem {

namespace {

using spdlog::memory_buf_t;

void two(char* p, int v) {
  p[0] = static_cast<char>('0' + v / 10);
  p[1] = static_cast<char>('0' + v % 10);
}
void digits(char* p, int n, long v) {
  for (int i = n - 1; i >= 0; --i, v /= 10) p[i] = static_cast<char>('0' + v % 10);
}
void append(memory_buf_t& dest, std::string_view s) {
  dest.append(s.data(), s.data() + s.size());
}

constexpr std::string_view kLevelNames[] = {"TRACE", "DEBUG",    "INFO", "WARNING",
                                            "ERROR", "CRITICAL", "OFF"};

// The date part of a stamp, rebuilt once a second.
class SecondCache {
 public:
  // Returns true when `secs` is a new second (the caller rebuilds its prefix from tm()).
  bool advance(std::int64_t secs) {
    if (secs == cached_) return false;
    cached_ = secs;
    const std::time_t t = static_cast<std::time_t>(secs);
    localtime_r(&t, &tm_);
    return true;
  }
  const std::tm& tm() const { return tm_; }

 private:
  std::int64_t cached_ = -1;
  std::tm tm_{};
};

struct StampParts {
  std::int64_t secs;
  long micros;
};
StampParts stamp_parts(const spdlog::details::log_msg& msg) {
  using namespace std::chrono;
  const auto since = msg.time.time_since_epoch();
  const auto secs = duration_cast<seconds>(since);
  return {secs.count(), static_cast<long>(duration_cast<microseconds>(since - secs).count())};
}

// "08:41:30,123 INFO: message"
class ReferenceFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, memory_buf_t& dest) override {
    const auto [secs, micros] = stamp_parts(msg);
    if (cache_.advance(secs)) {
      const auto& tm = cache_.tm();
      two(prefix_ + 0, tm.tm_hour);
      prefix_[2] = ':';
      two(prefix_ + 3, tm.tm_min);
      prefix_[5] = ':';
      two(prefix_ + 6, tm.tm_sec);
      prefix_[8] = ',';
    }
    char tail[4];
    digits(tail, 3, micros / 1000);
    tail[3] = ' ';
    dest.append(prefix_, prefix_ + sizeof prefix_);
    dest.append(tail, tail + sizeof tail);
    append(dest, kLevelNames[static_cast<int>(msg.level)]);
    append(dest, ": ");
    dest.append(msg.payload.data(), msg.payload.data() + msg.payload.size());
    dest.push_back('\n');
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<ReferenceFormatter>();
  }

 private:
  SecondCache cache_;
  char prefix_[9] = {};
};

// "2026-12-03T08:41:30.123456+00:00": the prefix up to the seconds' dot and the zone are cached.
class IsoTime {
 public:
  void append_to(const spdlog::details::log_msg& msg, memory_buf_t& dest) {
    const auto [secs, micros] = stamp_parts(msg);
    if (cache_.advance(secs)) {
      const auto& tm = cache_.tm();
      digits(prefix_, 4, tm.tm_year + 1900);
      prefix_[4] = '-';
      two(prefix_ + 5, tm.tm_mon + 1);
      prefix_[7] = '-';
      two(prefix_ + 8, tm.tm_mday);
      prefix_[10] = 'T';
      two(prefix_ + 11, tm.tm_hour);
      prefix_[13] = ':';
      two(prefix_ + 14, tm.tm_min);
      prefix_[16] = ':';
      two(prefix_ + 17, tm.tm_sec);
      prefix_[19] = '.';
      long off = tm.tm_gmtoff / 60;
      zone_[0] = off < 0 ? '-' : '+';
      if (off < 0) off = -off;
      two(zone_ + 1, static_cast<int>(off / 60));
      zone_[3] = ':';
      two(zone_ + 4, static_cast<int>(off % 60));
    }
    char frac[6];
    digits(frac, 6, micros);
    dest.append(prefix_, prefix_ + sizeof prefix_);
    dest.append(frac, frac + sizeof frac);
    dest.append(zone_, zone_ + sizeof zone_);
  }

 private:
  SecondCache cache_;
  char prefix_[20] = {};
  char zone_[6] = {};
};

// "2026-12-03T08:41:30.123456+00:00 INFO: message"
class IsoFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, memory_buf_t& dest) override {
    time_.append_to(msg, dest);
    dest.push_back(' ');
    append(dest, kLevelNames[static_cast<int>(msg.level)]);
    append(dest, ": ");
    dest.append(msg.payload.data(), msg.payload.data() + msg.payload.size());
    dest.push_back('\n');
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<IsoFormatter>();
  }

 private:
  IsoTime time_;
};

// A JSON string's contents: quotes, backslashes and control characters escaped (bytes >= 0x80
// pass through: the service's text is UTF-8).
void append_escaped(memory_buf_t& dest, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::size_t run = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    dest.append(s.data() + run, s.data() + i);
    run = i + 1;
    switch (c) {
      case '"':
        append(dest, "\\\"");
        break;
      case '\\':
        append(dest, "\\\\");
        break;
      case '\n':
        append(dest, "\\n");
        break;
      case '\t':
        append(dest, "\\t");
        break;
      case '\r':
        append(dest, "\\r");
        break;
      default: {
        const char u[6] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 15]};
        dest.append(u, u + sizeof u);
      }
    }
  }
  dest.append(s.data() + run, s.data() + s.size());
}

// {"ts":"...","level":"INFO","msg":"...","stage":"save","message_id":"...","instance_name":"..."}
class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, memory_buf_t& dest) override {
    append(dest, "{\"ts\":\"");
    time_.append_to(msg, dest);
    append(dest, "\",\"level\":\"");
    append(dest, kLevelNames[static_cast<int>(msg.level)]);
    append(dest, "\",\"msg\":\"");
    append_escaped(dest, std::string_view(msg.payload.data(), msg.payload.size()));
    dest.push_back('"');
    const LogContext& ctx = t_log_context;
    if (ctx.stage != nullptr) {
      append(dest, ",\"stage\":\"");
      append(dest, ctx.stage);
      dest.push_back('"');
    }
    if (ctx.msg != nullptr) {
      char id[37];
      uuid_text(ctx.msg->id, id);
      append(dest, ",\"message_id\":\"");
      dest.append(id, id + 36);
      append(dest, "\",\"instance_name\":\"");
      append_escaped(
          dest, std::string_view(ctx.msg->instance_name,
                                 strnlen(ctx.msg->instance_name, sizeof ctx.msg->instance_name)));
      dest.push_back('"');
    }
    append(dest, "}\n");
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>();
  }

 private:
  IsoTime time_;
};

}  // namespace

std::unique_ptr<spdlog::formatter> make_formatter(LogFormat format) {
  switch (format) {
    case LogFormat::kIso:
      return std::make_unique<IsoFormatter>();
    case LogFormat::kJson:
      return std::make_unique<JsonFormatter>();
    case LogFormat::kReference:
      break;
  }
  return std::make_unique<ReferenceFormatter>();
}

}  // namespace mayhem
