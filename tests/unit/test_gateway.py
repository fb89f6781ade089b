"""The HTTP gateway without servers: tokens, the rate limiter, the region choice, and the API
(services/gateway/app.py) over an SQLite store with a recording producer and an in-memory S3."""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from core.records import Feedback, ModelVersions, PhotoEvent, PhotoRef, Prediction, ScoredLabel, decode_record
from core.settings import Settings
from services.gateway.app import Gateway, create_app
from services.gateway.auth import TokenCache, hash_secret, new_token, parse_token, verify_secret
from services.gateway.limits import RateLimiter, choose_region, distance_km, valid_position
from services.gateway.predictions import prediction_view
from services.gateway.producer import NotDelivered
from services.gateway.store import Store
from tests import images
from tests.unit.fakes import MemoryS3

REGIONS = {"eu": "b-eu", "us": "b-us", "ap": "b-ap"}
LOCATIONS = Settings().gateway_region_locations


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- tokens ------------------------------------------------------------------------------------


def test_a_token_verifies_against_its_hash_only() -> None:
    token_id, secret = new_token()
    assert parse_token(f"{token_id}.{secret}") == (token_id, secret)
    stored = hash_secret(secret)
    assert secret not in stored and stored.startswith("scrypt$")
    assert verify_secret(secret, stored)
    assert not verify_secret(secret[:-1] + ("A" if secret[-1] != "A" else "B"), stored)
    assert hash_secret(secret) != stored  # salted
    assert not verify_secret(secret, "argon2$whatever") and not verify_secret(secret, "scrypt$1$2")


@pytest.mark.parametrize("token", ["", "nodot", "zz.secretsecretsecretsecret", "0123456789abcdef.short", "."])
def test_malformed_tokens_are_refused_before_any_lookup(token: str) -> None:
    assert parse_token(token) is None


def test_the_token_cache_forgets_after_its_time_and_never_trusts_another_secret() -> None:
    clock = Clock()
    cache = TokenCache(30, clock)
    cache.put("id1", "id1.right-secret", "alice")
    assert cache.get("id1", "id1.right-secret") == "alice"
    assert cache.get("id1", "id1.wrong-secret") is None
    clock.now += 31
    assert cache.get("id1", "id1.right-secret") is None
    TokenCache(0, clock).put("id2", "id2.s", "bob")  # 0: no caching at all


# --- rate and region ---------------------------------------------------------------------------


def test_the_rate_limiter_allows_a_burst_then_the_average_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(per_minute=6, burst=3, clock=clock)  # one token every 10 s
    assert [limiter.take("alice") for _ in range(3)] == [0, 0, 0]
    assert limiter.take("alice") == pytest.approx(10)
    assert limiter.take("bob") == 0  # per user
    clock.now += 5
    assert limiter.take("alice") == pytest.approx(5)
    clock.now += 5
    assert limiter.take("alice") == 0


PARIS, NEW_YORK, TOKYO = (48.86, 2.35), (40.71, -74.0), (35.68, 139.69)


def test_the_nearest_configured_region_is_chosen_unless_the_user_has_one() -> None:
    assert distance_km(PARIS, NEW_YORK) == pytest.approx(5837, rel=0.01)
    assert choose_region(None, PARIS, REGIONS, LOCATIONS, "eu") == "eu"
    assert choose_region(None, NEW_YORK, REGIONS, LOCATIONS, "eu") == "us"
    assert choose_region(None, TOKYO, REGIONS, LOCATIONS, "eu") == "ap"
    assert choose_region("us", TOKYO, REGIONS, LOCATIONS, "eu") == "us"  # their photos stay in their region
    assert choose_region(None, None, REGIONS, LOCATIONS, "us") == "us"
    assert choose_region(None, NEW_YORK, {"eu": "b", "ap": "b2"}, LOCATIONS, "ap") == "eu"  # only configured ones


def test_half_a_position_or_one_off_the_globe_is_refused() -> None:
    assert valid_position(None, None) is None
    assert valid_position(1.5, 2.5) == (1.5, 2.5)
    for bad in ((1.0, None), (None, 1.0), (91.0, 0.0), (0.0, -181.0)):
        with pytest.raises(ValueError):
            valid_position(*bad)


# --- the API -----------------------------------------------------------------------------------


class Recorder:
    """A producer that records what it is given; ``fail`` makes the broker refuse."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.fail = False

    async def __call__(self, topic: str, key: bytes, value: bytes) -> None:
        if self.fail:
            raise NotDelivered("broker away")
        self.sent.append((topic, key, value))


@pytest.fixture
def api(tmp_path):
    settings = Settings(
        state_dir=tmp_path, kafka_security_protocol="PLAINTEXT", region_buckets=REGIONS, max_image_bytes=50_000,
        max_inline_image_bytes=5_000, gateway_upload_burst=8, gateway_max_in_flight=2,
    )  # fmt: skip
    store = Store(settings.gateway_database())
    recorder, s3 = Recorder(), MemoryS3()
    gateway = Gateway(settings, store, recorder, lambda: s3)
    with TestClient(create_app(gateway)) as client:
        client.gateway, client.store, client.recorder, client.s3 = gateway, store, recorder, s3
        yield client
    store.close()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def user(api, name: str, region: str | None = None) -> tuple[str, dict[str, str]]:
    created, token = api.store.add_user(name, region)
    return created.user_id, auth(token)


def upload(api, headers, data: bytes = b"", content_type: str = "image/jpeg", **params):
    return api.post("/v1/photos", content=data or images.jpeg(), headers={**headers, "Content-Type": content_type},
                    params=params)  # fmt: skip


def predict(api, photo_id: str, fruit_type: str = "banana") -> None:
    now = datetime.now(timezone.utc)
    prediction = Prediction(
        PhotoRef(photo_id, "u", now, now, "eu", f"s3://b-eu/originals/u/{photo_id}"), now, "Banana 1", 0.9,
        [ScoredLabel("Banana 1", 0.9)], ModelVersions("f", "p", "c"), fruit_type, 0.95, [ScoredLabel(fruit_type, 0.95)],
    )  # fmt: skip
    assert api.store.record_predictions([(photo_id, prediction_view(prediction), prediction.photo.original_uri)])


def test_no_token_a_malformed_one_or_a_wrong_one_is_401(api) -> None:
    _, headers = user(api, "alice")
    assert api.get("/v1/me", headers=headers).json() == {"user": "alice", "region": None}
    token = headers["Authorization"].split()[1]
    wrong = token[:-2] + ("xy" if not token.endswith("xy") else "zz")
    unknown_id = auth("0" * 16 + "." + "s" * 40)
    for bad in ({}, auth("nonsense"), auth(wrong), {"Authorization": f"Basic {token}"}, unknown_id):
        answer = api.get("/v1/me", headers=bad)
        assert answer.status_code == 401 and answer.headers["WWW-Authenticate"] == "Bearer"
        assert answer.json()["detail"]
    assert api.get("/v1/me", headers=headers).status_code == 200  # the cached good token still works


def test_a_photo_is_sent_as_the_authenticated_user_without_location_in_the_nearest_region(api) -> None:
    user_id, headers = user(api, "alice")
    answer = upload(api, headers, images.located_jpeg(), latitude=TOKYO[0], longitude=TOKYO[1], user_id="mallory")
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["status"] == "pending" and body["region"] == "ap"
    assert answer.headers["Location"] == f"/v1/photos/{body['photo_id']}"
    [(topic, key, value)] = api.recorder.sent
    event = decode_record(PhotoEvent, value)
    assert topic == "fruits.photos" and key == body["photo_id"].encode()
    assert (event.photo_id, event.user_id, event.region) == (body["photo_id"], user_id, "ap")
    assert event.content_type == "image/jpeg" and event.image is not None  # under the 5,000-byte inline limit
    assert [m for m in images.LOCATION_MARKERS if m in event.image] == []
    photo = api.get(f"/v1/photos/{body['photo_id']}", headers=headers).json()
    assert photo["status"] == "pending" and photo["prediction"] is None and photo["region"] == "ap"


def test_a_large_photo_is_uploaded_to_the_users_prefix_by_multipart(api) -> None:
    user_id, headers = user(api, "bob", region="us")
    buffer = io.BytesIO()
    images.noise(150, 150).save(buffer, "JPEG")
    big = buffer.getvalue()  # over the inline limit
    assert len(big) > 5_000
    answer = api.post("/v1/photos", headers=headers, files={"photo": ("a.jpg", big, "image/jpeg")},
                      data={"latitude": str(PARIS[0]), "longitude": str(PARIS[1])})  # fmt: skip
    assert answer.status_code == 202, answer.text
    event = decode_record(PhotoEvent, api.recorder.sent[0][2])
    assert event.region == "us"  # bob's own region wins over his position
    assert event.image is None and event.image_uri.startswith(f"s3://b-us/uploads/{user_id}/")
    assert Image.open(io.BytesIO(next(iter(api.s3.objects.values())))).size == (150, 150)


def test_not_an_image_is_415_and_too_large_is_413(api) -> None:
    _, headers = user(api, "alice")
    assert upload(api, headers, images.PDF, "image/jpeg").status_code == 415  # the header lies: magic bytes
    assert upload(api, headers, b"\x89PNG\r\n\x1a\n" + b"junk" * 10, "image/png").status_code == 415  # not Pillow's
    assert upload(api, headers, images.jpeg(), "text/plain").status_code == 415
    assert upload(api, headers, b"\xff" * 50_001).status_code == 413
    multipart = api.post("/v1/photos", headers=headers, files={"photo": ("x.jpg", b"\xff" * 50_001, "image/jpeg")})
    assert multipart.status_code == 413
    assert api.post("/v1/photos", headers=headers, files={"other": ("x.jpg", b"x", "image/jpeg")}).status_code == 422
    assert upload(api, headers, latitude=1.0).status_code == 422  # half a position
    assert api.recorder.sent == []


def test_over_the_rate_is_429_and_over_the_in_flight_limit_is_503(api) -> None:
    _, headers = user(api, "alice")
    _, other = user(api, "carol")
    answers = [upload(api, headers, images.PDF) for _ in range(9)]  # refused photos count too
    assert [a.status_code for a in answers] == [415] * 8 + [429]
    assert int(answers[-1].headers["Retry-After"]) >= 1
    api.gateway.in_flight = api.gateway.settings.gateway_max_in_flight  # as if two uploads were under way
    busy = upload(api, other)
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"
    api.gateway.in_flight = 0
    assert upload(api, other).status_code == 202


def test_an_unacknowledged_photo_is_503_and_not_kept(api) -> None:
    _, headers = user(api, "alice")
    api.recorder.fail = True
    assert upload(api, headers).status_code == 503
    assert api.get("/v1/photos", headers=headers).json() == {"photos": []}


def test_another_users_photo_is_404_like_a_missing_one(api) -> None:
    _, alice = user(api, "alice")
    _, bob = user(api, "bob")
    photo_id = upload(api, alice).json()["photo_id"]
    assert api.get(f"/v1/photos/{photo_id}", headers=bob).status_code == 404
    assert api.get("/v1/photos/nope", headers=bob).json() == {"detail": "no such photo"}
    assert api.get(f"/v1/photos/{photo_id}/events", headers=bob).status_code == 404
    assert api.post(f"/v1/photos/{photo_id}/feedback", headers=bob, json={"correct": True}).status_code == 404
    assert api.get("/v1/photos", headers=bob).json() == {"photos": []}


def test_history_is_newest_first_with_predictions(api) -> None:
    _, headers = user(api, "alice")
    ids = [upload(api, headers).json()["photo_id"] for _ in range(3)]
    predict(api, ids[0])
    photos = api.get("/v1/photos", headers=headers, params={"limit": 2}).json()["photos"]
    assert [p["photo_id"] for p in photos] == ids[::-1][:2]
    first = api.get(f"/v1/photos/{ids[0]}", headers=headers).json()
    assert first["status"] == "done" and first["prediction"]["label"] == "Banana 1"
    assert first["prediction"]["top5_types"] == [{"label": "banana", "confidence": 0.95}]
    assert set(first["prediction"]["model_versions"]) == {"featurizer_id", "pca_version", "classifier_version"}


def test_the_event_stream_sends_a_known_prediction_at_once_with_the_token_in_the_query(api) -> None:
    _, headers = user(api, "alice")
    photo_id = upload(api, headers).json()["photo_id"]
    predict(api, photo_id)
    token = headers["Authorization"].split()[1]
    with api.stream("GET", f"/v1/photos/{photo_id}/events", params={"access_token": token}) as stream:
        assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
        text = "".join(stream.iter_text())
    event, data = text.strip().split("\n")
    assert event == "event: prediction"
    assert json.loads(data.removeprefix("data: "))["prediction"]["fruit_type"] == "banana"
    assert api.get(f"/v1/photos/{photo_id}", params={"access_token": token}).status_code == 401  # events only


def test_feedback_needs_a_prediction_and_a_catalog_type_and_is_produced(api) -> None:
    user_id, headers = user(api, "alice")
    photo_id = upload(api, headers).json()["photo_id"]
    url = f"/v1/photos/{photo_id}/feedback"
    assert api.post(url, headers=headers, json={"correct": True}).status_code == 409
    predict(api, photo_id)
    assert api.post(url, headers=headers, json={"correct": False, "corrected_type": "dragon"}).status_code == 422
    assert api.post(url, headers=headers, json={"correct": False}).status_code == 422
    assert api.post(url, headers=headers, json={"correct": True, "corrected_type": "apple"}).status_code == 422
    types = api.get("/v1/catalog/types", headers=headers).json()["types"]
    names = [t["common_name"] for t in types]
    assert names == sorted(names) and {"type": "apple", "common_name": "Apple"} in types
    answer = api.post(url, headers=headers, json={"correct": False, "corrected_type": "apple"})
    assert answer.status_code == 202 and answer.json() == {"status": "accepted"}
    topic, key, value = api.recorder.sent[-1]
    record = decode_record(Feedback, value)
    assert topic == "fruits.feedback" and key == photo_id.encode()
    assert (record.user_id, record.predicted_type, record.corrected_type, record.correct) == (
        user_id, "banana", "apple", False)  # fmt: skip
    assert record.original_uri.endswith(photo_id) and record.model_versions == ModelVersions("f", "p", "c")
    api.post(url, headers=headers, json={"correct": True})  # the last one wins
    assert api.get(f"/v1/photos/{photo_id}", headers=headers).json()["feedback"] == {
        "correct": True, "corrected_type": None}  # fmt: skip


def test_docs_metrics_and_health_are_served_locally(api) -> None:
    page = api.get("/docs").text
    assert "/docs-assets/swagger-ui-bundle.js" in page and "cdn" not in page.lower()
    assert api.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    assert "/v1/photos" in api.get("/openapi.json").json()["paths"]
    _, headers = user(api, "alice")
    api.get("/v1/me", headers=headers)
    exposition = api.get("/metrics").text
    assert 'fruits_gateway_requests_total{method="GET",route="/v1/me",status="200"}' in exposition
    assert "fruits_gateway_in_flight" in exposition and "fruits_gateway_sse_clients" in exposition
    assert api.get("/healthz").json() == {"status": "ok"}


def test_the_predictions_reader_keeps_a_batch_through_a_database_outage(tmp_path) -> None:
    from core.kafka import Backoff
    from services.gateway.predictions import PredictionFollower

    class FlakyStore:
        def __init__(self) -> None:
            self.calls = 0

        def record_predictions(self, found):
            self.calls += 1
            if self.calls == 1:
                raise OSError("database away")
            return [photo_id for photo_id, _, _ in found]

    store = FlakyStore()
    follower = PredictionFollower(Settings(state_dir=tmp_path), store, lambda ids: None)  # type: ignore[arg-type]
    batch = [("p1", {"label": "x"}, "s3://b/k")]
    assert follower._store(batch, Backoff(0.01, 0.01)) == ["p1"] and store.calls == 2
