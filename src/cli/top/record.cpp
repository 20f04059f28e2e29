// `mayhem top --record` / `--replay`: the recording's lines, and the player.
#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "mayhem/cli/top_record.hpp"
#include "terminal.hpp"

namespace mayhem::cli {

std::string record_line(const std::string& source, std::int64_t t_ms, const StatsSnapshot* s,
                        const std::string& error) {
  // Ordered: "v" first, so `head` shows the version.
  nlohmann::ordered_json j;
  j["v"] = kRecordVersion;
  j["t_ms"] = t_ms;
  j["source"] = source;
  if (s)
    j["stats"] = nlohmann::json(*s);
  else
    j["error"] = error;
  return j.dump() + "\n";
}

std::optional<Recording> parse_recording(std::string_view text, std::string& err) {
  Recording r;
  std::size_t at = 0;
  int number = 0;
  while (at < text.size()) {
    const std::size_t nl = text.find('\n', at);
    const bool complete = nl != std::string_view::npos;
    const std::string_view l = text.substr(at, complete ? nl - at : std::string_view::npos);
    at = complete ? nl + 1 : text.size();
    ++number;
    if (l.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    RecordedSample s;
    std::string why;
    try {
      const auto j = nlohmann::json::parse(l);
      if (!j.is_object() || !j.contains("v")) {
        why = "not a mayhem top recording line (no \"v\")";
      } else if (const int v = j.at("v").get<int>(); v != kRecordVersion) {
        why = fmt::format("recorded in format version {}; this mayhem reads version {}", v,
                          kRecordVersion);
      } else {
        s.t_ms = j.at("t_ms").get<std::int64_t>();
        if (r.source.empty()) r.source = j.value("source", std::string());
        if (j.contains("stats"))
          s.stats = j.at("stats").get<StatsSnapshot>();
        else
          s.error = j.value("error", std::string("fetch failed"));
      }
    } catch (const std::exception& e) {
      why = e.what();
    }
    if (!why.empty()) {
      if (!complete && !r.samples.empty()) {  // the recorder stopped mid-line
        r.warning = fmt::format(
            "line {} is cut short (the recorder stopped while writing it): "
            "left out",
            number);
        break;
      }
      err = fmt::format("line {}: {}", number, why);
      return std::nullopt;
    }
    r.samples.push_back(std::move(s));
  }
  if (r.samples.empty()) {
    err = "no samples in it";
    return std::nullopt;
  }
  return r;
}

void Replay::step(int delta) {
  const long to = std::clamp<long>(static_cast<long>(i_) + delta, 0, static_cast<long>(size()) - 1);
  i_ = static_cast<std::size_t>(to);
}

std::int64_t Replay::gap_ms() const {
  if (at_end()) return 1000;
  const auto gap = r_.samples[i_ + 1].t_ms - r_.samples[i_].t_ms;
  return std::max<std::int64_t>(static_cast<std::int64_t>(static_cast<double>(gap) / speed_), 1);
}

void Replay::show(TopModel& m) const {
  const auto& all = r_.samples;
  const StatsSnapshot* now = nullptr;
  std::size_t k = i_ + 1;
  while (k-- > 0)
    if (all[k].stats) {
      now = &*all[k].stats;
      break;
    }
  const StatsSnapshot* prev = nullptr;
  if (now)
    while (k-- > 0)
      if (all[k].stats) {
        // A service that restarted in between: no rates across it.
        if (all[k].stats->uptime_ns <= now->uptime_ns) prev = &*all[k].stats;
        break;
      }
  m.show(prev, now, all[i_].error);
  const char* state = m.paused() ? "paused" : at_end() ? "end" : "playing";
  m.view().status = fmt::format("replay {}/{} {}x {}", i_ + 1, size(), speed_, state);
}

void run_replay_tui(const Recording& r, const std::string& file, const TuiOptions& opts) {
  (void)file;
  Replay player(r);
  TopModel model(r.source.empty() ? "?" : r.source);
  if (!opts.zones.empty()) {
    model.view().selected = opts.zones;
    model.view().drill = opts.zones;
  }
  model.view().keys =
      "keys: space play/pause  left/right step  +/- speed  enter zones  ? help  q quit";
  install_stop_signals(false);
  using clock = std::chrono::steady_clock;
  // When the sample on screen is due to give way to the next (ticks also come early: a key).
  auto due = clock::time_point::max();
  LoopHooks hooks;
  hooks.tick = [&](TopModel& m) -> clock::duration {
    const auto now = clock::now();
    if (m.paused() || player.at_end()) {
      due = clock::time_point::max();
    } else if (due == clock::time_point::max()) {
      due = now + std::chrono::milliseconds(player.gap_ms());  // playing (again) from here
    } else if (now >= due) {
      player.step(1);
      due = now + std::chrono::milliseconds(player.gap_ms());
    }
    player.show(m);
    return due == clock::time_point::max() ? clock::duration(std::chrono::milliseconds(100))
                                           : std::max<clock::duration>(due - now, {});
  };
  hooks.key = [&](int k, TopModel& m, bool& tick_now) {
    if (m.view().help) return false;
    switch (k) {
      case kKeyLeft:
      case ',':
      case kKeyRight:
      case '.':
        if (!m.paused()) m.toggle_pause();
        player.step(k == kKeyLeft || k == ',' ? -1 : 1);
        break;
      case '+':
      case '=':
        player.faster();
        break;
      case '-':
        player.slower();
        break;
      case 'g':
        player.seek(0);
        break;
      case 'G':
        player.seek(player.size() - 1);
        break;
      case ' ':
        if (player.at_end() && m.paused()) player.seek(0);  // play again from the start
        m.toggle_pause();
        break;
      default:
        return false;
    }
    player.show(m);
    (void)tick_now;
    return true;
  };
  tui_loop(model, hooks, opts.stop, opts.on_quit);
}

}  // namespace mayhem::cli
