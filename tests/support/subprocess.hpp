// Runs the `mayhem` binary as a child process for end-to-end tests: captures stdout and stderr into
// temporary files, sends signals, and waits with a deadline (never forever). The child inherits
// this process's environment, with `env` ("NAME=VALUE") added or replacing.
// Use: `Subprocess p({"--messages", "10"}); auto r = p.wait(30s); REQUIRE(r.exit_code == 0);`
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace mayhem::test {

struct Result {
  int exit_code = -1;  // exit status, or 128 + signal when killed
  bool timed_out = false;
  std::string out, err;
};

inline std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class Subprocess {
 public:
  explicit Subprocess(std::vector<std::string> args, std::string binary = MAYHEM_BINARY,
                      std::vector<std::string> env = {}) {
    char out_tmpl[] = "/tmp/mayhem-test-out-XXXXXX";
    char err_tmpl[] = "/tmp/mayhem-test-err-XXXXXX";
    const int out_fd = mkstemp(out_tmpl);
    const int err_fd = mkstemp(err_tmpl);
    out_path_ = out_tmpl;
    err_path_ = err_tmpl;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
    posix_spawn_file_actions_adddup2(&fa, err_fd, 2);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    std::vector<char*> argv;
    argv.push_back(binary.data());
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    // The test process may have signals blocked; the child must start with a clean mask.
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t empty;
    sigemptyset(&empty);
    posix_spawnattr_setsigmask(&attr, &empty);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
    std::vector<char*> envp;
    for (char** e = environ; *e != nullptr; ++e) {
      const std::string entry = *e;
      const std::string name = entry.substr(0, entry.find('=') + 1);
      bool replaced = false;
      for (const auto& x : env) replaced = replaced || x.rfind(name, 0) == 0;
      if (!replaced) envp.push_back(*e);
    }
    for (auto& x : env) envp.push_back(x.data());
    envp.push_back(nullptr);
    const int rc = posix_spawn(&pid_, binary.c_str(), &fa, &attr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    close(out_fd);
    close(err_fd);
    if (rc != 0) throw std::runtime_error("posix_spawn failed for " + binary);
  }
  ~Subprocess() {
    if (!done_) {
      kill(pid_, SIGKILL);
      int st;
      waitpid(pid_, &st, 0);
    }
    std::remove(out_path_.c_str());
    std::remove(err_path_.c_str());
  }
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  pid_t pid() const { return pid_; }
  void signal(int signo) { kill(pid_, signo); }
  std::string err_so_far() const { return read_file(err_path_); }

  // Waits for the child to exit, killing it after `timeout`.
  Result wait(std::chrono::milliseconds timeout) {
    Result r;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    int st = 0;
    for (;;) {
      const pid_t w = waitpid(pid_, &st, WNOHANG);
      if (w == pid_) break;
      if (std::chrono::steady_clock::now() > deadline) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &st, 0);
        r.timed_out = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    done_ = true;
    r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    r.out = read_file(out_path_);
    r.err = read_file(err_path_);
    return r;
  }

 private:
  pid_t pid_ = -1;
  bool done_ = false;
  std::string out_path_, err_path_;
};

// Polls `pred` every `every` (a millisecond unless said: a poll that opens a connection wants
// longer) until it holds or `timeout` passes; returns whether it held.
template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout,
                std::chrono::milliseconds every = std::chrono::milliseconds(1)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(every);
  }
  return true;
}

// The full path of `name` on PATH, or "" when it is not installed (a test that needs a tool skips
// or fails clearly instead of spawning nothing).
inline std::string find_program(const char* name) {
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path ? path : "/usr/local/bin:/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    const std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

// Waits until the file at `path` (e.g. a --log-file) contains `text`; false after `timeout`.
inline bool file_shows(const std::string& path, const std::string& text,
                       std::chrono::milliseconds timeout) {
  return eventually([&] { return read_file(path).find(text) != std::string::npos; }, timeout);
}

}  // namespace mayhem::test
