"""Tests for mayhem_asyncio.py (standard library only).

Run from anywhere:  python3 -m unittest discover -s bench/reference -v
The script is exercised as a subprocess; keep every run short.
"""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "mayhem_asyncio.py")
FAST = ["--publish-interval", "0", "--latency-scale", "0.001"]
SUMMARY_KEYS = {
    "published", "acked", "nacked", "saved", "save_failed", "restarted",
    "restart_failed", "restart_retries", "extensions", "peak_in_flight",
    "wall_s", "msgs_per_s", "latency_ms", "impl", "cpu_s", "max_rss_kb",
}


def run(args, python=None, timeout=30):
    return subprocess.run(
        [python or sys.executable, SCRIPT, *args],
        capture_output=True, text=True, timeout=timeout,
    )


def parse_summary(testcase, stdout):
    lines = stdout.splitlines()
    testcase.assertEqual(len(lines), 1, f"expected exactly one stdout line, got {lines!r}")
    summary = json.loads(lines[0])
    testcase.assertEqual(set(summary), SUMMARY_KEYS)
    testcase.assertEqual(set(summary["latency_ms"]), {"p50", "p99", "max"})
    return summary


def python_with_uvloop():
    for exe in (sys.executable, "/usr/bin/python3"):
        if os.path.exists(exe) and subprocess.run(
            [exe, "-c", "import uvloop"], capture_output=True
        ).returncode == 0:
            return exe
    return None


class MessageTest(unittest.TestCase):
    def test_repr_hostname_percentile(self):
        spec = importlib.util.spec_from_file_location("mayhem_asyncio", SCRIPT)
        mod = importlib.util.module_from_spec(spec)
        dont_write = sys.dont_write_bytecode
        sys.dont_write_bytecode = True  # leave no __pycache__ next to the script
        try:
            spec.loader.exec_module(mod)
        finally:
            sys.dont_write_bytecode = dont_write
        msg = mod.PubSubMessage(instance_name="cattle-abcd", message_id="x")
        self.assertEqual(repr(msg), "PubSubMessage(instance_name='cattle-abcd')")
        self.assertEqual(msg.hostname, "cattle-abcd.example.net")
        self.assertEqual((msg.restarted, msg.saved, msg.acked, msg.extended_cnt),
                         (False, False, False, 0))
        values = list(range(1, 101))
        self.assertEqual(mod.percentile(values, 50), 50)
        self.assertEqual(mod.percentile(values, 99), 99)
        self.assertEqual(mod.percentile([7], 99), 7)
        self.assertEqual(mod.percentile([], 50), 0.0)


class RunTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.log = os.path.join(self.tmp.name, "mayhem.log")

    def tearDown(self):
        self.tmp.cleanup()

    def read_log(self):
        with open(self.log) as f:
            return f.read()

    def test_bounded_run_acks_everything(self):
        proc = run(["--messages", "200", *FAST, "--log-file", self.log, "--summary-json"])
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proc.stderr, "")  # logs went to the file
        s = parse_summary(self, proc.stdout)
        self.assertEqual(s["published"], 200)
        self.assertEqual(s["acked"], 200)
        self.assertEqual(s["nacked"], 0)
        self.assertEqual(s["impl"], "asyncio")
        self.assertEqual(s["saved"] + s["save_failed"], 200)
        self.assertEqual(s["restarted"] + s["restart_failed"], 200)
        self.assertGreaterEqual(s["extensions"], 200)
        self.assertGreaterEqual(s["peak_in_flight"], 1)
        self.assertGreater(s["wall_s"], 0)
        self.assertLessEqual(s["latency_ms"]["p50"], s["latency_ms"]["p99"])
        self.assertLessEqual(s["latency_ms"]["p99"], s["latency_ms"]["max"])
        log = self.read_log()
        self.assertEqual(log.count(" INFO: Pulled PubSubMessage(instance_name='cattle-"), 200)
        self.assertEqual(log.count(" INFO: Done. Acked PubSubMessage("), 200)
        self.assertIn("Successfully shutdown the Mayhem service.", log)

    def test_sigint_mid_run_shuts_down_cleanly(self):
        proc = subprocess.Popen(
            [sys.executable, SCRIPT, "--messages", "0", "--publish-interval", "0.001",
             "--latency-scale", "0.05", "--log-file", self.log, "--summary-json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if os.path.exists(self.log) and "Pulled" in self.read_log():
                    break
                time.sleep(0.02)
            else:
                self.fail("no 'Pulled' line logged within 10 s")
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        self.assertEqual(proc.returncode, 0, err)
        s = parse_summary(self, out)
        self.assertEqual(s["published"], s["acked"] + s["nacked"])
        self.assertTrue(s["nacked"] > 0 or s["acked"] > 0, s)
        log = self.read_log()
        self.assertIn("Received exit signal SIGINT...", log)
        self.assertIn("Nacking outstanding messages", log)
        self.assertIn("Successfully shutdown the Mayhem service.", log)

    def test_restart_retries_are_real(self):
        proc = run(["--messages", "50", *FAST, "--fail-rate", "1", "--restart-retries", "2",
                    "--restart-backoff", "0.01", "--log-file", self.log, "--summary-json"])
        self.assertEqual(proc.returncode, 0, proc.stderr)
        s = parse_summary(self, proc.stdout)
        self.assertEqual(s["acked"], 50)
        self.assertEqual(s["restart_retries"], 100)
        self.assertEqual(s["restart_failed"], 50)
        self.assertEqual(s["restarted"], 0)
        self.assertEqual(s["save_failed"], 50)
        self.assertEqual(s["saved"], 0)
        log = self.read_log()
        self.assertEqual(log.count("ERROR: Retrying for failure to restart: cattle-"), 100)
        self.assertEqual(log.count("ERROR: Handling general error: Could not restart cattle-"), 50)
        self.assertEqual(log.count("ERROR: Handling general error: Could not save PubSubMessage("), 50)

    def test_fixed_rate(self):
        proc = run(["--messages", "100", "--rate", "1000", "--latency-scale", "0.001",
                    "--log-level", "off", "--summary-json"])
        self.assertEqual(proc.returncode, 0, proc.stderr)
        s = parse_summary(self, proc.stdout)
        self.assertEqual(s["acked"], 100)
        # message k is published at k/1000 s: the last one at 99 ms
        self.assertGreaterEqual(s["wall_s"], 0.099)

    def test_log_level_off_is_silent(self):
        proc = run(["--messages", "50", *FAST, "--log-level", "off", "--summary-json"])
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proc.stderr, "")
        self.assertEqual(parse_summary(self, proc.stdout)["acked"], 50)

    def test_bad_flags_exit_2(self):
        for args in (
            ["--bogus"],
            ["--messages", "-1"],
            ["--messages", "ten"],
            ["--fail-rate", "1.5"],
            ["--fail-rate", "-0.1"],
            ["--extend-interval", "0"],
            ["--latency-scale", "-1"],
            ["--restart-retries", "-1"],
            ["--rate", "0"],
            ["--publish-interval", "nan"],
            ["--log-level", "verbose"],
            ["--loop", "trio"],
        ):
            with self.subTest(args=args):
                proc = run(args, timeout=10)
                self.assertEqual(proc.returncode, 2)
                self.assertEqual(proc.stdout, "")
                lines = proc.stderr.splitlines()
                self.assertEqual(len(lines), 1, proc.stderr)
                self.assertIn("error:", lines[0])

    def test_uvloop_run(self):
        python = python_with_uvloop()
        if python is None:
            self.skipTest("no interpreter with uvloop (apt install python3-uvloop)")
        proc = run(["--loop", "uvloop", "--messages", "200", *FAST,
                    "--log-file", self.log, "--summary-json"], python=python)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        s = parse_summary(self, proc.stdout)
        self.assertEqual(s["impl"], "uvloop")
        self.assertEqual(s["published"], 200)
        self.assertEqual(s["acked"], 200)

    def test_uvloop_missing_exit_2(self):
        # `-S` skips site-packages/dist-packages, where uvloop lives.
        if subprocess.run([sys.executable, "-S", "-c", "import uvloop"],
                          capture_output=True).returncode == 0:
            self.skipTest("uvloop importable even without site-packages")
        proc = subprocess.run([sys.executable, "-S", SCRIPT, "--loop", "uvloop", "--messages", "1"],
                              capture_output=True, text=True, timeout=10)
        self.assertEqual(proc.returncode, 2)
        self.assertIn("uvloop", proc.stderr)
        self.assertEqual(len(proc.stderr.splitlines()), 1)


if __name__ == "__main__":
    unittest.main()
