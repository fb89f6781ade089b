"""The HTTP gateway (``python -m services.gateway``) for the integration tests that drive it
through its API or its web page: started on a loopback port against the test stack, users
made with ``fruits users add``."""

from __future__ import annotations

import json
import mimetypes
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from core.settings import PROJECT_ROOT
from tools import web
from tools.services import GATEWAY, ServiceProcess, start_service, stop_service, wait_ready

needs_gateway = pytest.mark.skipif(
    not (PROJECT_ROOT / "services" / "gateway" / "__main__.py").is_file(),
    reason="services/gateway has no server yet (only the page's static files): the gateway branch brings it",
)
def add_user(name: str) -> str:
    """A new user ``name`` (``fruits users add``); returns the token it printed."""
    try:
        return web.add_user(name)
    except RuntimeError as exc:
        pytest.fail(str(exc))


@dataclass
class Gateway:
    url: str
    service: ServiceProcess

    def log(self) -> str:
        return self.service.log_path.read_text(errors="replace")

    def call(self, method: str, path: str, token: str, body: bytes | None = None, content_type: str = "") -> Any:
        """The JSON answer of a 2xx; raises urllib.error.HTTPError otherwise."""
        headers = {"Authorization": f"Bearer {token}", **({"Content-Type": content_type} if content_type else {})}
        request = urllib.request.Request(f"{self.url}{path}", data=body, method=method, headers=headers)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def post_photo(self, token: str, path: Path) -> str:
        """Sends the photo at ``path`` as the raw body; returns its photo id."""
        content_type = mimetypes.guess_type(path.name)[0] or "image/jpeg"
        return self.call("POST", "/v1/photos", token, path.read_bytes(), content_type)["photo_id"]

    def wait_done(self, token: str, photo_id: str, timeout: float = 120.0) -> dict:
        """The photo object once its prediction is in (polling, as the page's fallback does)."""
        deadline = time.monotonic() + timeout
        while (photo := self.call("GET", f"/v1/photos/{photo_id}", token))["status"] != "done":
            if time.monotonic() > deadline:
                pytest.fail(f"no prediction for {photo_id} after {timeout:.0f} s:\n{self.log()[-3000:]}")
            time.sleep(0.5)
        return photo

    def feedback(self, token: str, photo_id: str, corrected_type: str | None = None) -> None:
        """Right (``corrected_type`` None), or wrong: it is ``corrected_type``."""
        verdict = {"correct": True} if corrected_type is None else {"correct": False, "corrected_type": corrected_type}
        self.call("POST", f"/v1/photos/{photo_id}/feedback", token, json.dumps(verdict).encode(), "application/json")


def start_gateway(log_dir: Path, port: int) -> Gateway:
    """``python -m services.gateway`` on 127.0.0.1:``port``, once it answers."""
    env = {"FRUITS_GATEWAY_HOST": "127.0.0.1", "FRUITS_GATEWAY_PORT": str(port)}
    gateway = Gateway(f"http://127.0.0.1:{port}", start_service(GATEWAY, log_dir, env))
    try:
        wait_ready(gateway.service, web.GATEWAY_START_TIMEOUT_S)
    except (RuntimeError, TimeoutError) as exc:
        stop_service(gateway.service)
        pytest.fail(f"{exc}:\n{gateway.log()[-3000:]}")
    return gateway


def stop_gateway(gateway: Gateway) -> None:
    stop_service(gateway.service)


def sse_first_event(gateway: Gateway, token: str, photo_id: str, timeout: float = 120.0) -> dict:
    """The data of the first ``prediction`` event of the photo's event stream."""
    request = urllib.request.Request(
        f"{gateway.url}/v1/photos/{photo_id}/events",
        headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"},
    )
    event = ""
    with urllib.request.urlopen(request, timeout=timeout) as response:
        for raw in response:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "prediction":
                return json.loads(line[5:])
    raise AssertionError(f"the event stream of {photo_id} ended without a prediction event")
