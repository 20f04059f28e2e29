#include "mayhem/observe/observer.hpp"

namespace mayhem {

const char* to_string(Stage s) {
  switch (s) {
    case Stage::kPublish:
      return "publish";
    case Stage::kConsume:
      return "consume";
    case Stage::kSave:
      return "save";
    case Stage::kSaved:
      return "saved";
    case Stage::kRestart:
      return "restart";
    case Stage::kRestarted:
      return "restarted";
    case Stage::kCleanup:
      return "cleanup";
    case Stage::kSettle:
      return "settle";
    case Stage::kLease:
      return "lease";
    case Stage::kCount:
      break;
  }
  return "?";
}

}  // namespace mayhem
