"""Supervision of the local servers (Kafka, SeaweedFS, Prometheus): one process per named
server, started as a session leader so it outlives the command that started it, with its
pid file (``<state dir>/<name>.pid``) and its appended log (``<state dir>/logs/<name>.log``).

Nothing here knows a server: the recipes (``kafka_server``, ``seaweedfs_server``,
``prometheus_server``) give the command line and the readiness check.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from core.settings import Settings

START_TIMEOUT_S = 90.0
"""How long a server started here has to answer."""
EXISTING_TIMEOUT_S = 20.0
"""How long an existing server (given in the environment) has to answer."""
STOP_TIMEOUT_S = 30.0
"""How long a server has to exit after SIGTERM before it is killed (weed's filer alone waits 15 s)."""

Problem = Callable[[Settings], "str | None"]
"""A readiness check: None once the server answers, else why it does not (yet)."""


class StackError(RuntimeError):
    """A server could not be started, reached or stopped; the message says where to look."""


def run_command(action: Callable[[], object], errors: tuple[type[Exception], ...] = (StackError,)) -> int:
    """Exit status of a command line: 0, or 1 once ``action`` failed with one of ``errors``
    (printed as one line, no traceback: the message says what to do)."""
    try:
        action()
    except errors as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


# --- Files -----------------------------------------------------------------------------------


def pid_file(settings: Settings, name: str) -> Path:
    return settings.state_dir / f"{name}.pid"


def log_file(settings: Settings, name: str) -> Path:
    return settings.state_dir / "logs" / f"{name}.log"


# --- Starting --------------------------------------------------------------------------------


def spawn(settings: Settings, name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
    """Start ``argv`` as the server ``name``: its own session, output appended to its log,
    working directory the state dir, environment ``env`` (default: ours); its pid is written
    to its pid file and returned."""
    log_file(settings, name).parent.mkdir(parents=True, exist_ok=True)
    with log_file(settings, name).open("ab") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=settings.state_dir,
            env=env,
            start_new_session=True,  # outlives `up`; Ctrl-C in this terminal does not reach it
        )
    pid_file(settings, name).write_text(f"{process.pid}\n")
    return process.pid


def ensure_running(
    settings: Settings, name: str, address: str, env: str, start: Callable[[Settings], int]
) -> int | None:
    """Pid of the local server, started with ``start`` if needed; None when the environment
    variable ``env`` gives an existing server (which is then neither started nor stopped)."""
    if env in os.environ:
        print(f"{name}: not started, using the existing server at {address} (from {env})", flush=True)
        return None
    if pid := our_pid(settings, name):
        print(f"{name}: already running at {address} (pid {pid})", flush=True)
        return pid
    print(f"{name}: starting on {address}, log {log_file(settings, name)}", flush=True)
    return start(settings)


def wait_ready(
    settings: Settings, name: str, problem: Problem, pid: int | None, started: float, timeout: float | None = None
) -> None:
    """Wait until ``problem`` reports none. A server started here (``pid``) that exits
    meanwhile fails at once, with the end of its log; ``timeout`` (seconds since
    ``started``) defaults to START_TIMEOUT_S for ours, EXISTING_TIMEOUT_S for an existing one."""
    if timeout is None:
        timeout = START_TIMEOUT_S if pid else EXISTING_TIMEOUT_S
    log = log_file(settings, name)
    while (why := problem(settings)) is not None:
        if pid and not alive(pid):
            tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-20:]) if log.is_file() else ""
            raise StackError(f"{name} exited while starting ({why}); last lines of {log}:\n{tail}")
        if time.monotonic() - started > timeout:
            hint = f"see {log}" if pid else "check the address and credentials it was given"
            raise StackError(f"{name} did not answer within {timeout:.0f} s ({why}); {hint}")
        time.sleep(0.5)
    print(f"{name}: ready after {time.monotonic() - started:.1f} s", flush=True)


# --- Processes -------------------------------------------------------------------------------


def our_pid(settings: Settings, name: str) -> int | None:
    """The pid in the pid file, if that process runs and belongs to this state dir: pid
    files outlive their process, and a reused pid must never be signalled."""
    try:
        pid = int(pid_file(settings, name).read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if alive(pid) and f"{settings.state_dir.resolve()}{os.sep}".encode() in cmdline else None


def alive(pid: int) -> bool:
    try:  # reap it if it is our child: a zombie is dead
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def send_signal(pid: int, sig: signal.Signals) -> None:
    """Signal the process group of a server (started as a session leader), unless it has just exited."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def wait_exit(pid: int, deadline: float) -> bool:
    """Whether the process exited before ``deadline`` (time.monotonic())."""
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def stop(settings: Settings, names: Iterable[str], *, kill: bool = False) -> dict[str, int]:
    """Stop the named servers started in this state dir, all at once: SIGTERM (SIGKILL with
    ``kill``, for data about to be deleted), SIGKILL after STOP_TIMEOUT_S. Their pid files
    are removed. Returns name → pid of those that ran."""
    names = list(names)
    running = {name: pid for name in names if (pid := our_pid(settings, name))}
    for pid in running.values():
        send_signal(pid, signal.SIGKILL if kill else signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for name, pid in running.items():
        if not wait_exit(pid, deadline):
            print(f"{name}: still running after {STOP_TIMEOUT_S:.0f} s, killing it", flush=True)
            send_signal(pid, signal.SIGKILL)
            wait_exit(pid, time.monotonic() + 5)
        print(f"{name}: stopped (pid {pid})", flush=True)
    for name in names:
        pid_file(settings, name).unlink(missing_ok=True)
    return running


# --- Ports -----------------------------------------------------------------------------------


def loopback_port(address: str, what: str) -> int:
    """The port of a ``127.0.0.1:<port>`` (or ``localhost:<port>``) address; the local
    servers listen on loopback only."""
    host, _, port = address.rpartition(":")
    if host not in ("127.0.0.1", "localhost") or not port.isdigit():
        raise StackError(f"the local stack serves {what} on 127.0.0.1:<port> only, not at {address!r}")
    return int(port)


def busy_ports(ports: Iterable[int]) -> list[int]:
    """Those of ``ports`` that another process holds on 127.0.0.1."""
    busy = []
    for port in ports:
        with socket.socket() as sock:
            # As the servers will: a port left in TIME_WAIT by a stopped server is free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                busy.append(port)
    return busy


def check_free(ports: Iterable[int], name: str) -> None:
    if busy := busy_ports(ports):
        raise StackError(
            f"{name}: port(s) {', '.join(map(str, busy))} on 127.0.0.1 already in use by another process "
            "(a stack with another state dir?)"
        )


def wait_ports_free(ports: Iterable[int], name: str, timeout: float = STOP_TIMEOUT_S) -> None:
    """Wait until no process holds ``ports``: a server killed a moment ago may still hold them
    while it exits, and starting it again meanwhile would fail on a busy port."""
    ports = list(ports)
    deadline = time.monotonic() + timeout
    while busy := busy_ports(ports):
        if time.monotonic() > deadline:
            raise StackError(
                f"{name}: port(s) {', '.join(map(str, busy))} on 127.0.0.1 still in use "
                f"{timeout:.0f} s after it stopped"
            )
        time.sleep(0.2)


def free_port_block(size: int) -> int:
    """First of ``size`` consecutive free ports on 127.0.0.1, for a second stack (e.g. tests)."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            base: int = sock.getsockname()[1]
        if base + size <= 65536 and not busy_ports(range(base, base + size)):
            return base
    raise StackError(f"found no {size} consecutive free ports on 127.0.0.1")
