"""``python -m services.gateway``: the HTTP gateway on FRUITS_GATEWAY_HOST:FRUITS_GATEWAY_PORT,
as the ``gateway`` identity on Kafka and S3. SIGTERM stops it gracefully: no new connections,
open requests finished (event streams get a few seconds), queued records delivered."""

from __future__ import annotations

import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn

from core.kafka import check_reachable
from core.s3 import s3_client
from core.settings import MissingCredentials, get_settings
from services.gateway.app import Gateway, create_app
from services.gateway.predictions import PredictionFollower
from services.gateway.producer import EventProducer
from services.gateway.store import Store

log = logging.getLogger("services.gateway")

GRACEFUL_SHUTDOWN_SECONDS = 5
"""How long open requests (event streams) may go on after SIGTERM."""


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings().acting_as("gateway")
    if settings.gateway_default_region not in settings.region_buckets:
        raise SystemExit(
            f"FRUITS_GATEWAY_DEFAULT_REGION={settings.gateway_default_region!r} is not in FRUITS_REGION_BUCKETS"
        )
    try:
        check_reachable(settings)
    except (ConnectionError, MissingCredentials) as exc:
        log.critical("gateway: %s", exc)
        raise SystemExit(1) from None
    store = Store(settings.gateway_database())
    producer = EventProducer(settings)
    clients: dict[str, Any] = {}

    def s3() -> Any:
        if "s3" not in clients:  # made on the first large photo
            clients["s3"] = s3_client(settings)
        return clients["s3"]

    gateway = Gateway(settings, store, producer.send, s3)
    follower = PredictionFollower(settings, store, gateway.notifier.notify)
    gateway.ready = lambda: follower.ready.is_set() and follower.error is None

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        follower.start()
        log.info("gateway: http://%s:%d/ (API docs at /docs)", settings.gateway_host, settings.gateway_port)
        try:
            yield
        finally:
            follower.stop()
            producer.close()
            store.close()

    # uvicorn stops gracefully on SIGTERM, then raises the signal again under the handler it found:
    # this one makes that a clean exit (status 0) instead of death by the signal.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    uvicorn.run(
        create_app(gateway, lifespan),
        host=settings.gateway_host,
        port=settings.gateway_port,
        access_log=False,  # its lines carry the query string (tokens of event streams, positions): ours do not
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        log_level="info",
    )


if __name__ == "__main__":
    main()
