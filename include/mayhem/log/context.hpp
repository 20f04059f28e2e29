// What a log line is about, for structured formats: the message and the stage that logs it. A
// stage that logs about one message opens a LogScope around the call; `--log-format json` then
// adds "stage", "message_id" and "instance_name" to the line (the formatter reads the scope on the
// thread that formats the line: the logging thread itself with the default sinks; spdlog's async
// logger formats on its own thread, where only the text is known). Costs two thread-local stores.
// Use: `{ LogScope scope(m, "save"); log->info("Saved {} into database", m); }`
#pragma once

namespace mayhem {

struct Message;

struct LogContext {
  const Message* msg = nullptr;
  const char* stage = nullptr;
};

inline thread_local LogContext t_log_context;

class LogScope {
 public:
  LogScope(const Message& m, const char* stage) : saved_(t_log_context) {
    t_log_context = {&m, stage};
  }
  ~LogScope() { t_log_context = saved_; }
  LogScope(const LogScope&) = delete;
  LogScope& operator=(const LogScope&) = delete;

 private:
  LogContext saved_;
};

}  // namespace mayhem
