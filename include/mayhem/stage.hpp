// The stages of a message's trip through the service, one enum for the whole code base: the
// observer and the profiler time them, the I/O interface submits three of them (an I/O operation,
// `Op`, is a Stage: kSave, kRestart or kCleanup), fault injection hits four (`--inject` names
// kLease `timer`). One constexpr table gives each stage its printed name, the source file of its
// body (the profiler's reports) and its operation index (the I/O models' arrays, the seeds of the
// simulated I/O and fault draws).
// Use: `to_string(Stage::kSettle)`, `stage_file(s)`, `op_index(Op::kRestart)`.
#pragma once

#include <cstdint>

namespace mayhem {

enum class Stage : std::uint8_t {
  kPublish,
  kConsume,
  // submit saves
  kSave,
  // handle save completions
  kSaved,
  // submit restarts
  kRestart,
  // handle restart completions (and retries)
  kRestarted,
  // submit cleanups
  kCleanup,
  // ack / nack
  kSettle,
  // one tick of the lease thread
  kLease,
  kCount
};

// An I/O operation: the stages that hand simulated or real I/O out (kSave, kRestart, kCleanup).
using Op = Stage;
inline constexpr int kOpCount = 3;
// The operations by index (op_index).
inline constexpr Op kOps[kOpCount] = {Stage::kSave, Stage::kRestart, Stage::kCleanup};

struct StageInfo {
  // As printed (logs, reports, /stats, the profiler).
  const char* name;
  // Where the stage's body is.
  const char* file;
  // The stage's operation index: save 0, restart 1, cleanup 2 (the I/O models' per-operation
  // arrays and the simulated I/O's draws), lease 3 (the timer's fault draws); -1 for the rest.
  // These values seed reproducible draws: changing them changes every run's outcome for a seed.
  std::int8_t op;
  // The operation whose completions the stage handles (saved, restarted, settle); -1 for none.
  std::int8_t completes;
  // The name `--inject` uses for the stage; null where faults cannot be injected.
  const char* inject;
};

inline constexpr StageInfo kStageInfo[static_cast<int>(Stage::kCount)] = {
    {"publish", "src/pipeline/intake.cpp", -1, -1, nullptr},
    {"consume", "src/pipeline/intake.cpp", -1, -1, nullptr},
    {"save", "src/pipeline/completion.cpp", 0, -1, "save"},
    {"saved", "src/pipeline/completion.cpp", -1, 0, nullptr},
    {"restart", "src/pipeline/completion.cpp", 1, -1, "restart"},
    {"restarted", "src/pipeline/completion.cpp", -1, 1, nullptr},
    {"cleanup", "src/pipeline/completion.cpp", 2, -1, "cleanup"},
    {"settle", "src/pipeline/completion.cpp", -1, 2, nullptr},
    {"lease", "src/lease/lease_manager.cpp", 3, -1, "timer"},
};

constexpr const StageInfo& stage_info(Stage s) {
  return kStageInfo[static_cast<int>(s)];
}
// "?" for kCount (or anything out of range).
constexpr const char* to_string(Stage s) {
  return s < Stage::kCount ? stage_info(s).name : "?";
}
constexpr const char* stage_file(Stage s) {
  return stage_info(s).file;
}
constexpr int op_index(Stage s) {
  return stage_info(s).op;
}

static_assert(kOps[0] == Op::kSave && kOps[1] == Op::kRestart && kOps[2] == Op::kCleanup);
static_assert(op_index(Op::kSave) == 0 && op_index(Op::kRestart) == 1 &&
              op_index(Op::kCleanup) == 2 && op_index(Stage::kLease) == 3);

}  // namespace mayhem
