"""Prometheus for the local stack (``make monitor``): scrapes the five services' /metrics
with deploy/prometheus/prometheus.yml and evaluates its recording and alert rules.

  up      start Prometheus on 127.0.0.1 (default port 19090) unless it runs, print its URL
  down    stop it (its data in FRUITS_STATE_DIR/prometheus is kept)

It uses Debian's ``prometheus`` package (``make setup`` installs it), with its own port and
data dir, never the package's system service. Its log is FRUITS_STATE_DIR/logs/prometheus.log.
The recipe is tools/stack/prometheus_server.py; this is its command line.
"""

from __future__ import annotations

import sys
from pathlib import Path

from core.settings import get_settings
from tools import tool_parser
from tools.stack.prometheus_server import CONFIG, DEFAULT_PORT, down, up
from tools.stack.supervisor import run_command


def main(argv: list[str] | None = None) -> int:
    parser = tool_parser("python -m tools.monitor", __doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start Prometheus on loopback against the local services")
    start.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"listen port (default {DEFAULT_PORT})")
    start.add_argument("--config", type=Path, default=CONFIG, help="scrape config (default: %(default)s)")
    commands.add_parser("down", help="stop it")
    args = parser.parse_args(argv)
    settings = get_settings()
    if args.command == "up":
        return run_command(lambda: up(settings, args.port, args.config))
    return run_command(lambda: down(settings))


if __name__ == "__main__":
    sys.exit(main())
