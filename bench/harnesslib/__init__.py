"""The benchmark harness behind bench/harness.py (the entry point), one module per concern:

    common.py     paths, parameters, targets, tolerances, the latency model, log()
    tables.py     formatting, Agg (median/min/max over ok runs), markdown tables, verdicts
    runner.py     Runner: one subprocess per run, timeouts, the summary JSON; the log-file check
    core.py       Harness: binary snapshots, the peer check, command lines, the scenario order
    s1_flat_out.py ... s6_profiler_cost.py   one module per scenario (bench/README.md)
    plots.py      the .dat files and gnuplot PNGs
    report.py     results.md and results.json
    cli.py        parse_args() and main()
"""
