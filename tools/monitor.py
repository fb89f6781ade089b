"""Prometheus for the local stack (``make monitor``): scrapes the five services' /metrics
with deploy/prometheus/prometheus.yml and evaluates its recording and alert rules.

  up      start Prometheus on 127.0.0.1 (default port 19090) unless it runs, print its URL
  down    stop it (its data in FRUITS_STATE_DIR/prometheus is kept)

It uses Debian's ``prometheus`` package (``make setup`` installs it), with its own port and
data dir, never the package's system service. Its log is FRUITS_STATE_DIR/logs/prometheus.log.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from core.settings import PROJECT_ROOT, Settings, get_settings
from tools.stack import StackError, _check_free, _log_file, _our_pid, _signal, _spawn, _wait_exit

CONFIG = PROJECT_ROOT / "deploy" / "prometheus" / "prometheus.yml"
DEFAULT_PORT = 19090
NAME = "prometheus"


def prometheus_binary() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        raise StackError("prometheus not found: `make setup` installs Debian's package (or `make prometheus-install`)")
    return binary


def prometheus_argv(config: Path, data_dir: Path, port: int, retention: str = "7d") -> list[str]:
    """Command line of a Prometheus on 127.0.0.1:``port`` keeping its data in ``data_dir``."""
    return [
        prometheus_binary(),
        f"--config.file={config}",
        f"--storage.tsdb.path={data_dir}",
        f"--storage.tsdb.retention.time={retention}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def query(url: str, promql: str, timeout: float = 10.0) -> list[dict]:
    """Result of an instant query through the HTTP API (raises on a PromQL error)."""
    params = urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(f"{url}/api/v1/query?{params}", timeout=timeout) as response:
        body = json.load(response)
    if body.get("status") != "success":
        raise ValueError(f"{promql}: {body}")
    return body["data"]["result"]


def up(settings: Settings, port: int = DEFAULT_PORT, config: Path = CONFIG, timeout: float = 60.0) -> str:
    url = f"http://127.0.0.1:{port}"
    if pid := _our_pid(settings, NAME):
        print(f"prometheus: already running (pid {pid}) at {url}", flush=True)
        return url
    _check_free(range(port, port + 1), NAME)
    data = settings.state_dir.resolve() / "prometheus"
    data.mkdir(parents=True, exist_ok=True)
    (settings.state_dir / "logs").mkdir(parents=True, exist_ok=True)
    pid = _spawn(settings, NAME, prometheus_argv(config.resolve(), data, port))
    deadline = time.monotonic() + timeout
    while not ready(url):
        if _our_pid(settings, NAME) is None:
            raise StackError(f"prometheus exited while starting; see {_log_file(settings, NAME)}")
        if time.monotonic() > deadline:
            raise StackError(f"prometheus not ready after {timeout:.0f} s; see {_log_file(settings, NAME)}")
        time.sleep(0.5)
    print(f"prometheus: running (pid {pid}), scraping the services of {config}", flush=True)
    print(f"prometheus: {url}  (alerts: {url}/alerts, targets: {url}/targets)", flush=True)
    return url


def down(settings: Settings) -> None:
    pid = _our_pid(settings, NAME)
    if pid is None:
        print("prometheus: not running", flush=True)
        return
    _signal(pid, signal.SIGTERM)
    if not _wait_exit(pid, time.monotonic() + 30):
        _signal(pid, signal.SIGKILL)
        _wait_exit(pid, time.monotonic() + 5)
    (settings.state_dir / f"{NAME}.pid").unlink(missing_ok=True)
    print(f"prometheus: stopped (pid {pid})", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.monitor", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start Prometheus on loopback against the local services")
    start.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"listen port (default {DEFAULT_PORT})")
    start.add_argument("--config", type=Path, default=CONFIG, help="scrape config (default: %(default)s)")
    commands.add_parser("down", help="stop it")
    args = parser.parse_args(argv)
    settings = get_settings()
    try:
        if args.command == "up":
            up(settings, args.port, args.config)
        else:
            down(settings)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
