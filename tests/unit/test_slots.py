"""Replica slots (core.slots): no two live processes of a service share an instance id."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from core.settings import PROJECT_ROOT
from core.slots import SlotTaken, claim_slot


def test_a_taken_instance_id_is_refused_and_free_again_once_released(tmp_path):
    first = claim_slot(tmp_path, "featurize", "2")
    with pytest.raises(
        SlotTaken, match=rf"instance id '2' is held by another live featurize process \(pid {os.getpid()};"
    ):
        claim_slot(tmp_path, "featurize", "2")
    assert claim_slot(tmp_path, "predict", "2").instance_id == "2"  # another service's slot 2
    first.release()
    assert claim_slot(tmp_path, "featurize", "2").instance_id == "2"


def test_without_an_instance_id_the_lowest_free_slot_is_taken(tmp_path):
    zero = claim_slot(tmp_path, "featurize")
    one = claim_slot(tmp_path, "featurize")
    assert (zero.instance_id, one.instance_id) == ("0", "1")
    zero.release()
    assert claim_slot(tmp_path, "featurize").instance_id == "0"  # a restarted replica gets its slot back
    with pytest.raises(SlotTaken):
        claim_slot(tmp_path, "featurize", "1")  # an explicit id held by an automatic one


HOLDER = """
import sys, time
from pathlib import Path
from core.slots import claim_slot
claim_slot(Path(sys.argv[1]), "preprocess", "3")
print("held", flush=True)
time.sleep(60)
"""


def test_a_second_process_on_a_taken_slot_refuses_to_start_until_the_first_dies(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        env = {
            **os.environ,
            "FRUITS_STATE_DIR": str(tmp_path),
            "FRUITS_INSTANCE_ID": "3",
            "FRUITS_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",  # never reached: it refuses before
            "FRUITS_METRICS_ENABLED": "false",
        }
        second = subprocess.run(
            [sys.executable, "-m", "services.preprocess"], cwd=PROJECT_ROOT, env=env,
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert second.returncode == 2, second.stderr
        assert (
            f"preprocess: instance id '3' is held by another live preprocess process (pid {holder.pid};"
            in second.stderr
        )
        assert "cannot reach Kafka" not in second.stderr
    finally:
        holder.send_signal(signal.SIGKILL)  # however it dies, the kernel releases its lock
        holder.wait()
    assert claim_slot(tmp_path, "preprocess", "3").instance_id == "3"
