// What the test fixtures that run servers on loopback share (nats_server.hpp, nats_cluster.hpp,
// postgres_server.hpp): a free port, starting the server as a child that dies with the test,
// "does anything accept on this port", and the end of a server's log for an error message.
// Use: `const int port = test::free_loopback_port(); pid_t pid = test::spawn_server(args, log);
// while (!test::loopback_accepting(port)) ...` (stop it by that PID).
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>

#include <sys/wait.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace mayhem::test {

// A port nothing listens on now (the kernel's pick; another process may take it before the
// caller binds it, so callers retry on a bind failure).
inline int free_loopback_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(fd);
    throw std::runtime_error("no free port");
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

inline bool loopback_accepting(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  const bool ok = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  ::close(fd);
  return ok;
}

// The last `n` bytes of a file (a server's log), empty if it cannot be read.
inline std::string file_tail(const std::string& path, std::size_t n = 600) {
  std::ifstream in(path);
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return all.size() > n ? all.substr(all.size() - n) : all;
}

// Forks and execs `args` (argv[0] a path), stdin from /dev/null, stdout and stderr appended to
// `out` ("" = /dev/null), as `uid`/`gid` when uid is not 0, with no signals blocked; the child
// gets SIGKILL when the test process dies. Returns its PID (the caller stops it by that PID).
inline pid_t spawn_server(std::vector<std::string> args, const std::string& out = "", uid_t uid = 0,
                          gid_t gid = 0) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string out_path = out.empty() ? "/dev/null" : out;
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    // Only async-signal-safe calls between fork and exec.
    if (uid != 0 && (setgroups(0, nullptr) != 0 || setgid(gid) != 0 || setuid(uid) != 0))
      _exit(126);
    // After setuid: a change of credentials clears the parent-death signal.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    const int in = open("/dev/null", O_RDONLY);
    const int fd = open(out_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    dup2(in, 0);
    dup2(fd, 1);
    dup2(fd, 2);
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

// Sends `signo` to the server `pid` and waits for it to exit; after `grace`, SIGKILL.
inline void stop_server(pid_t pid, int signo, std::chrono::seconds grace) {
  if (pid <= 0) return;
  ::kill(pid, signo);
  const auto deadline = std::chrono::steady_clock::now() + grace;
  int st = 0;
  while (waitpid(pid, &st, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

}  // namespace mayhem::test
