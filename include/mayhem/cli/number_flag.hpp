// Binds a numeric flag to a field with the range from the one table (include/mayhem/flags.hpp):
// the value is checked while the command line is parsed (a bad one is a CLI::ValidationError,
// "--flag: why", before anything starts) and --help shows the range after the type. Also
// `add_log_level`, the one choice flag `mayhem` and `mayhem publish` share.
// Use: `add_number(app, "--rate", opts.rate, "Publish at a fixed rate")->group(run);`.
#pragma once

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>
#include <type_traits>

#include "mayhem/flags.hpp"

namespace mayhem::cli {

template <typename T>
CLI::Option* add_number(CLI::App& app, const std::string& name, T& field, const std::string& help) {
  const FlagRange& r = flag_range(name);
  CLI::Validator in_range(
      [&r](std::string& v) -> std::string { return check_number(r, v).value_or(""); }, "", "");
  std::string dflt;
  if constexpr (std::is_same_v<T, bool>)
    dflt = field ? "1" : "0";
  else
    dflt = fmt::format("{}", field);
  return app
      .add_option_function<std::string>(
          name,
          [&field, &r](const std::string& v) {
            double real = 0;
            std::uint64_t whole = 0;
            check_number(r, v, &real, &whole);  // the validator passed it
            if constexpr (std::is_same_v<T, bool>)
              field = whole != 0;
            else if constexpr (std::is_integral_v<T>)
              field = static_cast<T>(whole);
            else
              field = static_cast<T>(real);
          },
          help)
      ->check(in_range)
      ->type_name(std::string(r.integer ? "INT" : "NUMBER") + " in " + describe(r))
      ->default_str(dflt);
}

// --log-level: spdlog's level names (warn is warning's alias); --help shows the choices once.
inline CLI::Option* add_log_level(CLI::App& app, std::string& field) {
  return app
      .add_option("--log-level", field, "Least severe level logged (warn: the same as warning)")
      ->check(
          CLI::IsMember({"trace", "debug", "info", "warning", "warn", "error", "critical", "off"})
              .description(""))
      ->type_name("{trace,debug,info,warning,error,critical,off}");
}

}  // namespace mayhem::cli
