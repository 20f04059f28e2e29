// Names the calling thread (Linux: at most 15 characters, as `top -H`, `perf report --sort comm`,
// gdb and /proc/PID/task/*/comm show it), so a profile or a stuck process tells which of Mayhem's
// threads is which: mayhem-lease, mayhem-wheel, mayhem-pacer, ... TBB's workers keep the process
// name: a task_scheduler_observer that named them left its 40-byte proxy to LeakSanitizer.
// Use: the first line of a thread's body, `name_this_thread("mayhem-lease");`.
#pragma once

#include <pthread.h>

namespace mayhem {

inline void name_this_thread(const char* name) {
  pthread_setname_np(pthread_self(), name);  // longer than 15 characters: ERANGE, name unchanged
}

}  // namespace mayhem
