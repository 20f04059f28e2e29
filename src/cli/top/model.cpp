// `mayhem top`'s state machine (TopModel) and the decoding of the keys a terminal sends.
#include <algorithm>

#include "mayhem/cli/top.hpp"

namespace mayhem::cli {

std::vector<int> decode_keys(std::string_view b) {
  std::vector<int> keys;
  for (std::size_t i = 0; i < b.size(); ++i) {
    const auto c = static_cast<unsigned char>(b[i]);
    if (c == 0x1b) {
      // ESC [ A / ESC O A (cursor keys, normal and application mode); a lone ESC is Esc.
      if (i + 2 < b.size() && (b[i + 1] == '[' || b[i + 1] == 'O')) {
        const char f = b[i + 2];
        const int k = f == 'A'   ? kKeyUp
                      : f == 'B' ? kKeyDown
                      : f == 'C' ? kKeyRight
                      : f == 'D' ? kKeyLeft
                                 : 0;
        if (k != 0) {
          keys.push_back(k);
          i += 2;
          continue;
        }
        // Another sequence (e.g. ESC [ 3 ~): skip it up to its final byte.
        std::size_t j = i + 2;
        while (j < b.size() && !(b[j] >= 0x40 && b[j] <= 0x7e)) ++j;
        i = j;
        continue;
      }
      keys.push_back(kKeyEsc);
    } else if (c == '\r' || c == '\n') {
      keys.push_back(kKeyEnter);
    } else if (c == 0x7f || c == 0x08) {
      keys.push_back(kKeyBackspace);
    } else if (c == 3) {
      keys.push_back(kKeyCtrlC);
    } else {
      keys.push_back(c);
    }
  }
  return keys;
}

void TopModel::update(StatsSnapshot s) {
  view_.problem.clear();
  if (view_.paused) return;
  if (view_.now && s.uptime_ns < view_.now->uptime_ns) {  // a restarted service: start over
    view_.prev.reset();
    view_.baseline.reset();
  } else {
    view_.prev = std::move(view_.now);
  }
  view_.now = std::move(s);
}

void TopModel::failed(std::string problem) {
  view_.problem = std::move(problem);
}

void TopModel::show(const StatsSnapshot* prev, const StatsSnapshot* now, std::string problem) {
  view_.prev.reset();
  view_.now.reset();
  if (prev) view_.prev = *prev;
  if (now) view_.now = *now;
  view_.problem = std::move(problem);
}

void TopModel::cycle_sort() {
  view_.sort =
      static_cast<SortKey>((static_cast<int>(view_.sort) + 1) % static_cast<int>(SortKey::kCount));
  view_.reversed = false;
}

void TopModel::reset() {
  if (view_.now) view_.baseline = view_.now;
}

void TopModel::move_selection(int delta) {
  const auto names = row_order(view_);
  if (names.empty()) return;
  auto it = std::find(names.begin(), names.end(), view_.selected);
  const long at = it == names.end() ? 0 : it - names.begin();
  const long to = std::clamp<long>(at + delta, 0, static_cast<long>(names.size()) - 1);
  view_.selected = names[static_cast<std::size_t>(to)];
}

void TopModel::drill_in() {
  if (view_.selected.empty()) {
    const auto names = row_order(view_);
    if (names.empty()) return;
    view_.selected = names.front();
  }
  view_.drill = view_.selected;
}

void TopModel::drill_out() {
  view_.drill.clear();
}

TopModel::Action TopModel::key(int k) {
  if (view_.help) {  // any key closes the help screen (q still quits)
    view_.help = false;
    return k == 'q' || k == kKeyCtrlC ? Action::kQuit : Action::kRedraw;
  }
  switch (k) {
    case 'q':
    case 'Q':
    case kKeyCtrlC:
      return Action::kQuit;
    case ' ':
      toggle_pause();
      break;
    case 's':
      cycle_sort();
      break;
    case 'S':
      reverse_sort();
      break;
    case 'r':
    case 'R':
      reset();
      break;
    case 'j':
    case kKeyDown:
      if (view_.drill.empty()) move_selection(1);
      break;
    case 'k':
    case kKeyUp:
      if (view_.drill.empty()) move_selection(-1);
      break;
    case kKeyEnter:
      drill_in();
      break;
    case kKeyEsc:
    case kKeyBackspace:
      drill_out();
      break;
    case '?':
    case 'h':
      toggle_help();
      break;
    default:
      return Action::kNone;
  }
  return Action::kRedraw;
}

}  // namespace mayhem::cli
