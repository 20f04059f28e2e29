#include "mayhem/observe/numbers.hpp"

#include <cstring>
#include <nlohmann/json.hpp>
#include <string_view>

namespace mayhem {

void read_metrics(const Metrics& m, Numbers& n) {
  // Bottom-up: the table lists counters in pipeline order, so reading it backwards reads
  // downstream counters first, and a message counted downstream is surely counted upstream too
  // (a live snapshot never shows more acked than consumed).
  for (std::size_t i = kNumberCount; i-- > 0;) {
    const NumberDef& d = kNumberDefs[i];
    if (d.from_metrics) n.*d.member = d.from_metrics(m);
  }
}

namespace {

bool wanted(const NumberDef& d, KindFilter kinds) {
  switch (kinds) {
    case KindFilter::kCounters:
      return d.kind == NumberKind::kCounter;
    case KindFilter::kGauges:
      return d.kind == NumberKind::kGauge;
    default:
      return true;
  }
}

// "a.b" -> ("a", "b"); "a" -> ("", "a").
std::pair<std::string_view, std::string_view> split_path(const char* path) {
  const std::string_view p(path);
  const auto dot = p.find('.');
  if (dot == std::string_view::npos) return {{}, p};
  return {p.substr(0, dot), p.substr(dot + 1)};
}

}  // namespace

void numbers_to_json(const Numbers& n, nlohmann::json& j, KindFilter kinds) {
  if (j.is_null()) j = nlohmann::json::object();
  for_each_number(n, [&](const NumberDef& d, std::uint64_t v) {
    if (!wanted(d, kinds)) return;
    const auto [group, key] = split_path(d.json_path);
    nlohmann::json& obj = group.empty() ? j : j[std::string(group)];
    obj[std::string(key)] = v;
  });
}

const nlohmann::json* find_number(const nlohmann::json& j, const NumberDef& d) {
  const auto [group, key] = split_path(d.json_path);
  const nlohmann::json* obj = &j;
  if (!group.empty()) {
    const auto it = j.find(std::string(group));
    if (it == j.end() || !it->is_object()) return nullptr;
    obj = &*it;
  }
  const auto it = obj->find(std::string(key));
  return it == obj->end() ? nullptr : &*it;
}

void numbers_from_json(const nlohmann::json& j, Numbers& n, KindFilter kinds) {
  for (const NumberDef& d : kNumberDefs) {
    if (!wanted(d, kinds) || !d.reported_in(n.scope)) continue;
    if (const nlohmann::json* v = find_number(j, d)) n.*d.member = v->get<std::uint64_t>();
  }
}

const char* to_string(NumberScope s) {
  switch (s) {
    case NumberScope::kInProcess:
      return "in-process";
    case NumberScope::kBroker:
      return "broker";
    default:
      return "all";
  }
}

}  // namespace mayhem
