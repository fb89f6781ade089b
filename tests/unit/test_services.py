"""`fruits services`' supervisor, with stand-in processes and a stand-in clock: a service
that exits is started again on its slot, after a wait that doubles while it keeps exiting."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.services import ServiceProcess, Supervisor, start_services


class Process:
    def __init__(self) -> None:
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode


def service(name: str, slot: int | None = 0) -> ServiceProcess:
    return ServiceProcess(name, Process(), Path(f"/logs/{name}.log"), None, 0, slot)  # type: ignore[arg-type]


class Harness:
    def __init__(self) -> None:
        self.now = 0.0
        self.lines: list[str] = []
        self.started: list[tuple[str, int | None]] = []
        first = service("featurize", 1)
        self.supervisor = Supervisor(
            {first.key: first, "predict": service("predict")}, Path("/logs"),
            report=self.lines.append, clock=lambda: self.now, start=self.start,
        )  # fmt: skip

    def start(self, name, log_dir, env, port_offset, slot):
        self.started.append((name, slot))
        return service(name, slot)

    def crash(self, key: str, code: int = 75) -> None:
        self.supervisor.services[key].process.returncode = code

    def at(self, now: float) -> None:
        self.now = now
        self.supervisor.check()


def test_an_exited_service_is_started_again_on_its_slot_after_a_doubling_wait():
    h = Harness()
    h.at(0)
    h.crash("featurize-1")
    h.at(10)
    assert h.lines == [
        "featurize-1 exited with status 75 after 10 s; starting it again in 1 s (see /logs/featurize.log)"
    ]
    h.at(10.5)
    assert h.started == []
    h.at(11)
    assert h.started == [("featurize", 1)] and h.lines[-1] == "featurize-1 started again (restart 1)"
    delays = []
    for _ in range(8):  # it keeps exiting at once: 2, 4, … up to 60 s
        h.crash("featurize-1")
        h.at(h.now)
        delays.append(float(h.lines[-1].split(" in ")[1].split(" s ")[0]))
        h.at(h.now + delays[-1])
    assert delays == [2, 4, 8, 16, 32, 60, 60, 60]
    assert h.supervisor.restarts == {"featurize-1": 9}
    h.crash("featurize-1")
    h.at(h.now)  # seen, not started again yet
    assert h.supervisor.exits == {"featurize-1": 10} and h.supervisor.restarts == {"featurize-1": 9}
    assert h.supervisor.services["predict"].process.poll() is None and ("predict", 0) not in h.started


def test_a_service_that_ran_a_while_is_started_again_after_the_shortest_wait():
    h = Harness()
    h.at(0)
    for _ in range(3):
        h.crash("predict", 1)
        h.at(h.now)
        h.at(h.now + 10)
    h.crash("predict", 1)
    h.at(h.now + 120)  # it ran two minutes this time
    assert h.lines[-1].endswith("starting it again in 1 s (see /logs/predict.log)")


def test_replicas_are_checked_before_anything_starts(tmp_path):
    with pytest.raises(ValueError, match="no such service: nope"):
        start_services(tmp_path, replicas={"nope": 2})
    with pytest.raises(ValueError, match="replicas must be 1 to 10"):
        start_services(tmp_path, replicas={"featurize": 11})
