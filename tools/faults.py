"""``make faults``: how fast the pipeline recovers when the broker crashes and when S3 is away,
measured on a throwaway stack of its own (free ports, a temporary state dir; a quick model is
trained on it first), with the five services run as `fruits services` runs them (one that
exits is started again).

1. The broker: photos stream at --rate; the broker is SIGKILLed and at once started again
   on its ports and data. Prints the seconds from the kill until it answers again, and from
   then until the first new prediction (target: within 10 s).
2. S3: the S3 server is stopped (SIGTERM), and started again --outage seconds after it exited. Prints how many
   services exited meanwhile (target: none) and the seconds from S3's return until every photo
   sent before it was answered (target: within 60 s).

After each, lost and duplicated photos (every valid photo must get exactly one prediction,
every invalid one, cut in half, exactly one dead letter). Exit status 1 if anything was lost
or duplicated or a target was missed. The integration tests (tests/integration/test_faults.py)
assert the same exactly-once outcome, without timing targets."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from core.datasets import list_images
from core.kafka import LIBRDKAFKA_LOGGER
from core.settings import Settings
from tools import tool_parser
from tools.bench_metrics import ensure_model, own_stack
from tools.demo import spread
from tools.services import Supervisor, free_port_offset, supervised
from tools.stack import kafka_server, kill_server, restart_server, seaweedfs_server, stop_server
from tools.traffic import Tally, Traffic

BROKER_TARGET_S = 10.0
"""Predictions resume within this long after the broker answers again."""
S3_DRAIN_TARGET_S = 60.0
"""Every photo is answered within this long after S3's return."""
INVALID_EVERY = 25
DELIVERY_TIMEOUT_S = 300.0
"""How long the photos of a phase may take to be answered before the rest count as lost."""


class Clock:
    """Progress lines with the seconds since the start."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def say(self, line: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f} s] {line}", flush=True)


def quiet_kafka_clients() -> None:
    """Our own clients' complaints while the broker is away are expected: the progress lines
    say what happens."""
    LIBRDKAFKA_LOGGER.setLevel(logging.CRITICAL)


def finish(traffic: Traffic, say: Callable[[str], None]) -> Tally:
    traffic.stop_sending()
    say(f"sent {len(traffic.sent_at)} photos; waiting for every answer (at most {DELIVERY_TIMEOUT_S:.0f} s)")
    traffic.wait_answered(DELIVERY_TIMEOUT_S)
    tally = traffic.tally()
    say(tally.summary())
    return tally


def broker_crash(
    settings: Settings, photos: list[Path], rate: float, lead: float, say: Callable[[str], None]
) -> tuple[float, float | None, Tally]:
    """Seconds from the kill until the broker answers, from then until the first new
    prediction (None if none came), and the tally."""
    client = settings.acting_as("client")
    with Traffic(client, settings, photos, rate, invalid_every=INVALID_EVERY) as traffic:
        say(f"streaming at {rate:.0f} photos/s; the broker is killed in {lead:.0f} s")
        time.sleep(lead)
        killed = time.monotonic()
        kill_server(settings, kafka_server.NAME)
        say("broker SIGKILLed; starting it again")
        restart_server(settings, kafka_server.NAME)
        ready = time.monotonic()
        say(f"broker ready {ready - killed:.1f} s after the kill; waiting for the first new prediction")
        deadline = ready + DELIVERY_TIMEOUT_S
        while (first := traffic.first_prediction_after(ready)) is None and time.monotonic() < deadline:
            traffic.check()
            time.sleep(0.1)
        if first is not None:
            say(f"first prediction {first - ready:.1f} s after the broker was ready")
        time.sleep(lead)  # a while of normal traffic after the recovery
        tally = finish(traffic, say)
    return ready - killed, None if first is None else first - ready, tally


def s3_outage(
    settings: Settings,
    photos: list[Path],
    rate: float,
    lead: float,
    outage: float,
    supervisor: Supervisor,
    say: Callable[[str], None],
) -> tuple[int, float | None, Tally]:
    """Service exits during the outage, seconds from S3's return until every photo sent before
    it was answered (None if some never were), and the tally."""
    client = settings.acting_as("client")
    exits_before = sum(supervisor.exits.values())
    with Traffic(client, settings, photos, rate, invalid_every=INVALID_EVERY) as traffic:
        say(f"streaming at {rate:.0f} photos/s; S3 is stopped in {lead:.0f} s, for {outage:.0f} s")
        time.sleep(lead)
        stopping = time.monotonic()
        stop_server(settings, seaweedfs_server.NAME)
        stopped = time.monotonic()
        say(f"S3 stopped (it took {stopped - stopping:.1f} s to exit); starting it again in {outage:.0f} s")
        time.sleep(outage)
        exits = sum(supervisor.exits.values()) - exits_before
        say(f"service exits during the outage: {exits}; starting S3 again")
        restart_server(settings, seaweedfs_server.NAME)
        back = time.monotonic()
        before = list(traffic.sent_at)
        say(f"S3 ready {back - stopped:.1f} s after it had stopped; {len(traffic.unanswered(before))} photos waiting")
        traffic.wait_answered(DELIVERY_TIMEOUT_S, linger=0, photo_ids=before)
        answered = [traffic.answered_at(photo_id) for photo_id in before]
        drain = None if None in answered else max(at for at in answered if at is not None) - back
        if drain is not None:
            say(f"every photo sent before S3's return answered {drain:.1f} s after it")
        time.sleep(lead)
        tally = finish(traffic, say)
    return exits, drain, tally


def main() -> int:
    parser = tool_parser("python -m tools.faults", __doc__, test_split=True)
    parser.add_argument("--rate", type=float, default=40.0, help="photos per second (default 40)")
    parser.add_argument("--lead", type=float, default=10.0, help="seconds of traffic before and after each fault")
    parser.add_argument("--outage", type=float, default=30.0, help="seconds S3 stays stopped (default 30)")
    args = parser.parse_args()
    quiet_kafka_clients()
    clock = Clock()
    say = clock.say
    photos = spread(list_images(args.data / "Test"), 600).paths
    say("starting a throwaway stack on free ports")
    with own_stack() as stack:
        ensure_model(stack, args.data)
        logs = Path(tempfile.mkdtemp(prefix="fruits-faults-logs-"))
        say(f"starting the five services (logs in {logs})")
        with supervised(logs, free_port_offset(300), report=say) as supervisor:
            broker_ready, resumed, broker_tally = broker_crash(stack, photos, args.rate, args.lead, say)
            exits, drain, s3_tally = s3_outage(stack, photos, args.rate, args.lead, args.outage, supervisor, say)

    checks = [
        (
            f"broker: ready {broker_ready:.1f} s after SIGKILL; first prediction "
            + (f"{resumed:.1f} s after it was ready" if resumed is not None else "never came")
            + f" (target ≤ {BROKER_TARGET_S:.0f} s)",
            resumed is not None and resumed <= BROKER_TARGET_S,
        ),
        (f"broker: {broker_tally.summary()}", broker_tally.exactly_once),
        (f"S3 {args.outage:.0f} s away: {exits} service exits (target 0)", exits == 0),
        (
            "S3: every photo answered "
            + (f"{drain:.1f} s after its return" if drain is not None else "never")
            + f" (target ≤ {S3_DRAIN_TARGET_S:.0f} s)",
            drain is not None and drain <= S3_DRAIN_TARGET_S,
        ),
        (f"S3: {s3_tally.summary()}", s3_tally.exactly_once),
    ]
    print()
    for line, ok in checks:
        print(f"{'ok  ' if ok else 'FAIL'} {line}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
