#include "mayhem/cli/run.hpp"

#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <thread>
#include <utility>

#include "mayhem/cli/config.hpp"
#include "mayhem/cli/number_flag.hpp"
#include "mayhem/cli/profile.hpp"
#include "mayhem/cli/publish.hpp"
#include "mayhem/cli/top.hpp"
#include "mayhem/faults.hpp"
#include "mayhem/logging.hpp"
#include "mayhem/observe/build_info.hpp"
#include "mayhem/observe/process_stats.hpp"
#include "mayhem/observe/profiler.hpp"
#include "mayhem/service.hpp"
#include "mayhem/shutdown.hpp"

namespace mayhem::cli {

namespace {

// A flag with a few named values: `--NAME value` sets `field` to that value's enum; anything else
// is refused. The first is the default --help shows (the field's initial value).
template <typename E>
CLI::Option* add_choices(CLI::App& app, const std::string& name, E& field,
                         std::vector<std::pair<std::string, E>> choices, const std::string& help) {
  std::vector<std::string> names;
  std::string type;
  for (const auto& c : choices) {
    names.push_back(c.first);
    type += (type.empty() ? "" : ",") + c.first;
  }
  const std::string dflt = choices.front().first;
  return app
      .add_option_function<std::string>(
          name,
          [&field, choices](const std::string& v) {
            for (const auto& c : choices)
              if (c.first == v) field = c.second;
          },
          help)
      ->check(CLI::IsMember(names).description(""))
      ->type_name("{" + type + "}")
      ->default_str(dflt);
}
template <typename E>
CLI::Option* add_choice(CLI::App& app, const std::string& name, E& field,
                        std::pair<const char*, E> dflt, std::pair<const char*, E> other,
                        const std::string& help) {
  return add_choices<E>(app, name, field, {{dflt.first, dflt.second}, {other.first, other.second}},
                        help);
}

void add_flags(CLI::App& app, Options& o, std::vector<std::string>& faults) {
  app.option_defaults()->always_capture_default();
  auto* run = "Run contract";
  add_number(app, "--messages", o.messages,
             "Publish N messages, finish when all are settled (0 = run until a signal)")
      ->group(run);
  add_number(app, "--publish-interval", o.publish_interval,
             "Pause uniform(0,1) x this many seconds between messages; 0 = as fast as possible")
      ->group(run);
  add_number(app, "--rate", o.rate,
             "Publish at a fixed rate, msgs/s, open loop (overrides --publish-interval; 0 = off)")
      ->group(run);
  add_number(app, "--seed", o.seed, "Seed for every random choice (0 = pick one; it is logged)")
      ->group(run);
  app.add_flag("--summary-json", o.summary_json,
               "At exit print one JSON object with the run's numbers on stdout")
      ->group(run);

  auto* io = "Simulated I/O";
  add_number(app, "--latency-scale", o.latency_scale,
             "Each I/O call (save, restart, cleanup) takes uniform(0,1) x this many seconds")
      ->group(io);
  add_number(app, "--fail-rate", o.fail_rate,
             "Probability that a save or a restart attempt fails, in [0,1]")
      ->group(io);
  add_number(app, "--restart-retries", o.restart_retries, "Retries after a failed restart")
      ->group(io);
  add_number(app, "--restart-backoff", o.restart_backoff,
             "Backoff before retry k: this x 2^(k-1) x --latency-scale seconds")
      ->group(io);
  add_choice(
      app, "--io-model", o.io_model, {"async", IoModel::kAsync}, {"blocking", IoModel::kBlocking},
      "async: I/O completed by a timer thread (async_node); blocking: a pool of --io-threads "
      "that really block")
      ->group(io);
  add_number(app, "--io-threads", o.io_threads, "Threads of the blocking I/O pool")->group(io);
  app.add_option("--store", o.store,
                 "Where save writes: memory (the reference's simulated save), sqlite:PATH (a "
                 "real SQLite database: WAL, one writer, group commit, one row per message_id) or "
                 "postgres://USER:PASSWORD@HOST:PORT/DB (alias postgresql://; a shared "
                 "PostgreSQL database: one connection, group commit, one row per message_id). "
                 "With a database, a message is acked only once its row is committed")
      ->type_name("memory|sqlite:PATH|postgres://...")
      ->group(io);
  add_number(app, "--store-retry-for", o.store_retry_for,
             "Seconds a database's transient failures (lost connection, server restarting, "
             "lock timeout, deadlock) are retried, with backoff and reconnects, before those "
             "saves fail and their messages are nacked")
      ->group(io);
  add_number(app, "--store-group-commit", o.store_group_commit,
             "1: a database writes everything queued in one transaction (group commit); 0: "
             "one transaction per save (slow: to measure group commit against)")
      ->group(io);

  auto* lease = "Leases";
  add_number(app, "--extend-interval", o.extend_interval,
             "Seconds between deadline extensions of an in-flight message")
      ->group(lease);
  add_number(app, "--ack-deadline", o.ack_deadline, "Seconds each extension adds to the deadline")
      ->group(lease);

  auto* flow = "Flow control and threads";
  add_number(app, "--max-in-flight", o.max_in_flight,
             "Most messages being worked on at once; consume waits beyond it")
      ->group(flow);
  add_number(app, "--queue-capacity", o.queue_capacity,
             "Most messages waiting in the in-process pub/sub; publish waits beyond it")
      ->group(flow);
  add_number(app, "--batch-size", o.batch_size,
             "Messages per hand-off between graph nodes (1..128)")
      ->group(flow);
  add_number(app, "--threads", o.threads, "TBB worker threads (default: one per core)")
      ->group(flow);
  add_number(app, "--save-concurrency", o.save_concurrency,
             "TBB tasks running the save stage at once (0 = unlimited)")
      ->group(flow);
  add_number(app, "--restart-concurrency", o.restart_concurrency,
             "TBB tasks running the restart stage at once (0 = unlimited)")
      ->group(flow);

  auto* logs = "Logging and shutdown";
  add_log_level(app, o.log_level)->group(logs);
  app.add_option("--log-file", o.log_file, "Write logs to this file instead of stderr")
      ->type_name("FILE")
      ->group(logs);
  add_choice(
      app, "--log-mode", o.log_mode, {"sync", LogMode::kSync}, {"async", LogMode::kAsync},
      "sync: log on the calling thread; async: spdlog's async logger (a queue and one writer "
      "thread)")
      ->group(logs);
  add_number(app, "--log-queue", o.log_queue, "Async logger queue size, in lines")->group(logs);
  add_choice(
      app, "--log-overflow", o.log_overflow, {"block", LogOverflow::kBlock},
      {"drop-oldest", LogOverflow::kDropOldest},
      "Async logger, queue full: block (callers wait, no line is lost) or drop-oldest (callers "
      "never wait; dropped lines are counted in the summary's log_dropped)")
      ->group(logs);
  add_choices<LogFormat>(
      app, "--log-format", o.log_format,
      {{"reference", LogFormat::kReference}, {"iso", LogFormat::kIso}, {"json", LogFormat::kJson}},
      "reference: the reference's line (HH:MM:SS,mmm LEVEL: text); iso: ISO 8601 time with "
      "date, microseconds and zone; json: one object a line (ts, level, msg, and stage, "
      "message_id, instance_name for a message's lines)")
      ->group(logs);
  add_number(app, "--log-buffer", o.log_buffer,
             "With --log-file: bytes of each logging thread's block; one writer thread merges "
             "the blocks into the file in timestamp order. 0 = one shared buffer locked per line "
             "(slower with several threads). The file is appended to; SIGUSR1 reopens it")
      ->group(logs);
  add_number(app, "--shutdown-timeout", o.shutdown_timeout, "Seconds a graceful shutdown may take")
      ->group(logs);
  auto* prof = "Profiling (all off by default: then no observer is installed)";
  app.add_flag("--profile", o.profile,
               "At exit print a cProfile-style table (stages, zones, queue and I/O waits) and "
               "line_profiler-style zone timings (stdout; stderr with --summary-json)")
      ->group(prof);
  app.add_option("--profile-sort", o.profile_sort, "Order of the --profile table")
      ->check(CLI::IsMember({"tottime", "cumtime", "ncalls", "name"}).description(""))
      ->type_name("{tottime,cumtime,ncalls,name}")
      ->group(prof);
  app.add_option("--profile-out", o.profile_out,
                 "Write the profile in Callgrind format (kcachegrind, callgrind_annotate)")
      ->type_name("FILE")
      ->group(prof);
  app.add_option("--trace-out", o.trace_out,
                 "Write a Chrome trace-event JSON timeline (open it in ui.perfetto.dev)")
      ->type_name("FILE")
      ->group(prof);
  add_number(app, "--trace-sample", o.trace_sample,
             "Fraction of messages whose stages and waits are traced, in (0, 1] (rounded to "
             "a multiple of 1/1024)")
      ->group(prof);
  add_number(app, "--slow-task-ms", o.slow_task_ms,
             "Warn when a stage body runs longer than this (and while one is still stuck); "
             "0 = off")
      ->group(prof);
  app.add_option("--inject", faults,
                 "Fault injection, repeatable: STAGE:FAULT:PROBABILITY with STAGE "
                 "save|restart|cleanup|timer and FAULT error (an expected I/O failure) | crash (an "
                 "unexpected exception) | hang (the stage never returns); several in one value: "
                 "comma-separated")
      ->type_name("STAGE:FAULT:PROBABILITY")
      ->default_str("")
      ->delimiter(',')
      ->group("Fault injection");

  auto* broker = "Broker source (NATS JetStream, see docs/NATS.md)";
  app.add_option("--source", o.source,
                 "nats://HOST:PORT, or a comma-separated list of a cluster's servers: consume "
                 "from JetStream (empty: the in-process pub/sub); --messages N then stops after "
                 "N settled, 0 runs until a signal")
      ->type_name("URL[,URL...]")
      ->group(broker);
  app.add_option("--stream", o.stream, "JetStream stream (created when missing)")
      ->type_name("NAME")
      ->group(broker);
  app.add_option("--subject", o.subject, "Subject the stream holds")
      ->type_name("SUBJECT")
      ->group(broker);
  add_number(app, "--stream-replicas", o.stream_replicas,
             "Copies of the stream when Mayhem creates it (1..5, at most the servers of the "
             "cluster; the consumer follows the stream); an existing stream is used as it is")
      ->group(broker);
  add_number(app, "--nats-wait", o.nats_wait,
             "Seconds start-up keeps retrying stream and consumer look-ups that time out or "
             "find no leader (a cluster electing one) before it gives up (exit 2)")
      ->group(broker);
  app.add_option("--durable", o.durable,
                 "Durable pull consumer (created when missing; every process binds to it and "
                 "they share the work)")
      ->type_name("NAME")
      ->group(broker);
  add_choice(app, "--on-failure", o.on_failure, {"ack", OnFailure::kAck},
             {"nack", OnFailure::kNack},
             "A restart that failed every retry: ack (log and count it, as the reference does) or "
             "nack (the broker redelivers it)")
      ->group(broker);

  auto* watch = "Watching (mayhem top --addr HOST:PORT attaches to --stats-addr)";
  app.add_option(
         "--stats-addr", o.stats_addr,
         "Serve read-only /metrics (Prometheus) and /stats (JSON) on HOST:PORT (off unless "
         "given; a host other than loopback is reachable from other machines, unauthenticated)")
      ->type_name("HOST:PORT")
      ->group(watch);
  app.add_flag(
         "--live", o.live,
         "Show the live per-stage view (as `mayhem top`) in this terminal while running; logs "
         "go to --log-file (default mayhem.log)")
      ->group(watch);
}

}  // namespace

std::optional<int> parse_args(int argc, const char* const* argv, Options& opts,
                              std::vector<FaultSpec>& faults, std::string& message,
                              std::optional<PublishOptions>* publish) {
  CLI::App app{
      "Mayhem: a mock chaos monkey. Consumes 'restart this host' messages; saves and restarts each "
      "concurrently on a oneTBB flow graph, extends its ack deadline from one timer thread, then "
      "acks. SIGINT/SIGTERM/SIGHUP shut it down gracefully (outstanding messages are nacked).",
      "mayhem"};
  std::vector<std::string> fault_texts;
  add_flags(app, opts, fault_texts);
  app.set_version_flag("--version", version_text,
                       "Print the version, git revision, compiler and library versions, and exit");
  bool config_example_flag = false;
  app.add_flag("--config-example", config_example_flag,
               "Print a config file with every option commented out at its default, and exit")
      ->configurable(false);
  add_config_sources(app, argc, argv);
  PublishOptions pub_opts;
  CLI::App* pub = add_publish_command(app, pub_opts);
  // `publish` takes flags only: its --rate, --messages... are not the service's.
  pub->preparse_callback([&app](std::size_t) { ignore_config_sources(app); });
  pub->footer("Flags only: the service's MAYHEM_* variables and --config file do not apply here.");
  // `top` is dispatched by main() before this parser runs (it has flags of its own): here it is
  // listed in --help, and refused after service flags.
  CLI::App* top = app.add_subcommand(
      "top", "Live per-stage view of a service run with --stats-addr (mayhem top --help)");
  top->prefix_command();
  top->set_help_flag();
  CLI::App* profile = app.add_subcommand(
      "profile",
      "Capture a profile (table, Callgrind file or Perfetto trace) of a service run with "
      "--stats-addr, for N seconds (mayhem profile --help)");
  profile->prefix_command();
  profile->set_help_flag();
  app.footer(
      "Configuration: every option above (but --help, --version, --config-example) can also come "
      "from the "
      "environment, MAYHEM_ and the flag's name in capitals with '-' as '_' (--latency-scale: "
      "MAYHEM_LATENCY_SCALE, --inject: comma-separated; an empty variable counts as unset), or "
      "from a TOML file, --config FILE or MAYHEM_CONFIG=FILE: one `name = value` line per "
      "option, the flag's name without its leading -- (latency-scale = 0.1, io-model = "
      "\"blocking\", summary-json = true). A flag beats the environment, which beats the file, "
      "which beats the default. Example with every option: deploy/mayhem.toml (or mayhem "
      "--config-example). `mayhem publish`, `mayhem top` and `mayhem profile` take flags only.");
  const auto fail = [&message](const std::string& what, const char* prefix = "mayhem: error: ") {
    message = prefix + what;
    std::replace(message.begin(), message.end(), '\n', ' ');  // always one line
    return 2;
  };
  // `--flag=` with nothing after the '=': CLI11 would take the next argument as the value.
  bool in_publish = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    in_publish = in_publish || arg == "publish";
    if (arg.size() > 3 && arg.rfind("--", 0) == 0 && arg.back() == '=')
      return fail(arg.substr(0, arg.size() - 1) + ": needs a value (got an empty one after '=')",
                  in_publish ? "mayhem publish: error: " : "mayhem: error: ");
  }
  // An error in `mayhem publish`'s flags names the subcommand.
  const auto prefix_for = [](const CLI::App* sub) {
    return sub->parsed() ? "mayhem publish: error: " : "mayhem: error: ";
  };
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    message = app.help();
    return 0;
  } catch (const CLI::CallForAllHelp&) {
    message = app.help("", CLI::AppFormatMode::All);
    return 0;
  } catch (const CLI::CallForVersion& e) {
    message = e.what();
    return 0;
  } catch (const CLI::ParseError& e) {
    return fail(explain_parse_error(app, argc, argv, e) + " (see --help)", prefix_for(pub));
  } catch (const std::exception& e) {  // a conversion CLI11 did not wrap: still bad input
    return fail(std::string(e.what()) + " (see --help)", prefix_for(pub));
  }
  if (top->parsed())
    return fail("top: give it first, with its own flags only: mayhem top --addr HOST:PORT");
  if (profile->parsed())
    return fail("profile: give it first, with its own flags only: mayhem profile --addr HOST:PORT");
  if (config_example_flag) {
    message = config_example(app);
    return 0;
  }
  if (pub->parsed()) {
    if (auto err = validate(pub_opts)) return fail(*err, "mayhem publish: error: ");
    if (publish) *publish = pub_opts;
    return std::nullopt;
  }
  // Checks made after the parse: the line says where a value came from, as the parser's do.
  if (auto err = validate(opts)) return fail(with_source(app, argc, argv, *err));
  for (const auto& text : fault_texts) {
    std::string err;
    auto spec = parse_fault(text, err);
    if (!spec) return fail(with_source(app, argc, argv, err));
    faults.push_back(*spec);
  }
  return std::nullopt;
}

int main(int argc, char** argv) {
  // Before any thread exists (the async logger starts one when it is built): every thread inherits
  // the blocked mask, so SIGINT/SIGTERM/SIGHUP reach only the service's sigwait thread. (The
  // binary blocks them earlier still, before the libraries' initialisers: src/main.cpp. A signal
  // that came meanwhile is pending, and the sigwait thread takes it as soon as it runs.)
  ShutdownManager::block_signals();
  // Subcommands that do not run the service take signals the usual way: `top` with its handlers
  // (SIGINT: the default action), `publish` with the default action (it stops).
  if (argc > 1 && std::string(argv[1]) == "top") {
    ShutdownManager::unblock_signals();
    return top_main(argc - 1, argv + 1);
  }
  // `profile` too: SIGINT ends it (the service sees the connection close and ends the capture).
  if (argc > 1 && std::string(argv[1]) == "profile") {
    ShutdownManager::unblock_signals();
    return profile_main(argc - 1, argv + 1);
  }
  Options opts;
  std::vector<FaultSpec> faults;
  std::string message;
  std::optional<PublishOptions> publish_cmd;
  if (auto rc = parse_args(argc, argv, opts, faults, message, &publish_cmd)) {
    (*rc == 0 ? std::cout : std::cerr) << message << (*rc == 0 ? "" : "\n") << std::flush;
    return *rc;
  }
  if (publish_cmd) {
    ShutdownManager::unblock_signals();
    return publish(*publish_cmd);
  }
  std::unique_ptr<Profiler> profiler;  // outlives the service (the lease thread's last tick)
  if (opts.live) {
    if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO)) {
      std::cerr << "mayhem: error: --live needs a terminal (or use --stats-addr and mayhem top)\n";
      return 2;
    }
    if (opts.log_file.empty()) opts.log_file = "mayhem.log";  // the screen is the view's
  }
  std::unique_ptr<Service> service;
  try {
    auto log = make_logger(opts);
    auto hook = make_fault_hook(faults, log);
    auto timer_hook = make_timer_fault_hook(std::move(faults), log);
    profiler = make_profiler(opts, SteadyClock::instance(), log);
    service = std::make_unique<Service>(
        opts, Service::Deps{log, profiler.get(), true, std::move(hook), std::move(timer_hook)});
  } catch (const std::exception& e) {
    std::cerr << "mayhem: error: " << e.what() << "\n";
    return 2;
  }
  std::atomic<bool> live_stop{false};
  std::thread live;
  int rc;
  try {
    if (opts.live) {
      live = std::thread([&] {
        const FetchFn fetch = [&](const std::string& zones, std::string&) {
          if (!zones.empty()) service->watch_zones(zones);  // the drill-down's stage
          auto s = service->stats_snapshot();
          s.process = read_process_stats();
          return std::optional(std::move(s));
        };
        run_tui("in-process", fetch,
                TuiOptions{1.0, &live_stop, [&] { service->request_stop(SIGINT); }, {}, {}});
      });
    }
    rc = service->run();
  } catch (const std::exception& e) {
    // E.g. a thread that could not be created (std::system_error under a process or memory
    // limit). What was started is in an unknown state: one line, and exit now without waiting
    // for it (no destructors, no summary).
    std::cerr << "mayhem: error: " << e.what() << "\n" << std::flush;
    std::cout << std::flush;
    std::_Exit(1);
  }
  if (live.joinable()) {
    live_stop.store(true);
    live.join();
    std::cerr << "mayhem: logs are in " << opts.log_file << "\n";
  }
  if (profiler) {
    std::string cmd = "mayhem", err;
    for (int i = 1; i < argc; ++i) cmd += std::string(" ") + argv[i];
    if (!write_profile_reports(*profiler, opts, opts.summary_json ? std::cerr : std::cout, cmd,
                               err)) {
      std::cerr << "mayhem: error: " << err << "\n";
      if (rc == 0) rc = 1;
    }
  }
  if (opts.summary_json) std::cout << to_json(service->summary()).dump() << std::endl;
  if (service->abandoned()) std::_Exit(rc);  // a stuck stage still runs: do not wait for it
  return rc;
}

}  // namespace mayhem::cli
