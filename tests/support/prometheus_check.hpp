// A small checker of the Prometheus text exposition format, for tests: parses every sample line,
// knows each family's TYPE, and checks each histogram series (same labels but `le`): `le` bounds
// increasing, cumulative counts non-decreasing, a `+Inf` bucket equal to `_count`, and a `_sum`.
// Use: `auto problems = check_prometheus(text); REQUIRE(problems.empty());`
#pragma once

#include <cmath>
#include <cstdlib>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace mayhem::test {

struct PromSample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

struct PromParse {
  std::vector<PromSample> samples;
  std::map<std::string, std::string> types;  // family -> counter|gauge|histogram|...
  std::vector<std::string> problems;

  double value(const std::string& name, const std::map<std::string, std::string>& labels) const {
    for (const auto& s : samples)
      if (s.name == name && s.labels == labels) return s.value;
    return std::nan("");
  }
};

inline PromParse parse_prometheus(const std::string& text) {
  PromParse out;
  std::istringstream in(text);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    const std::string where = "line " + std::to_string(n) + ": ";
    if (line.empty()) continue;
    if (line.rfind("# TYPE ", 0) == 0) {
      std::istringstream t(line.substr(7));
      std::string fam, type;
      t >> fam >> type;
      if (out.types.count(fam)) out.problems.push_back(where + "second TYPE for " + fam);
      out.types[fam] = type;
      continue;
    }
    if (line[0] == '#') continue;
    PromSample s;
    std::size_t i = 0;
    while (i < line.size() &&
           (std::isalnum(static_cast<unsigned char>(line[i])) || line[i] == '_' || line[i] == ':'))
      ++i;
    s.name = line.substr(0, i);
    if (s.name.empty() || std::isdigit(static_cast<unsigned char>(s.name[0]))) {
      out.problems.push_back(where + "bad metric name");
      continue;
    }
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (i < line.size() && line[i] != '}') {
        const auto eq = line.find('=', i);
        if (eq == std::string::npos || eq + 1 >= line.size() || line[eq + 1] != '"') {
          out.problems.push_back(where + "bad label");
          break;
        }
        const std::string key = line.substr(i, eq - i);
        const auto close = line.find('"', eq + 2);
        if (close == std::string::npos) {
          out.problems.push_back(where + "unterminated label value");
          break;
        }
        s.labels[key] = line.substr(eq + 2, close - eq - 2);
        i = close + 1;
        if (i < line.size() && line[i] == ',') ++i;
      }
      ++i;  // '}'
    }
    if (i >= line.size() || line[i] != ' ') {
      out.problems.push_back(where + "expected a space before the value");
      continue;
    }
    const std::string v = line.substr(i + 1);
    char* end = nullptr;
    s.value = std::strtod(v.c_str(), &end);
    if (v.empty() || *end != '\0') out.problems.push_back(where + "bad value '" + v + "'");
    out.samples.push_back(std::move(s));
  }
  return out;
}

inline std::string family_of(const std::string& name,
                             const std::map<std::string, std::string>& types) {
  for (const char* suffix : {"_bucket", "_sum", "_count"}) {
    const std::string suf = suffix;
    if (name.size() > suf.size() && name.compare(name.size() - suf.size(), suf.size(), suf) == 0) {
      const std::string base = name.substr(0, name.size() - suf.size());
      auto it = types.find(base);
      if (it != types.end() && it->second == "histogram") return base;
    }
  }
  return name;
}

// Every problem found (empty: the text is fine); `histograms` counts the series checked.
inline std::vector<std::string> check_prometheus(const std::string& text,
                                                 int* histograms = nullptr) {
  PromParse p = parse_prometheus(text);
  std::vector<std::string> problems = p.problems;
  struct Series {
    std::vector<std::pair<double, double>> buckets;  // (le, cumulative count), in text order
    bool has_inf = false, has_sum = false, has_count = false;
    double inf = 0, count = 0;
  };
  std::map<std::string, Series> series;  // family + labels without le
  for (const auto& s : p.samples) {
    const std::string fam = family_of(s.name, p.types);
    if (!p.types.count(fam)) problems.push_back(s.name + ": no TYPE");
    if (p.types[fam] == "counter" && s.value < 0) problems.push_back(s.name + ": negative counter");
    if (p.types[fam] != "histogram") continue;
    auto labels = s.labels;
    labels.erase("le");
    std::string key = fam + "{";
    for (const auto& [k, v] : labels) key += k + "=" + v + ",";
    key += "}";
    Series& h = series[key];
    if (s.name == fam + "_bucket") {
      auto le = s.labels.find("le");
      if (le == s.labels.end()) {
        problems.push_back(key + ": bucket without le");
      } else if (le->second == "+Inf") {
        h.has_inf = true;
        h.inf = s.value;
      } else {
        h.buckets.emplace_back(std::strtod(le->second.c_str(), nullptr), s.value);
      }
    } else if (s.name == fam + "_sum") {
      h.has_sum = true;
    } else if (s.name == fam + "_count") {
      h.has_count = true;
      h.count = s.value;
    }
  }
  for (const auto& [key, h] : series) {
    if (!h.has_inf) problems.push_back(key + ": no +Inf bucket");
    if (!h.has_sum || !h.has_count) problems.push_back(key + ": no _sum or _count");
    if (h.has_inf && h.has_count && h.inf != h.count)
      problems.push_back(key + ": +Inf bucket != _count");
    for (std::size_t i = 1; i < h.buckets.size(); ++i) {
      if (!(h.buckets[i].first > h.buckets[i - 1].first))
        problems.push_back(key + ": le bounds not increasing");
      if (h.buckets[i].second < h.buckets[i - 1].second)
        problems.push_back(key + ": bucket counts decrease");
    }
    if (!h.buckets.empty() && h.has_inf && h.buckets.back().second > h.inf)
      problems.push_back(key + ": a bucket exceeds +Inf");
  }
  if (histograms) *histograms = static_cast<int>(series.size());
  return problems;
}

}  // namespace mayhem::test
