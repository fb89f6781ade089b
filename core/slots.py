"""Replica slots: the instance id a service process runs as, held while the process lives.

The instance id is part of the process's Kafka ``transactional.id`` and ``group.instance.id``
(static membership). It must be stable per replica, so that a restarted replica takes its
partitions back at once and its ``init_transactions`` fences its own zombie; and no two live
processes may share it, or the second fences the first ("static consumer fenced", a fatal
error), which then fences the second when restarted, and so on.

On one machine a lock file per (service, instance id) under ``<state dir>/slots`` enforces
this: ``flock``, which the kernel releases when the process dies however it dies (SIGKILL
included), so a file left behind never blocks a restart, and a second live process on a taken
slot is refused before it reaches Kafka. Each pod of a cluster has its own file system, so
there the orchestrator must give each replica its own slot: a StatefulSet runs at most one pod
per ordinal (``featurize-0``, ``featurize-1``, …), whose ordinal or name is the instance id
(``FRUITS_INSTANCE_ID`` from the downward API).
"""

from __future__ import annotations

import fcntl
import itertools
import os
from dataclasses import dataclass
from pathlib import Path


class SlotTaken(RuntimeError):
    """The instance id asked for is held by another live process of the same service."""


@dataclass(frozen=True)
class Slot:
    """An instance id held by this process: the lock is kept until ``release`` or the process ends."""

    service: str
    instance_id: str
    path: Path
    fd: int

    def release(self) -> None:
        os.close(self.fd)


def claim_slot(state_dir: Path, service: str, instance_id: str = "") -> Slot:
    """Hold ``instance_id`` of ``service`` on this machine, or, if it is empty, the lowest
    numbered slot (0, 1, …) that no live process holds. Raises SlotTaken if the instance id
    asked for is held."""
    folder = state_dir / "slots"
    folder.mkdir(parents=True, exist_ok=True)
    if instance_id:
        slot = _try_lock(folder, service, instance_id)
        if isinstance(slot, Slot):
            return slot
        raise SlotTaken(
            f"instance id {instance_id!r} is held by another live {service} process ({slot}; lock "
            f"{folder / _file_name(service, instance_id)}): a second process on it would fence the first. "
            "Stop that one, give this one another FRUITS_INSTANCE_ID, or leave it empty to take a free slot."
        )
    for number in itertools.count():
        slot = _try_lock(folder, service, str(number))
        if isinstance(slot, Slot):
            return slot
    raise AssertionError("unreachable")


def _file_name(service: str, instance_id: str) -> str:
    return f"{service}-{instance_id}.lock"


def _try_lock(folder: Path, service: str, instance_id: str) -> Slot | str:
    """The slot if its lock could be taken, else who holds it."""
    path = folder / _file_name(service, instance_id)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
        os.close(fd)
        return f"pid {holder}" if holder else "pid unknown"
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return Slot(service, instance_id, path, fd)
