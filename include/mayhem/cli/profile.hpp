// `mayhem profile`: the client of a running service's on-demand captures (the stats endpoint's
// GET /profile and GET /trace, mayhem/observe/capture.hpp), as `go tool pprof URL` or the
// reference's `profiling view` are: it asks for N seconds, waits for them, then prints the
// cProfile-style table or writes the Callgrind file or the Perfetto trace. Exit status: 0 done,
// 1 no capture (nothing listens, the service failed or stopped, the file could not be written),
// 2 bad flags (one line, nothing asked), 3 another capture is running (try again later).
// Use: `mayhem profile --addr 127.0.0.1:9100 --seconds 10 --format callgrind --out mayhem.cg`.
#pragma once

namespace mayhem::cli {

// `mayhem profile ...` (argv[0] is "profile"): returns the exit status.
int profile_main(int argc, char** argv);

}  // namespace mayhem::cli
