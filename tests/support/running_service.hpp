// A Service running on its own thread for a test: on scope exit (also when a REQUIRE throws) it is
// stopped (as if by SIGTERM) and joined, so a failing assertion reports instead of aborting the
// test binary with a joinable thread.
// Use: `test::Running running(svc); ... CHECK(running.join(SIGINT) == 0);`
#pragma once

#include <atomic>
#include <csignal>
#include <thread>

#include "mayhem/service.hpp"

namespace mayhem::test {

class Running {
 public:
  explicit Running(Service& svc)
      : svc_(svc), t_([this] {
          rc_ = svc_.run();
          finished_.store(true);
        }) {}
  ~Running() { join(SIGTERM); }
  Running(const Running&) = delete;
  Running& operator=(const Running&) = delete;
  // Stops the service as `signo` would (nothing if run() has returned) and returns run()'s result.
  int join(int signo = SIGTERM) {
    if (t_.joinable()) {
      svc_.request_stop(signo);
      t_.join();
    }
    return rc_;
  }
  // run() has returned (by itself: all messages settled, or a shutdown that already ended).
  bool finished() const { return finished_.load(); }

 private:
  Service& svc_;
  int rc_ = -1;
  std::atomic<bool> finished_{false};
  std::thread t_;
};

}  // namespace mayhem::test
