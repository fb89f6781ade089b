"""``make web`` (``python -m tools.web``): the web page on the local stack, ready to use.

Provisions the stack and trains a bundle if none is current (as ``fruits demo`` does), starts
the five services (restarted if one exits) and the HTTP gateway (``python -m services.gateway``
on FRUITS_GATEWAY_HOST:FRUITS_GATEWAY_PORT), then prints the page's URL and a demo user's
token. The token is kept in FRUITS_STATE_DIR/secrets/web-demo-token (only the local stack's
owner can read it) and reused while the gateway accepts it; otherwise a new demo user is made
with ``fruits users add``. Ctrl-C stops the gateway and the services.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from core.settings import PROJECT_ROOT, Settings, get_settings
from tools import FRUITS360_SAMPLE, tool_parser
from tools.demo import prepare
from tools.services import GATEWAY, Supervisor, start_service, start_services, stop_service, stop_services, wait_ready

TOKEN = re.compile(r"\b[0-9a-f]{16}\.[A-Za-z0-9_-]{16,128}")
"""An API token as ``fruits users add`` prints it: ``<token id>.<secret>``."""
GATEWAY_START_TIMEOUT_S = 90.0


def add_user(name: str, env: dict[str, str] | None = None) -> str:
    """A new user ``name`` (``python -m tools.cli users add``); returns the token it printed."""
    result = subprocess.run(
        [sys.executable, "-m", "tools.cli", "users", "add", name],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120, env=env,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"fruits users add {name} failed: {result.stdout}{result.stderr}")
    tokens = TOKEN.findall(result.stdout)
    if not tokens:
        raise RuntimeError(f"no token in the output of fruits users add {name}:\n{result.stdout}")
    return tokens[-1]


def accepted(url: str, token: str) -> bool:
    """Whether the gateway at ``url`` takes ``token`` (GET /v1/me)."""
    request = urllib.request.Request(f"{url}/v1/me", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            json.load(response)
            return True
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            return False
        raise


def demo_token(settings: Settings, url: str) -> str:
    """The saved demo token if the gateway still accepts it, else a new demo user's (saved)."""
    path = settings.secrets_dir / "web-demo-token"
    if path.is_file() and accepted(url, token := path.read_text().strip()):
        return token
    token = add_user(f"demo-{uuid.uuid4().hex[:6]}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)  # a token saved before may have been readable by others
    path.write_text(token + "\n")
    return token


def run(settings: Settings, data: Path) -> int:
    print(f"model bundle: {prepare(settings.acting_as('admin'), data)}")
    log_dir = settings.state_dir / "logs"
    host = "127.0.0.1" if settings.gateway_host in ("0.0.0.0", "::") else settings.gateway_host
    url = f"http://{host}:{settings.gateway_port}"
    # SIGTERM stops everything like Ctrl-C does, instead of orphaning the services.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    supervisor = Supervisor(start_services(log_dir), log_dir)
    gateway = None
    try:
        gateway = start_service(GATEWAY, log_dir)
        wait_ready(gateway, GATEWAY_START_TIMEOUT_S)
        token = demo_token(settings, url)
        print(f"\nthe page:   {url}/\nyour token: {token}")
        print(f"(logs in {log_dir}; Ctrl-C stops the gateway and the services)")
        while gateway.process.poll() is None:
            supervisor.check()
            time.sleep(1)
        print(f"the gateway exited with {gateway.process.returncode}; its log: {gateway.log_path}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        if gateway is not None:
            stop_service(gateway)
        stop_services(supervisor.services)


def main(argv: list[str] | None = None) -> int:
    parser = tool_parser("python -m tools.web", __doc__)
    parser.add_argument(
        "--data", type=Path, default=FRUITS360_SAMPLE,
        help=f"Fruits-360 root to train on if no bundle is current (default: {FRUITS360_SAMPLE})",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if not (PROJECT_ROOT / "services" / "gateway" / "__main__.py").is_file():
        print("error: services/gateway has no server (python -m services.gateway) in this checkout", file=sys.stderr)
        return 2
    try:
        return run(get_settings(), args.data)
    except (RuntimeError, OSError) as exc:  # OSError: ConnectionError, an HTTP error of the gateway
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
