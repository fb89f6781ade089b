"""``make soak``: a long run with services killed at random, on a throwaway stack of its own
(free ports, a temporary state dir; a quick model is trained on it first), the five services
run as `fruits services` runs them (one that exits is started again on its slot).

1. The maximum rate: photos sent as fast as possible, answers per second.
2. --minutes (20) at half that rate, photos streaming steadily (every 50th one invalid), one
   service, chosen at random, SIGKILLed at a random moment of every minute.
3. --quiet-minutes (10) more at the same rate without kills; each service's resident memory
   (RSS) is read at the end of every quiet minute; growth is judged from minute 2 to the last.

A line per minute while it runs (photos sent, answered so far, the service killed); at the end,
once every photo was answered or --drain-timeout passed, a table per minute of photos sent,
lost, duplicated, answered wrongly (a valid photo dead-lettered, …) and the p99 latency from
sending to the answer, then the RSS of each service and its growth. Exit status 1 if a photo
was lost, duplicated or answered wrongly, or a service's RSS grew more than 10 % in the quiet
part. Not part of the test suite: it takes --minutes + --quiet-minutes, plus a few minutes to
start."""

from __future__ import annotations

import random
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from core.datasets import list_images
from core.settings import Settings
from tools import tool_parser
from tools.bench_metrics import ensure_model, own_stack
from tools.client import new_photo_id
from tools.demo import percentile, spread
from tools.faults import Clock, quiet_kafka_clients
from tools.roundtrip import round_trip
from tools.services import Supervisor, free_port_offset, supervised
from tools.traffic import Traffic

RSS_GROWTH_LIMIT = 0.10
"""Most a service's RSS may grow between the quiet part's minute 2 and its last minute."""
RSS_FROM_MINUTE = 2
INVALID_EVERY = 50


def rss_bytes(pid: int) -> int | None:
    """Current resident set size (VmRSS) of a process, None if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:")), None)


def service_rss(supervisor: Supervisor) -> dict[str, tuple[int, int | None]]:
    """Each service's pid and RSS."""
    return {key: (s.process.pid, rss_bytes(s.process.pid)) for key, s in list(supervisor.services.items())}


def maximum_rate(client: Settings, paths: list[Path], say: Callable[[str], None]) -> float:
    """Answers per second with photos sent as fast as possible (after a warm-up)."""
    round_trip(client, [(new_photo_id(), path) for path in paths[:200]])
    photos = [(new_photo_id(), path) for path in paths]
    result = round_trip(client, photos)
    rate = len(result.predictions) / (max(result.received_at.values()) - min(result.sent_at.values()))
    say(f"maximum rate: {rate:.1f} photos/s ({len(result.predictions)}/{len(photos)} answered)")
    return rate


def main() -> int:
    parser = tool_parser("python -m tools.soak", __doc__, test_split=True)
    parser.add_argument("--minutes", type=int, default=20, help="minutes with a service killed in each (default 20)")
    parser.add_argument("--quiet-minutes", type=int, default=10, help="minutes without kills after (default 10)")
    parser.add_argument("--rate", type=float, default=None, help="photos per second (default: half the maximum)")
    parser.add_argument("--rate-photos", type=int, default=1000, help="photos sent to measure the maximum rate")
    parser.add_argument("--drain-timeout", type=float, default=600.0, help="seconds the answers may take at the end")
    parser.add_argument("--seed", type=int, default=None, help="seed of the random kills (default: random)")
    args = parser.parse_args()
    if args.minutes < 0 or args.quiet_minutes < 1:
        parser.error("--minutes must be ≥ 0 and --quiet-minutes ≥ 1")
    quiet_kafka_clients()
    chance = random.Random(args.seed)
    clock = Clock()
    say = clock.say
    test = list_images(args.data / "Test")
    say("starting a throwaway stack on free ports")
    with own_stack() as stack:
        ensure_model(stack, args.data)
        logs = Path(tempfile.mkdtemp(prefix="fruits-soak-logs-"))
        say(f"starting the five services (logs in {logs})")
        with supervised(logs, free_port_offset(300), report=say) as supervisor:
            client = stack.acting_as("client")
            rate = args.rate or maximum_rate(client, spread(test, args.rate_photos).paths, say) / 2
            minutes = args.minutes + args.quiet_minutes
            say(
                f"streaming at {rate:.1f} photos/s for {minutes} minutes; "
                f"one service killed in each of the first {args.minutes}"
            )
            sent_in: list[list[str]] = []
            kills: list[str] = []
            rss: dict[int, dict[str, tuple[int, int | None]]] = {}
            photos = spread(test, 2000).paths
            with Traffic(client, stack, photos, rate, invalid_every=INVALID_EVERY) as traffic:
                for minute in range(1, minutes + 1):
                    start = time.monotonic()
                    sent_before = len(traffic.sent_at)
                    victim = ""
                    if minute <= args.minutes:
                        time.sleep(chance.uniform(0, 55))
                        victim = chance.choice(sorted(supervisor.services))
                        supervisor.services[victim].process.send_signal(signal.SIGKILL)
                    time.sleep(max(0.0, start + 60 - time.monotonic()))
                    traffic.check()
                    sent = list(traffic.sent_at)[sent_before:]  # in the order sent
                    sent_in.append(sent)
                    kills.append(victim)
                    quiet = minute - args.minutes
                    if quiet >= 1:
                        rss[quiet] = service_rss(supervisor)
                        sizes = [f"{key} {size / 2**20:.0f} MB" for key, (_, size) in rss[quiet].items() if size]
                        say(f"RSS at quiet minute {quiet}: {', '.join(sizes)}")
                    answered = len(sent) - len(traffic.unanswered(sent))
                    say(
                        f"minute {minute:2d}: sent {len(sent)}, answered {answered} so far"
                        + (f"; killed {victim}" if victim else "; no kill")
                    )
                traffic.stop_sending()
                say(f"sending stopped; waiting for every answer (at most {args.drain_timeout:.0f} s)")
                traffic.wait_answered(args.drain_timeout)
            restarts = dict(supervisor.restarts)

    print()
    print("minute  kill           sent  lost  dup  wrong  p99 latency")
    for minute, (sent, victim) in enumerate(zip(sent_in, kills), 1):
        tally = traffic.tally(sent)
        p99 = f"{percentile(tally.latencies, 0.99) * 1000:8.0f} ms" if tally.latencies else "       -"
        print(
            f"{minute:6d}  {victim or '-':<13} {tally.sent:5d} {len(tally.lost):5d} {tally.duplicated:4d} "
            f"{len(tally.wrong):6d}  {p99}"
        )
    total = traffic.tally()
    print(f"\nall: {total.summary()}; restarts: {restarts}")
    first, last = max(1, min(RSS_FROM_MINUTE, args.quiet_minutes - 1)), args.quiet_minutes
    growth_ok = True
    print(f"RSS, quiet minute {first} → {last}:")
    for key in sorted(rss[last]):
        (pid_first, before), (pid_last, after) = rss[first].get(key, (0, None)), rss[last][key]
        if before is None or after is None or pid_first != pid_last:
            print(f"  {key:<14} not comparable (the process restarted or was gone)")
            growth_ok = False
            continue
        growth = after / before - 1
        growth_ok &= growth <= RSS_GROWTH_LIMIT
        print(f"  {key:<14} {before / 2**20:7.1f} MB → {after / 2**20:7.1f} MB  ({100 * growth:+.1f} %)")
    ok = total.exactly_once and growth_ok
    print(f"{'ok' if ok else 'FAIL'}: 0 lost, 0 duplicated, RSS growth ≤ {100 * RSS_GROWTH_LIMIT:.0f} % per service")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
