#!/usr/bin/env python3
"""`mayhem top` end to end, under tmux at 80x24: start a service with --stats-addr on a free port,
run `mayhem top --addr ... --record F` in a detached tmux session, and check through capture-pane
that the stage rows fit, that the numbers move between two captures, the sort marker and S, the ?
help, space, r, the drill-down into save's zones (Enter, Esc), that the recording has them; then a
headless --record of ~5 s replayed by --replay --once (the same numbers as recorded) and in tmux
(pause, steps, speed), and what top says when nothing listens. Every wait polls a condition with a
deadline.
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

        # A session that outlives the others: the tmux server exits with its last session, and a
        # new session must not race with that exit.
        subprocess.run(tmux + ["new-session", "-d", "-s", "keep", "-x", "80", "-y", "24",
                               "sleep 600"], check=True)
        rec_live = os.path.join(tmp, "live.jsonl")
        subprocess.run(tmux + ["new-session", "-d", "-s", "top", "-x", "80", "-y", "24",
                               "%s top --addr 127.0.0.1:%d --record %s"
                               % (binary, port, rec_live)], check=True)

        def capture(target="top"):
            r = subprocess.run(tmux + ["capture-pane", "-p", "-t", target], capture_output=True,
                               text=True)
            return r.stdout if r.returncode == 0 else ""

        def keys(*k, target="top"):
            subprocess.run(tmux + ["send-keys", "-t", target] + list(k), check=True)

        def screen_with(*needles, target="top"):
            return lambda: (lambda s: s if all(n in s for n in needles) else None)(
                capture(target))

        def screen_matching(pattern, target="top"):
            return lambda: (lambda s: s if re.search(pattern, s, re.M) else None)(capture(target))

        def acks(screen):
            m = re.search(r"acks (\d+)", screen)
            return int(m.group(1)) if m else -1

        def row_re(stage):  # a stage row: the cursor column, the name, then numbers
            return r"^[> ] %s\s+\d" % stage

        def all_rows(screen):  # every stage has its row (the first fetch may come before any)
            return all(re.search(row_re(st), screen, re.M) for st in STAGES)

        def first_row(screen):
            m = re.search(r"^[> ] (\w+)\s+\d", screen, re.M)
            return m.group(1) if m else None

        one = wait_for("the stage table",
                       lambda: (lambda s: s if "msgs/s in" in s and all_rows(s) else None)(
                           capture()))
        assert all(len(l) <= 80 for l in one.splitlines()), one
        assert "keys: " in one and "cpu " in one and "rss " in one, one
        two = wait_for("numbers that change",
                       lambda: (lambda s: s if acks(s) > acks(one) and "msgs/s in" in s else None)(
                           capture()))
        assert acks(two) > acks(one)
        assert re.search(r"msgs/s in [1-9]", two), two  # a rate once two samples are in
        assert re.search(r"acks \d+ \(\+\d+\)", two), two  # per interval beside the total
        if show:
            print(two)

        # Sort: the marked column, S reverses (pipeline order: lease first), s moves on.
        assert "vSTAGE" in two, two
        keys("S")
        rev = wait_for("reversed pipeline order", screen_with("^STAGE", "(reversed)"))
        assert first_row(rev) == "lease", rev
        keys("S")
        wait_for("pipeline order again",
                 lambda: (lambda s: s if "vSTAGE" in s and first_row(s) == "publish" else None)(
                     capture()))
        keys("s")
        wait_for("sort by calls/s", screen_with("sort: calls/s", "vCALLS/S"))
        keys("S")
        wait_for("calls/s reversed", screen_with("^CALLS/S", "sort: calls/s (reversed)"))
        for _ in range(6):  # round the other sort keys, back to pipeline order
            keys("s")
        wait_for("pipeline order", screen_with("sort: pipeline", "vSTAGE"))

        keys("?")
        wait_for("the help screen", screen_with("KEYS", "esc, backspace"))
        keys("x")
        wait_for("help closed", screen_with("msgs/s in"))
        keys("Space")
        wait_for("pause", screen_with("[PAUSED]"))
        keys("Space")
        wait_for("resume", screen_with("[running]"))
        keys("r")
        wait_for("reset", screen_with("since reset"))

        # Drill-down: select save (publish, consume, save) and see its zones, live.
        keys("j", "j")
        wait_for("save selected", screen_matching(r"^> save\s"))
        keys("Enter")
        # By file and zone text, not line: the lines move whenever those files are edited.
        zones = wait_for("save's zone rows", screen_matching(r"^completion\.cpp:\d+\s+\d"))
        assert "zones of stage save" in zones, zones
        assert re.search(r"^simulated_io\.cpp:\d+\s", zones, re.M), zones
        assert "io_.submit(op, later, delays, nl)" in zones, zones
        assert all(len(l) <= 80 for l in zones.splitlines()), zones
        if show:
            print(zones)
        keys("Escape")
        wait_for("back to the table", screen_matching(row_re("save")))
        keys("BSpace")  # backspace in the table: nothing to leave, still the table
        keys("q")
        wait_for("top to quit", lambda: subprocess.run(
            tmux + ["has-session", "-t", "top"], capture_output=True).returncode != 0)
        live = [json.loads(l) for l in open(rec_live)]
        assert live and all(l["v"] == 1 for l in live)
        assert any(z.get("zones", {}).get("rows") for l in live if "stats" in l
                   for z in l["stats"]["stages"] if z["stage"] == "save"), "no zones recorded"

        # Headless recording for ~5 s (no terminal), stopped by SIGINT; then the replay.
        rec = os.path.join(tmp, "rec.jsonl")
        recorder = subprocess.Popen([binary, "top", "--addr", "127.0.0.1:%d" % port, "--record",
                                     rec, "--interval", "0.5"], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wait_for("a recorded sample",
                 lambda: os.path.exists(rec) and open(rec).read().count("\n") >= 1)
        time.sleep(5)  # the recording's length, not a wait for a condition
        recorder.send_signal(signal.SIGINT)
        _, err = recorder.communicate(timeout=15)
        assert recorder.returncode == 0, err
        samples = [json.loads(l) for l in open(rec)]
        # ~10 fetches at 0.5 s in 5 s; a sanitizer build on a loaded machine fetches more slowly
        # (6 seen under ASan), so the lower bound only says it kept recording.
        assert 3 <= len(samples) <= 13, len(samples)
        assert ("recorded %d samples" % len(samples)) in err, err
        last = samples[-1]["stats"]
        out = subprocess.run([binary, "top", "--replay", rec, "--once", "--width", "80"],
                             capture_output=True, text=True, check=True).stdout
        assert "keys:" not in out, out
        assert "[replay %d/%d 1x paused]" % (len(samples), len(samples)) in out, out
        assert re.search(r"\backed\s+%d\b" % last["counters"]["acked"], out, re.M), out
        assert re.search(r"\bpublished\s+%d\b" % last["counters"]["published"], out, re.M), out
        assert ("acks %d " % last["counters"]["acked"]) in out, out
        up = int(last["uptime_ns"] // 10**9)
        assert ("up %d:%02d:%02d" % (up // 3600, up // 60 % 60, up % 60)) in out, out
        third = samples[2]["stats"]
        out3 = subprocess.run([binary, "top", "--replay", rec, "--once", "--at", "3"],
                              capture_output=True, text=True, check=True).stdout
        assert ("acks %d " % third["counters"]["acked"]) in out3, out3
        if show:
            print(out)

        # The replay in the terminal: pause, step forward and back, speed.
        n = len(samples)
        subprocess.run(tmux + ["new-session", "-d", "-s", "replay", "-x", "80", "-y", "24",
                               "%s top --replay %s" % (binary, rec)], check=True)
        wait_for("the replay", screen_with("[replay 1/%d" % n, target="replay"))
        keys("Space", target="replay")
        paused = wait_for("replay paused", screen_matching(r"\[replay \d+/%d 1x paused\]" % n,
                                                           target="replay"))
        at = int(re.search(r"\[replay (\d+)/", paused).group(1))
        keys("Left", target="replay")
        back = wait_for("a step back", screen_with("[replay %d/%d" % (max(at - 1, 1), n),
                                                   target="replay"))
        assert ("acks %d " % samples[max(at - 1, 1) - 1]["stats"]["counters"]["acked"]) in back
        keys("Right", "Right", target="replay")
        fwd = wait_for("two steps forward", screen_with("[replay %d/%d" % (min(max(at - 1, 1) + 2,
                                                                               n), n),
                                                        target="replay"))
        assert ("acks %d " % samples[min(max(at - 1, 1) + 2, n) - 1]["stats"]["counters"]
                ["acked"]) in fwd, fwd
        keys("+", target="replay")
        wait_for("faster", screen_with(" 2x paused]", target="replay"))
        keys("q", target="replay")

        # The service going away: the state says so, the last numbers stay.
        subprocess.run(tmux + ["new-session", "-d", "-s", "gone", "-x", "80", "-y", "24",
                               "%s top --addr 127.0.0.1:%d" % (binary, port)], check=True)
        wait_for("top before the end", screen_matching(row_re("save"), target="gone"))
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=15) == 0
        gone = wait_for("the service going away", screen_with("[GONE]", "went away",
                                                              target="gone"))
        assert re.search(row_re("save"), gone, re.M), gone
        if show:
            print(gone)
        print("ok: rows for %d stages at 80x24, acks %d -> %d, sort marker and S, ? help, "
              "drill-down into save's zones, %d samples recorded in 5 s and replayed (--once, "
              "steps, speed)" % (len(STAGES), acks(one), acks(two), len(samples)))
    finally:
        subprocess.run(tmux + ["kill-server"], capture_output=True)
        if service is not None and service.poll() is None:
            service.kill()
            service.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
