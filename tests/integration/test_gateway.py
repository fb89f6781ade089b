"""The HTTP gateway on the real stack: the gateway process, the five services, Kafka and
SeaweedFS. Its limits (401, 413, 415, 429), users' photos kept apart (404), a prediction over
Server-Sent Events from another replica than the one sent to, feedback on fruits.feedback,
100 concurrent uploads from 10 users each answered with exactly one prediction, and
`fruits users delete`."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from core.datasets import list_images
from core.records import Feedback, decode_record
from core.s3 import s3_client
from core.settings import PROJECT_ROOT, Settings
from services.gateway.store import Store
from tests import images
from tests.integration import as_identity
from tools.client import PredictionReader
from tools.services import GATEWAY, free_port_offset, start_service, start_services, stop_service, stop_services
from tools.services import wait_ready
from tools.stack.supervisor import free_port_block

pytestmark = pytest.mark.integration

DATA = PROJECT_ROOT.parent / "shared" / "data" / "fruits360"
MAX_IMAGE_BYTES = 200_000
"""The gateway's size limit here (its own setting): a 413 costs a small body."""
INLINE_BYTES = 3_500
"""Below the size of many sample photos: a good share of them travels by upload."""
BURST = 12
PREDICTION_TIMEOUT = 180  # generous: 2 shared cores, and the first photo into a fresh bucket waits for volumes


@pytest.fixture(scope="module")
def services(trained: Settings, tmp_path_factory: pytest.TempPathFactory):
    running = start_services(tmp_path_factory.mktemp("logs"), port_offset=free_port_offset(300))
    yield running
    stop_services(running)


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('gateway') / 'gateway.db'}"


@contextmanager
def running_gateway(database: str, log_dir: Path) -> Iterator[str]:
    """A gateway replica on the store ``database``: its base URL; stopped with SIGTERM, it must exit cleanly."""
    port = free_port_block(1)
    env = {
        "FRUITS_GATEWAY_PORT": str(port),
        "FRUITS_GATEWAY_DATABASE_URL": database,
        "FRUITS_MAX_IMAGE_BYTES": str(MAX_IMAGE_BYTES),
        "FRUITS_MAX_INLINE_IMAGE_BYTES": str(INLINE_BYTES),
        "FRUITS_GATEWAY_UPLOAD_BURST": str(BURST),
        "FRUITS_GATEWAY_UPLOADS_PER_MINUTE": "1",  # no refill while a test counts
        "FRUITS_GATEWAY_MAX_IN_FLIGHT": "100",
    }
    process = start_service(GATEWAY, log_dir, env)
    try:
        wait_ready(process, timeout=120)
        yield f"http://127.0.0.1:{port}"
    finally:
        code = stop_service(process)
        log = process.log_path.read_text()
        assert code == 0, f"the gateway did not stop cleanly ({code}): {log[-3000:]}"
        assert "access_token" not in log and "latitude" not in log, "a token or a position was logged"


@pytest.fixture(scope="module")
def gateway(services, database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_gateway(database, tmp_path_factory.mktemp("gateway-logs")) as url:
        yield url


def add_user(database: str, name: str) -> str:
    """`fruits users add NAME` (as a user would run it): the token it prints."""
    done = subprocess.run(
        [sys.executable, "-m", "tools.cli", "users", "add", name],
        capture_output=True, text=True, timeout=120, check=True,
        env={**os.environ, "FRUITS_GATEWAY_DATABASE_URL": database},
    )  # fmt: skip
    return done.stdout.strip()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def photos(count: int) -> list[Path]:
    return list_images(DATA / "Test", per_class=1).paths[:count]


def test_limits_wrong_tokens_and_the_docs(gateway: str, database: str) -> None:
    token = add_user(database, "limits")
    with httpx.Client(base_url=gateway, timeout=60) as http:
        assert http.get("/v1/me").status_code == 401
        wrong = token.split(".")[0] + ".not-the-secret-of-this-token"
        answer = http.get("/v1/me", headers=bearer(wrong))
        assert answer.status_code == 401 and "detail" in answer.json()
        assert http.get("/v1/me", headers=bearer(token)).json() == {"user": "limits", "region": None}
        jpeg = {**bearer(token), "Content-Type": "image/jpeg"}
        assert http.post("/v1/photos", content=images.PDF, headers=jpeg).status_code == 415
        assert http.post("/v1/photos", content=b"hello", headers={**bearer(token), "Content-Type": "text/plain"}
                         ).status_code == 415  # fmt: skip
        assert http.post("/v1/photos", content=b"\xff" * (MAX_IMAGE_BYTES + 1), headers=jpeg).status_code == 413
        statuses = [http.post("/v1/photos", content=images.PDF, headers=jpeg).status_code for _ in range(BURST)]
        assert statuses[-1] == 429 and statuses.count(429) >= 1, statuses  # 3 refused above counted already
        limited = http.post("/v1/photos", content=images.PDF, headers=jpeg)
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        docs = http.get("/docs").text
        assert "/docs-assets/swagger-ui-bundle.js" in docs and http.get("/docs-assets/swagger-ui.css").is_success
        exposition = http.get("/metrics").text
        assert 'fruits_gateway_requests_total{method="POST",route="/v1/photos",status="429"}' in exposition


def read_events(http: httpx.Client, photo_id: str, token: str) -> dict:
    """The photo object of the stream's ``prediction`` event (the token in the query, as EventSource sends it)."""
    with http.stream("GET", f"/v1/photos/{photo_id}/events", params={"access_token": token},
                     timeout=httpx.Timeout(10, read=PREDICTION_TIMEOUT)) as stream:  # fmt: skip
        assert stream.status_code == 200
        event = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                assert event == "prediction"
                return json.loads(line.removeprefix("data: "))
    raise AssertionError("the stream closed without a prediction")


def test_a_prediction_over_sse_kept_from_others_and_feedback_on_its_topic(
    trained: Settings, gateway: str, database: str, tmp_path: Path
) -> None:
    """The photo is sent to one replica, its prediction streamed by another (sharing the store)."""
    alice, bob = add_user(database, "alice"), add_user(database, "bob")
    photo = sorted((DATA / "Test" / "Banana 1").iterdir())[0]
    feedback = PredictionReader(trained, topic=trained.topic_feedback)  # as admin, from the end
    try:
        with running_gateway(database, tmp_path) as replica, httpx.Client(base_url=gateway, timeout=60) as http:
            answer = http.post("/v1/photos", content=photo.read_bytes(),
                               headers={**bearer(alice), "Content-Type": "image/jpeg"},
                               params={"latitude": 40.7, "longitude": -74.0})  # New York: us  # fmt: skip
            assert answer.status_code == 202, answer.text
            photo_id = answer.json()["photo_id"]
            assert answer.json()["region"] == "us" and answer.headers["Location"] == f"/v1/photos/{photo_id}"
            assert http.get(f"/v1/photos/{photo_id}", headers=bearer(bob)).status_code == 404
            assert http.get(f"/v1/photos/{photo_id}/events", params={"access_token": bob}).status_code == 404

            with httpx.Client(base_url=replica, timeout=60) as other:
                shown = read_events(other, photo_id, alice)
            assert shown["status"] == "done" and shown["prediction"]["fruit_type"] == "banana"
            assert shown["region"] == "us" and shown["prediction"]["fruit"]["common_name"] == "Banana"
            assert http.get(f"/v1/photos/{photo_id}", headers=bearer(alice)).json()["prediction"] == shown["prediction"]
            assert http.get(f"/v1/photos/{photo_id}", headers=bearer(bob)).status_code == 404

            verdict = {"correct": False, "corrected_type": "apple"}
            answer = http.post(f"/v1/photos/{photo_id}/feedback", json=verdict, headers=bearer(alice))
            assert answer.status_code == 202, answer.text
            assert http.get(f"/v1/photos/{photo_id}", headers=bearer(alice)).json()["feedback"] == verdict
            assert "fruits_feedback_total" in http.get("/metrics").text
        records = [decode_record(Feedback, msg.value()) for msg in feedback.messages(timeout=15)]
    finally:
        feedback.close()
    [record] = [r for r in records if r.photo_id == photo_id]
    assert (record.correct, record.predicted_type, record.corrected_type, record.region) == (
        False, "banana", "apple", "us")  # fmt: skip
    assert record.original_uri.startswith(f"s3://{trained.region_buckets['us']}/originals/{record.user_id}/")


def test_100_concurrent_uploads_from_10_users_get_one_prediction_each(trained: Settings, gateway, database):
    store = Store(database)
    try:
        tokens = [store.add_user(f"load-{n}")[1] for n in range(10)]
    finally:
        store.close()
    sample = photos(100)
    predictions = PredictionReader(as_identity(trained, "client"))

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=gateway, timeout=120) as http:
            return await asyncio.gather(*(
                http.post("/v1/photos", content=path.read_bytes(),
                          headers={**bearer(tokens[i % 10]), "Content-Type": "image/jpeg"})
                for i, path in enumerate(sample)
            ))  # fmt: skip

    try:
        answers = asyncio.run(send_all())
        assert [a.status_code for a in answers] == [202] * 100, [a.text for a in answers if a.status_code != 202]
        sent = {a.json()["photo_id"] for a in answers}
        assert len(sent) == 100
        seen: dict[str, int] = {}
        deadline = time.monotonic() + PREDICTION_TIMEOUT
        while not sent <= set(seen) and time.monotonic() < deadline:
            for prediction in predictions.predictions(timeout=5):
                seen[prediction.photo.photo_id] = seen.get(prediction.photo.photo_id, 0) + 1
        for prediction in predictions.predictions(timeout=5):  # a duplicate would come right behind
            seen[prediction.photo.photo_id] = seen.get(prediction.photo.photo_id, 0) + 1
    finally:
        predictions.close()
    assert {photo_id: seen.get(photo_id, 0) for photo_id in sent} == dict.fromkeys(sent, 1)

    with httpx.Client(base_url=gateway, timeout=60) as http:
        shown = {}
        deadline = time.monotonic() + 60  # the gateway stores what the topic already has
        while len(shown) < 100 and time.monotonic() < deadline:
            for token in tokens:
                for photo in http.get("/v1/photos", params={"limit": 20}, headers=bearer(token)).json()["photos"]:
                    if photo["status"] == "done":
                        shown[photo["photo_id"]] = photo
            time.sleep(1)
    assert set(shown) == sent


def test_deleting_a_user_removes_their_token_history_and_stored_photos(trained: Settings, gateway, database):
    token = add_user(database, "carol")
    buffer = io.BytesIO()
    images.noise(150, 150).save(buffer, "JPEG", exif=images.located_exif())
    big = buffer.getvalue()
    assert INLINE_BYTES < len(big) < MAX_IMAGE_BYTES  # travels by upload
    with httpx.Client(base_url=gateway, timeout=60) as http:
        answer = http.post("/v1/photos", content=big, headers={**bearer(token), "Content-Type": "image/jpeg"})
        assert answer.status_code == 202, answer.text
        photo_id = answer.json()["photo_id"]
        shown = read_events(http, photo_id, token)
    store = Store(database)
    try:
        user_id = store.user("carol").user_id
    finally:
        store.close()
    s3 = s3_client(trained)  # admin: lists what the user left
    bucket = trained.region_buckets[shown["region"]]

    def stored() -> list[str]:
        keys = []
        for prefix in (f"uploads/{user_id}/", f"originals/{user_id}/"):
            keys += [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
        return keys

    assert len(stored()) == 2, stored()  # the upload and ingest's original
    done = subprocess.run(
        [sys.executable, "-m", "tools.cli", "users", "delete", "carol"], capture_output=True, text=True, timeout=120,
        env={**os.environ, "FRUITS_GATEWAY_DATABASE_URL": database},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "What stays" in done.stdout and user_id in done.stdout and "lake" in done.stdout
    assert stored() == []
    with httpx.Client(base_url=gateway, timeout=60) as http:
        assert http.get("/v1/me", headers=bearer(token)).status_code == 401
