#include "mayhem/observe/build_info.hpp"

#include <libpq-fe.h>
#include <nats/nats.h>
#include <oneapi/tbb/version.h>
#include <spdlog/version.h>
#include <sqlite3.h>

#include <string>

namespace mayhem {

namespace {
#ifdef __clang__
constexpr const char* kBuildCompiler = __VERSION__;  // "Debian Clang 14.0.6"
#else
constexpr const char* kBuildCompiler = "g++ " __VERSION__;  // __VERSION__ is "12.2.0"
#endif

// PQlibVersion(): major * 10000 + minor (10 and later), e.g. 150010 -> "15.10".
std::string build_pq_version() {
  const int v = PQlibVersion();
  if (v >= 100000) return std::to_string(v / 10000) + "." + std::to_string(v % 10000);
  return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." +
         std::to_string(v % 100);
}
}  // namespace

std::vector<std::pair<std::string, std::string>> version_facts() {
  return {
      {"mayhem", build_version()},
      {"revision", build_revision()},
      {"compiler", kBuildCompiler},
      {"oneTBB", TBB_runtime_version()},
      {"spdlog", std::to_string(SPDLOG_VER_MAJOR) + "." + std::to_string(SPDLOG_VER_MINOR) + "." +
                     std::to_string(SPDLOG_VER_PATCH)},
      {"nats.c", nats_GetVersion()},
      {"SQLite", sqlite3_libversion()},
      {"libpq", build_pq_version()},
  };
}

std::string version_text() {
  std::string out;
  for (const auto& [name, value] : version_facts()) out += name + ": " + value + "\n";
  return out;
}

}  // namespace mayhem
