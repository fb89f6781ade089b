"""The gateway's added latency: the same photos sent one at a time, alternately through the
HTTP gateway (POST /v1/photos, then its event stream until the prediction event) and through
Kafka directly (a PhotoEvent produced as `fruits produce` does, until its prediction is read
from the predictions topic), in one run; prints p50 and p99 of each and their difference.

Needs the local stack with a current model (`make up`, `fruits train`), the five services and
the gateway running (`fruits services --gateway`), or --start to start them here for the run.
It adds a user of its own to the gateway's store (FRUITS_GATEWAY_DATABASE_URL) and deletes it,
with its photos, at the end.

  python -m tools.gateway_latency                   # 40 photos each way, 2 per second
  python -m tools.gateway_latency --photos 100 --start
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx

from core.datasets import list_images
from core.settings import PROJECT_ROOT, Settings, get_settings
from services.gateway.store import Store
from tools import tool_parser
from tools.client import PhotoSender, PredictionReader
from tools.demo import percentile
from tools.services import GATEWAY, free_port_offset, start_service, start_services, stop_services, wait_ready
from tools.users import delete_user

DATA = PROJECT_ROOT.parent / "shared" / "data" / "fruits360" / "Test"


class Arrivals(threading.Thread):
    """Reads the predictions topic; when each photo's first prediction was read."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="predictions", daemon=True)
        self.reader = PredictionReader(settings)
        self.seen: dict[str, float] = {}
        self.arrived = threading.Condition()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for prediction in self.reader.predictions(timeout=0.5):
                with self.arrived:
                    self.seen.setdefault(prediction.photo.photo_id, time.monotonic())
                    self.arrived.notify_all()

    def wait_for(self, photo_id: str, timeout: float) -> float:
        with self.arrived:
            if not self.arrived.wait_for(lambda: photo_id in self.seen, timeout):
                raise TimeoutError(f"no prediction for {photo_id} within {timeout:.0f} s")
            return self.seen[photo_id]

    def close(self) -> None:
        self.stop.set()
        self.join(5)
        self.reader.close()


def through_gateway(http: httpx.Client, token: str, data: bytes, timeout: float) -> float:
    """Seconds from sending the photo to the gateway to its prediction event. Over the user's
    rate (429) it waits as told first, untimed: the rate limit is policy, not latency."""
    while True:
        started = time.monotonic()
        answer = http.post("/v1/photos", content=data, headers={"Authorization": f"Bearer {token}",
                                                                "Content-Type": "image/jpeg"})  # fmt: skip
        if answer.status_code != 429:
            break
        time.sleep(float(answer.headers.get("Retry-After", "1")))
    answer.raise_for_status()
    photo_id = answer.json()["photo_id"]
    with http.stream("GET", f"/v1/photos/{photo_id}/events", headers={"Authorization": f"Bearer {token}"},
                     timeout=httpx.Timeout(10, read=timeout)) as stream:  # fmt: skip
        for line in stream.iter_lines():
            if line == "event: prediction":
                return time.monotonic() - started
    raise RuntimeError(f"the event stream of {photo_id} closed without a prediction")


def through_kafka(sender: PhotoSender, arrivals: Arrivals, data: bytes, timeout: float) -> float:
    """Seconds from producing the photo event to reading its prediction."""
    started = time.monotonic()
    photo_id = sender.send_bytes(data, name="photo.jpg")
    sender.producer.poll(0)
    return arrivals.wait_for(photo_id, timeout) - started


def measure(settings: Settings, gateway: str, photos: list[Path], rate: float, timeout: float) -> dict:
    store = Store(settings.gateway_database())
    name = f"latency-{uuid.uuid4().hex[:8]}"
    user, token = store.add_user(name)
    arrivals = Arrivals(settings.acting_as("client"))
    arrivals.start()
    sender = PhotoSender(settings.acting_as("client"), region="eu", user_id=user.user_id)
    times: dict[str, list[float]] = {"gateway": [], "kafka": []}
    try:
        with httpx.Client(base_url=gateway, timeout=30) as http:
            for index, path in enumerate(photos):
                data = path.read_bytes()
                # Alternate which path goes first, so that neither always meets a warmer pipeline.
                order = ("gateway", "kafka") if index % 2 == 0 else ("kafka", "gateway")
                for way in order:
                    paced = time.monotonic()
                    if way == "gateway":
                        times[way].append(through_gateway(http, token, data, timeout))
                    else:
                        times[way].append(through_kafka(sender, arrivals, data, timeout))
                    time.sleep(max(0.0, paced + 1 / rate - time.monotonic()))
                print(f"\r{index + 1}/{len(photos)} photos each way", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
    finally:
        sender.flush()
        arrivals.close()
        delete_user(settings.acting_as("admin"), store, name)
        store.close()
    summary: dict = {"photos": len(photos)}
    for way, values in times.items():
        values.sort()
        summary[way] = {"p50_ms": 1000 * percentile(values, 0.5), "p99_ms": 1000 * percentile(values, 0.99)}
    summary["added"] = {q: summary["gateway"][q] - summary["kafka"][q] for q in ("p50_ms", "p99_ms")}
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = tool_parser("python -m tools.gateway_latency", __doc__)
    parser.add_argument("--photos", type=int, default=40, help="photos sent each way (default: 40; one per class)")
    parser.add_argument("--rate", type=float, default=2.0, help="sends per second, both ways together (default: 2)")
    parser.add_argument("--gateway", help="the gateway's URL (default: http://FRUITS_GATEWAY_HOST:FRUITS_GATEWAY_PORT)")
    parser.add_argument("--data", type=Path, default=DATA, help=f"folder of labelled photos (default: {DATA})")
    parser.add_argument("--timeout", type=float, default=60.0, help="longest wait for one prediction (default: 60 s)")
    parser.add_argument(
        "--start",
        action="store_true",
        help="start the five services and the gateway (on FRUITS_GATEWAY_PORT) for the run",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.photos < 1 or args.rate <= 0:
        parser.error("--photos must be ≥ 1 and --rate > 0")
    settings = get_settings()
    photos = list_images(args.data, per_class=1).paths[: args.photos]
    if not photos:
        parser.error(f"no photos in {args.data}")
    running = {}
    try:
        if args.start:
            # Metrics ports clear of a demo's; the gateway on FRUITS_GATEWAY_PORT.
            running = start_services(settings.state_dir / "logs", port_offset=free_port_offset(0))
            running[GATEWAY] = start_service(GATEWAY, settings.state_dir / "logs")
            wait_ready(running[GATEWAY])
        gateway = args.gateway or f"http://{settings.gateway_host}:{settings.gateway_port}"
        try:
            httpx.get(f"{gateway}/healthz", timeout=5).raise_for_status()
        except httpx.HTTPError as exc:
            print(f"gateway_latency: error: no ready gateway at {gateway} ({exc}); `fruits services --gateway` "
                  "or --start", file=sys.stderr)  # fmt: skip
            return 1
        summary = measure(settings, gateway, photos, args.rate, args.timeout)
    finally:
        stop_services(running)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{summary['photos']} photos each way, one at a time:")
    for way in ("gateway", "kafka", "added"):
        figures = summary[way]
        print(f"  {way:<8} p50 {figures['p50_ms']:7.0f} ms   p99 {figures['p99_ms']:7.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
