#include "mayhem/cli/config.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <set>
#include <sstream>
#include <vector>

namespace mayhem::cli {

namespace {

bool env_set(const std::string& name) {
  const char* v = name.empty() ? nullptr : std::getenv(name.c_str());
  return v != nullptr && *v != '\0';  // CLI11 takes an empty variable as unset too
}

// `--flag VALUE` or `--flag=VALUE` among the arguments.
bool on_command_line(const std::string& flag, int argc, const char* const* argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == flag || a.rfind(flag + "=", 0) == 0) return true;
  }
  return false;
}

bool takes_many(const CLI::Option& opt) {
  return opt.get_expected_max() >= CLI::detail::expected_max_vector_size;
}

// CLI11's TOML reader, stricter: every key must be one of the app's configurable options, at the
// top level, given once, with one value unless the option takes several. A key whose variable is
// set is dropped, so the environment beats the file (CLI11 itself reads the file first and the
// environment only for options still unset: file over environment).
class StrictToml : public CLI::ConfigBase {
 public:
  explicit StrictToml(const CLI::App& app) : app_(app) {}

  std::vector<CLI::ConfigItem> from_config(std::istream& in) const override {
    // At most a mebibyte: /dev/zero or a log file given by mistake is refused, not read forever.
    constexpr std::streamsize kMax = 1 << 20;
    std::string text(kMax + 1, '\0');
    in.read(text.data(), kMax + 1);
    if (in.gcount() > kMax) throw CLI::ConfigError("larger than 1 MiB: not a config file");
    text.resize(static_cast<std::size_t>(in.gcount()));
    std::istringstream lines(text);
    std::vector<CLI::ConfigItem> kept;
    std::set<std::string> seen;
    for (auto& item : CLI::ConfigBase::from_config(lines)) {
      if (!item.parents.empty()) {
        const bool section = item.name == "++" || item.name == "--";  // CLI11's [section] marks
        throw CLI::ConfigError(fmt::format(
            "{}: no [sections] or dotted keys; every key is a flag's name at the top level",
            section ? "[" + CLI::detail::join(item.parents, ".") + "]"
                    : "'" + item.fullname() + "'"));
      }
      const CLI::Option* opt = item.name.empty() || item.name[0] == '-'
                                   ? nullptr
                                   : app_.get_option_no_throw("--" + item.name);
      if (opt == nullptr)
        throw CLI::ConfigError(fmt::format(
            "unknown key '{}' (a key is a flag's name without its leading --)", item.name));
      if (!opt->get_configurable())
        throw CLI::ConfigError(fmt::format("'{}' cannot be set in a config file", item.name));
      if (!seen.insert(item.name).second || (!takes_many(*opt) && item.inputs.size() != 1))
        throw CLI::ConfigError(fmt::format("'{}' takes one value, given once", item.name));
      // The environment beats the file; an empty list is the default (none).
      if (env_set(opt->get_envname()) || item.inputs.empty()) continue;
      kept.push_back(std::move(item));
    }
    return kept;
  }

 private:
  const CLI::App& app_;
};

std::string why_unreadable(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::strerror(errno);
  if (S_ISDIR(st.st_mode)) return "is a directory";
  if (!S_ISREG(st.st_mode)) return "not a regular file";
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::strerror(errno);
  ::close(fd);
  return "not readable";
}

// Where `opt`'s name first appears in `what` as a whole name ("--rate" but not in "--rate-x").
std::size_t name_at(const std::string& what, const std::string& name) {
  for (auto at = what.find(name); at != std::string::npos; at = what.find(name, at + 1)) {
    const std::size_t end = at + name.size();
    if (end == what.size() || !(std::isalnum(static_cast<unsigned char>(what[end])) ||
                                what[end] == '-' || what[end] == '_'))
      return at;
  }
  return std::string::npos;
}

std::string toml_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + '"';
}

// `text` as comment lines of at most 100 characters.
void comment(std::ostringstream& out, const std::string& text) {
  std::istringstream words(text);
  std::string word, line = "#";
  while (words >> word) {
    if (line.size() + 1 + word.size() > 100 && line != "#") {
      out << line << '\n';
      line = "#";
    }
    line += ' ' + word;
  }
  out << line << '\n';
}

}  // namespace

std::string env_name(const std::string& flag) {
  std::string name = "MAYHEM_";
  for (char c : flag.substr(flag.find_first_not_of('-')))
    name += c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return name;
}

void add_config_sources(CLI::App& app, int argc, const char* const* argv) {
  for (CLI::Option* opt : app.get_options()) {
    if (opt->get_lnames().empty()) continue;
    if (opt == app.get_help_ptr() || opt == app.get_version_ptr()) {
      opt->configurable(false);
      continue;
    }
    if (opt->get_configurable()) opt->envname(env_name("--" + opt->get_lnames().front()));
  }
  CLI::Option* cfg = app.set_config("--config", "",
                                    "Read options from this TOML file: `name = value` lines, a "
                                    "flag's name without its leading -- (see below)")
                         ->type_name("FILE")
                         ->envname("MAYHEM_CONFIG");
  app.config_formatter(std::make_shared<StrictToml>(app));
  app.allow_config_extras(CLI::config_extras_mode::error);
  // CLI11 reads the config file before the environment: MAYHEM_CONFIG is taken here, as if given.
  if (env_set("MAYHEM_CONFIG") && !on_command_line("--config", argc, argv))
    cfg->add_result(std::getenv("MAYHEM_CONFIG"));
}

void ignore_config_sources(CLI::App& app) {
  for (CLI::Option* opt : app.get_options()) opt->envname("");
  if (CLI::Option* cfg = app.get_config_ptr()) cfg->clear();
}

std::string explain_parse_error(const CLI::App& app, int argc, const char* const* argv,
                                const CLI::ParseError& e) {
  const std::string what = e.what();
  const CLI::Option* cfg = app.get_config_ptr();
  const bool cfg_flag = on_command_line("--config", argc, argv);
  const std::string file = cfg && !cfg->results().empty() ? cfg->results().front() : "";
  const std::string file_from = cfg_flag ? "" : " (from MAYHEM_CONFIG)";
  if (dynamic_cast<const CLI::FileError*>(&e) && !file.empty())
    return fmt::format("--config{}: cannot read '{}': {}", file_from, file, why_unreadable(file));
  if (dynamic_cast<const CLI::ConfigError*>(&e))
    return fmt::format("config file '{}'{}: {}", file, file_from, what);
  return with_source(app, argc, argv, what);
}

std::string with_source(const CLI::App& app, int argc, const char* const* argv,
                        const std::string& what) {
  const CLI::Option* cfg = app.get_config_ptr();
  const std::string file = cfg && !cfg->results().empty() ? cfg->results().front() : "";
  const std::string file_from =
      on_command_line("--config", argc, argv) ? "" : " (from MAYHEM_CONFIG)";
  // The option the error is about: the one named first (the longest name at that place).
  const CLI::Option* about = nullptr;
  std::size_t where = std::string::npos, len = 0;
  for (const CLI::Option* opt : app.get_options()) {
    if (opt->get_lnames().empty()) continue;
    const std::string name = "--" + opt->get_lnames().front();
    const std::size_t at = name_at(what, name);
    if (at != std::string::npos && (at < where || (at == where && name.size() > len)))
      about = opt, where = at, len = name.size();
  }
  // A value (count() > 0) not from the command line: from its variable if set (it beats the
  // file), else from the file. No value: the default, nothing to add.
  if (about == nullptr || about->get_envname().empty() || about->count() == 0 ||
      on_command_line(what.substr(where, len), argc, argv))
    return what;
  const std::string from = env_set(about->get_envname())
                               ? " (from " + about->get_envname() + ")"
                               : fmt::format(" (from config file '{}'{})", file, file_from);
  if (!env_set(about->get_envname()) && file.empty()) return what;
  return what.substr(0, where + len) + from + what.substr(where + len);
}

std::string config_example(const CLI::App& app) {
  std::ostringstream out;
  comment(out,
          "Mayhem's configuration file (TOML), read with `mayhem --config FILE` (or "
          "MAYHEM_CONFIG=FILE in the environment). One `name = value` line per option, the "
          "name a flag's without its leading --. Every option of the service is listed here, "
          "commented out at its default: uncomment a line to set it. A flag on the command line "
          "beats the environment (MAYHEM_<NAME>), which beats this file, which beats the "
          "default. An unknown key, a [section] or a bad value is an error (exit 2). `mayhem "
          "publish` and `mayhem top` do not read it. Written by `mayhem --config-example`.");
  for (const std::string& group : app.get_groups()) {
    bool header = false;
    for (const CLI::Option* opt : app.get_options()) {
      if (opt->get_group() != group || opt->get_lnames().empty() || !opt->get_configurable())
        continue;
      if (!header) {
        out << "\n# ---- " << group << " ----\n";
        header = true;
      }
      const std::string key = opt->get_lnames().front();
      const bool flag = opt->get_expected_min() == 0;
      const std::string type = opt->get_type_name();
      const bool number = type.rfind("INT ", 0) == 0 || type.rfind("NUMBER ", 0) == 0;
      std::string value = opt->get_default_str();
      if (flag)
        value = value == "true" || value == "1" ? "true" : "false";
      else if (takes_many(*opt))
        value = "[]";
      else if (!number)
        value = toml_string(value);
      out << '\n';
      comment(out, opt->get_description());
      comment(out, (flag ? std::string("true or false") : type) +
                       "; environment: " + opt->get_envname());
      out << "# " << key << " = " << value << '\n';
    }
  }
  return out.str();
}

}  // namespace mayhem::cli
