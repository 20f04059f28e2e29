// The service's options from the environment and from a TOML file, on top of the command line
// (CLI11's own support: `Option::envname` and `App::set_config` with a stricter TOML reader).
// Every long option of the `mayhem` app (not --help, --version) is also read from MAYHEM_<NAME>
// (`--latency-scale` -> MAYHEM_LATENCY_SCALE; an empty variable counts as unset) and from
// `--config FILE` (or MAYHEM_CONFIG): one `name = value` line per option, the flag's name without
// its leading `--`. A flag beats the environment, which beats the file, which beats the default.
// Values from either go through the same checks as a flag's (the ranges of src/flags.cpp, the
// choices); an unknown key, a [section] or a second value for a one-value option in the file is
// an error, and so is a config file that cannot be read. `mayhem publish` and `mayhem top` take
// flags only (`ignore_config_sources` from publish's pre-parse callback).
// Use: `add_config_sources(app, argc, argv);` after every option is added, then on a
// CLI::ParseError: `message = explain_parse_error(app, argc, argv, e);`.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

namespace mayhem::cli {

// "--latency-scale" -> "MAYHEM_LATENCY_SCALE".
std::string env_name(const std::string& flag);

// Gives every long option of `app` its MAYHEM_ variable and adds --config FILE (MAYHEM_CONFIG)
// read with the strict TOML reader. `argv` must outlive the parse (MAYHEM_CONFIG applies only
// when no --config is on the command line).
void add_config_sources(CLI::App& app, int argc, const char* const* argv);

// Forgets the environment and the config file for this parse (a subcommand with flags only).
void ignore_config_sources(CLI::App& app);

// One line for a parse error of `app`: CLI11's text, with where a value came from when it did not
// come from the command line ("--rate (from MAYHEM_RATE): must be ..."), and the config file's
// errors ("config file 'x': unknown key 'raet' ...", "--config: cannot read 'x': ...").
std::string explain_parse_error(const CLI::App& app, int argc, const char* const* argv,
                                const CLI::ParseError& e);
// The same for a message about an option's value found after the parse ("--inject wants ...",
// "--store must be ..."): "--store (from MAYHEM_STORE) must be ...".
std::string with_source(const CLI::App& app, int argc, const char* const* argv,
                        const std::string& what);

// A TOML file with every option of `app` commented out at its default, with its help and its
// variable (`mayhem --config-example`; deploy/mayhem.toml is its output).
std::string config_example(const CLI::App& app);

}  // namespace mayhem::cli
