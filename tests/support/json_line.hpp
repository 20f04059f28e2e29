// The summary a child `mayhem` printed: the last non-empty line of its stdout, parsed as JSON (a
// failed parse or an empty stdout fails the test, showing both streams).
// Use: `const nlohmann::json s = test::last_json_line(child.wait(30s));`
#pragma once

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <sstream>
#include <string>

#include "support/subprocess.hpp"

namespace mayhem::test {

inline nlohmann::json last_json_line(const Result& r) {
  std::istringstream in(r.out);
  std::string line, last;
  while (std::getline(in, line))
    if (!line.empty()) last = line;
  INFO("stdout: " << r.out << "\nstderr: " << r.err.substr(0, 4000));
  REQUIRE(!last.empty());
  return nlohmann::json::parse(last);
}

}  // namespace mayhem::test
