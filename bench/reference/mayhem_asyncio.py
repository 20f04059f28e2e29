#!/usr/bin/env python3
"""Mayhem Mandrill, asyncio reference implementation (benchmark yardstick).

An honest, idiomatic asyncio version of the "Mayhem Mandrill" service from
Lynn Root's "asyncio: We Did It Wrong" series (part 7, "Profiling asyncio
code"), extended with the run contract shared with the C++ ``mayhem`` binary:
a bounded run (``--messages``), a fixed publish rate (``--rate``), tunable
latencies and failure rates, real restart retries and a one-line JSON
summary (``--summary-json``).

Standard library only; ``--loop uvloop`` uses the optional Debian package
``python3-uvloop``.  See README.md next to this file.
"""

import argparse
import asyncio
import json
import logging
import math
import random
import resource
import signal
import string
import sys
import time
import uuid
from dataclasses import dataclass, field

LOG_FORMAT = "%(asctime)s,%(msecs)d %(levelname)s: %(message)s"
LOG_DATEFMT = "%H:%M:%S"
LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "off": None,
}
# In --rate mode, publish at most this many due messages per loop wake-up
# before yielding, so a publisher that fell behind cannot starve consumers.
RATE_MAX_BATCH = 1024


@dataclass
class PubSubMessage:
    instance_name: str
    message_id: str = field(repr=False)
    hostname: str = field(repr=False, init=False)
    restarted: bool = field(repr=False, default=False)
    saved: bool = field(repr=False, default=False)
    acked: bool = field(repr=False, default=False)
    extended_cnt: int = field(repr=False, default=0)
    # Instrumentation only (not in the reference): monotonic publish time,
    # for the end-to-end published -> acked latency.
    published_at: float = field(repr=False, compare=False, default=0.0)

    def __post_init__(self):
        self.hostname = f"{self.instance_name}.example.net"


class RestartFailed(Exception):
    pass


@dataclass
class Config:
    messages: int = 0
    publish_interval: float = 1.0
    rate: float = 0.0
    latency_scale: float = 1.0
    fail_rate: float = 0.25
    restart_retries: int = 3
    restart_backoff: float = 0.1
    extend_interval: float = 2.0


class Stats:
    """Counters for --summary-json.  Counts are per message, except
    restart_retries (retry attempts) and extensions (sum of extended_cnt)."""

    def __init__(self, target):
        self.target = target  # --messages; 0 = run until a signal
        self.published = 0
        self.acked = 0
        self.nacked = 0
        self.saved = 0
        self.save_failed = 0
        self.restarted = 0
        self.restart_failed = 0
        self.restart_retries = 0
        self.extensions = 0
        self.in_flight = 0  # pulled and not yet acked
        self.peak_in_flight = 0
        self.first_publish = None
        self.last_settle = None
        self.latencies = []  # seconds, published -> acked
        self.all_settled = asyncio.Event()

    def on_ack(self, msg):
        now = time.monotonic()
        self.acked += 1
        self.in_flight -= 1
        self.latencies.append(now - msg.published_at)
        self.last_settle = now
        if self.acked + self.nacked == self.target:
            self.all_settled.set()


CONFIG = Config()
STATS = None
SHUTTING_DOWN = False
CAUGHT_EXCEPTION = False


async def publish(queue):
    choices = string.ascii_lowercase + string.digits
    cfg, stats = CONFIG, STATS

    def publish_one():
        msg_id = str(uuid.uuid4())
        host_id = "".join(random.choices(choices, k=4))
        instance_name = f"cattle-{host_id}"
        msg = PubSubMessage(message_id=msg_id, instance_name=instance_name)
        msg.published_at = now = time.monotonic()
        if stats.first_publish is None:
            stats.first_publish = now
        stats.published += 1
        # publish an item (as the reference does: fire-and-forget put)
        asyncio.create_task(queue.put(msg))
        logging.debug(f"Published message {msg}")

    def remaining():
        return cfg.messages == 0 or stats.published < cfg.messages

    if cfg.rate > 0:
        # Open loop at a fixed rate: message k is due at start + k / rate.
        # Publish everything that is due on each wake-up, then sleep until
        # the next message is due.
        start = time.monotonic()
        sent = 0
        while remaining():
            due = int((time.monotonic() - start) * cfg.rate) + 1 - sent
            for _ in range(min(due, RATE_MAX_BATCH)):
                if not remaining():
                    return
                publish_one()
                sent += 1
            await asyncio.sleep(max(0.0, start + sent / cfg.rate - time.monotonic()))
    elif cfg.publish_interval > 0:
        while remaining():
            publish_one()
            # simulate randomness of publishing messages
            await asyncio.sleep(random.random() * cfg.publish_interval)
    else:
        # As fast as possible: yield to the loop after every message so the
        # consumer and the handlers make progress.
        while remaining():
            publish_one()
            await asyncio.sleep(0)


async def restart_host(msg):
    # unhelpful simulation of i/o work
    await asyncio.sleep(random.random() * CONFIG.latency_scale)
    if random.random() < CONFIG.fail_rate:
        raise RestartFailed(f"Could not restart {msg.hostname}")
    msg.restarted = True
    STATS.restarted += 1
    logging.info(f"Restarted {msg.hostname}")


async def save(msg):
    # unhelpful simulation of i/o work
    await asyncio.sleep(random.random() * CONFIG.latency_scale)
    if random.random() < CONFIG.fail_rate:
        raise Exception(f"Could not save {msg}")
    msg.saved = True
    STATS.saved += 1
    logging.info(f"Saved {msg} into database")


async def cleanup(msg, event):
    # this will block the rest of the coro until `event.set` is called
    await event.wait()
    # unhelpful simulation of i/o work
    await asyncio.sleep(random.random() * CONFIG.latency_scale)
    msg.acked = True
    STATS.on_ack(msg)
    logging.info(f"Done. Acked {msg}")


async def extend(msg, event):
    while not event.is_set():
        msg.extended_cnt += 1
        STATS.extensions += 1
        logging.info(f"Extended deadline by 3 seconds for {msg}")
        # want to sleep for less than the deadline amount
        await asyncio.sleep(CONFIG.extend_interval)


def handle_results(results, msg):
    # Restart failures were already retried in handle_message; whatever is
    # left here (a failed save, a restart that failed for good) is final.
    for result in results:
        if isinstance(result, Exception):
            logging.error(f"Handling general error: {result}")


async def handle_message(msg):
    event = asyncio.Event()

    asyncio.create_task(extend(msg, event))
    asyncio.create_task(cleanup(msg, event))

    save_result, restart_result = await asyncio.gather(
        save(msg), restart_host(msg), return_exceptions=True
    )

    attempt = 0
    while isinstance(restart_result, RestartFailed) and attempt < CONFIG.restart_retries:
        attempt += 1
        STATS.restart_retries += 1
        logging.error(f"Retrying for failure to restart: {msg.hostname}")
        await asyncio.sleep(
            CONFIG.restart_backoff * 2 ** (attempt - 1) * CONFIG.latency_scale
        )
        try:
            restart_result = await restart_host(msg)
        except RestartFailed as exc:
            restart_result = exc

    if isinstance(save_result, Exception):
        STATS.save_failed += 1
    if isinstance(restart_result, Exception):
        STATS.restart_failed += 1
    handle_results((save_result, restart_result), msg)
    event.set()


async def consume(queue):
    stats = STATS
    while True:
        msg = await queue.get()
        logging.info(f"Pulled {msg}")
        stats.in_flight += 1
        if stats.in_flight > stats.peak_in_flight:
            stats.peak_in_flight = stats.in_flight
        asyncio.create_task(handle_message(msg))


async def wait_until_settled(loop):
    """--messages N: shut down once all N messages are acked (or nacked)."""
    await STATS.all_settled.wait()
    await shutdown(loop)


def handle_exception(loop, context):
    global CAUGHT_EXCEPTION
    CAUGHT_EXCEPTION = True
    # context["message"] will always be there; but context["exception"] may not
    msg = context.get("exception", context["message"])
    logging.error(f"Caught exception: {msg}")
    logging.info("Shutting down...")
    loop.create_task(shutdown(loop))


async def shutdown(loop, signal=None):
    """Cleanup tasks tied to the service's shutdown."""
    global SHUTTING_DOWN
    if SHUTTING_DOWN:  # a second signal, or a signal during completion
        return
    SHUTTING_DOWN = True
    if signal:
        logging.info(f"Received exit signal {signal.name}...")
    logging.info("Closing database connections")
    logging.info("Nacking outstanding messages")
    # Outstanding = published and not acked: in the queue, being handled or
    # waiting for cleanup.  No task runs before they are all cancelled below,
    # so no ack can sneak in after this count.
    STATS.nacked = STATS.published - STATS.acked
    if STATS.nacked:
        STATS.last_settle = time.monotonic()
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    [task.cancel() for task in tasks]

    logging.info("Cancelling outstanding tasks")
    await asyncio.gather(*tasks, return_exceptions=True)
    logging.info("Flushing metrics")
    loop.stop()


def percentile(sorted_values, p):
    """Nearest-rank percentile of an already sorted list (0 if empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def summary(stats, impl):
    lat = sorted(stats.latencies)
    if stats.first_publish is not None and stats.last_settle is not None:
        wall_s = max(0.0, stats.last_settle - stats.first_publish)
    else:
        wall_s = 0.0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "published": stats.published,
        "acked": stats.acked,
        "nacked": stats.nacked,
        "saved": stats.saved,
        "save_failed": stats.save_failed,
        "restarted": stats.restarted,
        "restart_failed": stats.restart_failed,
        "restart_retries": stats.restart_retries,
        "extensions": stats.extensions,
        "peak_in_flight": stats.peak_in_flight,
        "wall_s": round(wall_s, 6),
        "msgs_per_s": round(stats.acked / wall_s, 1) if wall_s > 0 else 0.0,
        "latency_ms": {
            "p50": round(percentile(lat, 50) * 1000.0, 3),
            "p99": round(percentile(lat, 99) * 1000.0, 3),
            "max": round(lat[-1] * 1000.0, 3) if lat else 0.0,
        },
        "impl": impl,
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        "max_rss_kb": usage.ru_maxrss,  # kilobytes on Linux
    }


# --------------------------------------------------------------------------
# command line


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # one clear line on stderr, exit status 2 (argparse's convention)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _number(kind, minimum=None, minimum_inclusive=True, maximum=None):
    def convert(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}")
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
        if minimum is not None:
            if minimum_inclusive and value < minimum:
                raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text!r}")
            if not minimum_inclusive and value <= minimum:
                raise argparse.ArgumentTypeError(f"must be > {minimum}, got {text!r}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be <= {maximum}, got {text!r}")
        return value

    return convert


def build_parser():
    p = _Parser(
        prog="mayhem_asyncio.py",
        description="Mayhem Mandrill: asyncio reference implementation (benchmark yardstick).",
    )
    p.add_argument("--messages", type=_number(int, 0), default=0, metavar="N",
                   help="publish N messages, exit once all are acked (0 = run until a signal; default 0)")
    p.add_argument("--publish-interval", type=_number(float, 0.0), default=1.0, metavar="SECONDS",
                   help="pause random()*SECONDS between messages; 0 = as fast as possible (default 1.0)")
    p.add_argument("--rate", type=_number(float, 0.0, minimum_inclusive=False), default=None, metavar="R",
                   help="publish at a fixed R msgs/s (open loop); overrides --publish-interval")
    p.add_argument("--latency-scale", type=_number(float, 0.0), default=1.0, metavar="S",
                   help="simulated I/O takes random()*S seconds (default 1.0)")
    p.add_argument("--fail-rate", type=_number(float, 0.0, maximum=1.0), default=0.25, metavar="P",
                   help="probability in [0,1] that a save or a restart fails (default 0.25)")
    p.add_argument("--restart-retries", type=_number(int, 0), default=3, metavar="N",
                   help="retries of a failed restart (default 3)")
    p.add_argument("--restart-backoff", type=_number(float, 0.0), default=0.1, metavar="SECONDS",
                   help="retry k sleeps SECONDS*2**(k-1)*latency-scale (default 0.1)")
    p.add_argument("--extend-interval", type=_number(float, 0.0, minimum_inclusive=False), default=2.0,
                   metavar="SECONDS", help="deadline extension period, > 0 (default 2.0)")
    p.add_argument("--seed", type=int, default=None, metavar="S",
                   help="seed Python's random module (message ids stay uuid4)")
    p.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio",
                   help="event loop implementation (default asyncio)")
    p.add_argument("--log-level", choices=tuple(LOG_LEVELS), default="info",
                   help="log level (default info)")
    p.add_argument("--log-file", default=None, metavar="PATH",
                   help="write logs to PATH (default stderr; never stdout)")
    p.add_argument("--summary-json", action="store_true",
                   help="print one JSON summary object on stdout at exit")
    return p


def new_event_loop(parser, which):
    if which == "uvloop":
        try:
            import uvloop
        except ImportError:
            parser.error("--loop uvloop requested but uvloop is not installed "
                         "(Debian: apt install python3-uvloop)")
        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def configure_logging(parser, args):
    level = LOG_LEVELS[args.log_level]
    if level is None:
        logging.basicConfig(level=logging.CRITICAL, stream=sys.stderr)
        logging.disable(logging.CRITICAL)
        return
    kwargs = {"filename": args.log_file} if args.log_file else {"stream": sys.stderr}
    try:
        logging.basicConfig(level=level, format=LOG_FORMAT, datefmt=LOG_DATEFMT, **kwargs)
    except OSError as exc:
        parser.error(f"cannot open --log-file: {exc}")


def main(argv=None):
    global CONFIG, STATS
    parser = build_parser()
    args = parser.parse_args(argv)
    CONFIG = Config(
        messages=args.messages,
        publish_interval=args.publish_interval,
        rate=args.rate or 0.0,
        latency_scale=args.latency_scale,
        fail_rate=args.fail_rate,
        restart_retries=args.restart_retries,
        restart_backoff=args.restart_backoff,
        extend_interval=args.extend_interval,
    )
    loop = new_event_loop(parser, args.loop)
    configure_logging(parser, args)
    if args.seed is not None:
        random.seed(args.seed)

    asyncio.set_event_loop(loop)
    STATS = Stats(target=args.messages)

    # May want to catch other signals too
    signals = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)
    for s in signals:
        loop.add_signal_handler(
            s, lambda s=s: asyncio.create_task(shutdown(loop, signal=s))
        )
    loop.set_exception_handler(handle_exception)
    queue = asyncio.Queue()

    try:
        loop.create_task(publish(queue))
        loop.create_task(consume(queue))
        if args.messages:
            loop.create_task(wait_until_settled(loop))
        loop.run_forever()
    finally:
        loop.close()
        logging.info("Successfully shutdown the Mayhem service.")

    if args.summary_json:
        sys.stdout.write(json.dumps(summary(STATS, args.loop)) + "\n")
        sys.stdout.flush()
    return 1 if CAUGHT_EXCEPTION else 0


if __name__ == "__main__":
    sys.exit(main())
