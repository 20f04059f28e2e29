#!/usr/bin/env python3
"""`mayhem top` end to end, under tmux: start a service with --stats-addr on a free port, run
`mayhem top --addr ...` in a detached tmux session, and check through capture-pane that the stage
rows show up, that the numbers move between two captures, that the keys (s, space, r, q) work, and
that the view says so when the service goes away. Every wait polls a condition with a deadline.
Usage: top_tmux.py PATH/TO/mayhem [--show]   (--show prints the captured screens)"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

STAGES = ["publish", "consume", "save", "saved", "restart", "restarted", "cleanup", "settle",
          "lease"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, check, timeout=30.0, step=0.05):
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(step)


def main():
    binary = sys.argv[1]
    show = "--show" in sys.argv
    tmp = tempfile.mkdtemp(prefix="mayhem-top-")
    sock = "mayhem-top-test-%d" % os.getpid()
    tmux = ["tmux", "-L", sock, "-f", "/dev/null"]
    service = None
    try:
        for _ in range(5):  # the port may be taken between free_port() and the bind: try another
            port = free_port()
            service = subprocess.Popen(
                [binary, "--rate", "400", "--latency-scale", "0.02", "--log-level", "warning",
                 "--log-file", os.path.join(tmp, "mayhem.log"), "--stats-addr",
                 "127.0.0.1:%d" % port],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

            def stats():
                if service.poll() is not None:
                    return "exited"
                try:
                    with urllib.request.urlopen("http://127.0.0.1:%d/stats" % port, timeout=1) as r:
                        return json.load(r)
                except OSError:
                    return None

            first = wait_for("the stats endpoint", stats)
            if first != "exited":
                break
        assert first != "exited", "the service did not start"

        subprocess.run(tmux + ["new-session", "-d", "-s", "top", "-x", "150", "-y", "30",
                               "%s top --addr 127.0.0.1:%d" % (binary, port)], check=True)

        def capture():
            r = subprocess.run(tmux + ["capture-pane", "-p", "-t", "top"], capture_output=True,
                               text=True)
            return r.stdout if r.returncode == 0 else ""

        def screen_with(*needles):
            return lambda: (lambda s: s if all(n in s for n in needles) else None)(capture())

        def acks(screen):
            m = re.search(r"acks (\d+)", screen)
            return int(m.group(1)) if m else -1

        def all_rows(screen):  # every stage has its row (the first fetch may come before any)
            return all(re.search(r"^%s\s+\d+/" % st, screen, re.M) for st in STAGES)

        one = wait_for("the stage table",
                       lambda: (lambda s: s if "msgs/s in" in s and all_rows(s) else None)(
                           capture()))
        for stage in STAGES:
            assert re.search(r"^%s\s+\d+/" % stage, one, re.M), "no row for " + stage + "\n" + one
        two = wait_for("numbers that change",
                       lambda: (lambda s: s if acks(s) > acks(one) and "msgs/s in" in s else None)(
                           capture()))
        assert acks(two) > acks(one)
        assert re.search(r"msgs/s in [1-9]", two), two  # a rate once two samples are in
        if show:
            print(two)

        subprocess.run(tmux + ["send-keys", "-t", "top", "s"], check=True)
        wait_for("sort by calls/s", screen_with("sort: calls/s"))
        subprocess.run(tmux + ["send-keys", "-t", "top", "Space"], check=True)
        wait_for("pause", screen_with("[PAUSED]"))
        subprocess.run(tmux + ["send-keys", "-t", "top", "Space"], check=True)
        wait_for("resume", screen_with("[running]"))
        subprocess.run(tmux + ["send-keys", "-t", "top", "r"], check=True)
        wait_for("reset", screen_with("since reset"))

        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=15) == 0
        gone = wait_for("the service going away", screen_with("went away"))
        if show:
            print(gone)

        subprocess.run(tmux + ["send-keys", "-t", "top", "q"], check=True)
        wait_for("top to quit", lambda: subprocess.run(
            tmux + ["has-session", "-t", "top"], capture_output=True).returncode != 0)
        print("ok: rows for %d stages, acks %d -> %d, keys s/space/r/q, service-gone message"
              % (len(STAGES), acks(one), acks(two)))
    finally:
        subprocess.run(tmux + ["kill-server"], capture_output=True)
        if service is not None and service.poll() is None:
            service.kill()
            service.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
