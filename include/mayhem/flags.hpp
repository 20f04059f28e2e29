// The range of every numeric flag of `mayhem`, `mayhem publish`, `mayhem top` and `mayhem profile`, in one table: the CLI checks
// each value against it while parsing (include/mayhem/cli/number_flag.hpp), --help shows it,
// `validate(Options)` applies it to options built in code, and the bad-input test runs the binary
// over every entry. A value outside its range, non-finite, empty or not a number is refused with
// one line naming the flag. Adding a numeric flag: one row in src/flags.cpp, then bind it with
// `add_number`.
// Use: `if (auto why = check_number(flag_range("--rate"), "1e28")) ...` (why: "must be ...").
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace mayhem {

struct FlagRange {
  const char* flag;  // "--rate"
  bool integer;      // whole numbers only, in [ilo, ihi]
  double lo, hi;     // real numbers: [lo, hi], or (lo, hi] when lo_open
  bool lo_open;
  std::uint64_t ilo, ihi;
  const char* unit;  // "seconds", "msgs/s", ... or "" (help text)
};

// Every row (run, publish, top and profile flags; a name two commands have shares its row).
std::span<const FlagRange> flag_ranges();
// The row of `flag`; throws std::logic_error for a flag not in the table (a programming error).
const FlagRange& flag_range(std::string_view flag);
// The range as --help shows it: "[0, 1e+09] msgs/s", "(0, 86400] seconds", "[1, 128]".
std::string describe(const FlagRange& r);
// Why `text` is not a valid value of the flag ("must be a number", "must be within ..."), or
// nullopt; with `out` set, the value parsed.
std::optional<std::string> check_number(const FlagRange& r, const std::string& text,
                                        double* real_out = nullptr,
                                        std::uint64_t* int_out = nullptr);
// Why a value already parsed (options built in code) is out of range, or nullopt.
std::optional<std::string> check_value(const FlagRange& r, double value);

}  // namespace mayhem
