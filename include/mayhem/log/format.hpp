// The log line formats (`--log-format`), as spdlog formatters written by hand (spdlog's
// pattern_formatter calls one virtual flag formatter per pattern element per line):
//  - reference: the reference's "%(asctime)s,%(msecs)03d %(levelname)s: %(message)s" with datefmt
//    "%H:%M:%S", e.g. `08:41:30,123 INFO: Pulled PubSubMessage(instance_name='cattle-1a2b')`;
//  - iso: the same with an ISO 8601 local time, microseconds and zone,
//    e.g. `2026-12-03T08:41:30.123456+00:00 INFO: Pulled ...`;
//  - json: one object a line for log shippers: {"ts": iso time, "level", "msg", and, when the line
//    is about one message (log/context.hpp), "stage", "message_id", "instance_name"}.
// Each caches its date prefix for the current second.
// Use: `sink->set_formatter(make_formatter(LogFormat::kIso));`
#pragma once

#include <spdlog/formatter.h>

#include <memory>

#include "mayhem/options.hpp"

namespace mayhem {

std::unique_ptr<spdlog::formatter> make_formatter(LogFormat format);

}  // namespace mayhem
