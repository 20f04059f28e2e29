// What this binary is: Mayhem's version (the top-level CMakeLists.txt's project VERSION), the git
// revision it was configured from ("unknown" outside a checkout), and the versions of the compiler
// and of the libraries it runs with. `mayhem --version` prints `version_text()`; `/metrics` carries
// `mayhem_build_info{version,revision} 1`. The revision lives in one small generated file
// (build/<preset>/generated/build_revision.cpp), so a new commit recompiles that file alone.
// Use: `std::cout << version_text();` or `fmt::print("{}", build_version());`
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace mayhem {

// The project's version, e.g. "0.15.0".
const char* build_version();
// `git rev-parse --short HEAD` when CMake configured the build, or "unknown" outside a checkout.
const char* build_revision();

// One (name, value) per fact, in the order `--version` prints them: mayhem, revision, compiler,
// oneTBB, spdlog, nats.c, SQLite, libpq. Library versions are the ones loaded at run time where the
// library reports it (oneTBB, nats.c, SQLite, libpq), else the headers' (spdlog).
std::vector<std::pair<std::string, std::string>> version_facts();
// `version_facts()` as text: one "name: value" line per fact.
std::string version_text();

}  // namespace mayhem
