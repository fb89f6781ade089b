"""The gateway's HTTP API (FastAPI; the contract with examples: ``API.md``). ``create_app``
takes its collaborators (store, producer, S3), so that unit tests run it without servers."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import swagger_ui_bundle
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict
from starlette.datastructures import UploadFile

from core import metrics
from core.catalog import load_types
from core.errors import Reason, RecordError
from core.imaging import open_image, sniff_content_type
from core.photos import LocationNotRemovable, new_photo_id, photo_event, without_location
from core.records import Feedback, ModelVersions, encode_record
from core.settings import Settings
from services.gateway.auth import TokenCache, parse_token, verify_secret
from services.gateway.limits import RateLimiter, choose_region, valid_position
from services.gateway.producer import NotDelivered
from services.gateway.store import Photo, Store, User

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
"""The web page (index.html and its assets), served at /."""
MULTIPART_OVERHEAD_BYTES = 64 * 1024
"""What a multipart body may hold besides the photo (boundaries, headers, the position fields)."""
RETRY_AFTER_BUSY_SECONDS = 1
"""Retry-After of a 503 when the in-flight limit is reached: uploads take about that long."""


class Notifier:
    """Event streams waiting for a photo's prediction, woken from the predictions thread."""

    def __init__(self) -> None:
        self._waiting: dict[str, set[asyncio.Event]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def subscribe(self, photo_id: str) -> asyncio.Event:
        waiter = asyncio.Event()
        self._waiting.setdefault(photo_id, set()).add(waiter)
        return waiter

    def unsubscribe(self, photo_id: str, waiter: asyncio.Event) -> None:
        waiters = self._waiting.get(photo_id)
        if waiters is not None:
            waiters.discard(waiter)
            if not waiters:
                del self._waiting[photo_id]

    def notify(self, photo_ids: list[str]) -> None:
        """Wake the streams of ``photo_ids``; callable from any thread."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake, photo_ids)

    def _wake(self, photo_ids: list[str]) -> None:
        for photo_id in photo_ids:
            for waiter in self._waiting.get(photo_id, ()):
                waiter.set()


@dataclass
class Gateway:
    """What the API works with."""

    settings: Settings
    store: Store
    send: Callable[[str, bytes, bytes], Awaitable[None]]
    """Produce (topic, key, value) and wait for the broker's acknowledgement (raises NotDelivered)."""
    s3: Callable[[], Any]
    """The boto3 client uploads go through (made on first use)."""
    ready: Callable[[], bool] = lambda: True
    """Whether the predictions reader is assigned and alive (/healthz)."""
    notifier: Notifier = field(default_factory=Notifier)
    in_flight: int = 0

    def __post_init__(self) -> None:
        self.tokens = TokenCache(self.settings.gateway_token_cache_seconds)
        self.rate = RateLimiter(self.settings.gateway_uploads_per_minute, self.settings.gateway_upload_burst)
        types = load_types()
        self.types = sorted(({"type": t, "common_name": f.common_name} for t, f in types.items()),
                            key=lambda entry: entry["common_name"])  # fmt: skip


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    correct: bool
    """Whether the answer (its fruit type) was right."""
    corrected_type: str | None = None
    """When wrong: the photo's fruit type, one of GET /v1/catalog/types."""


def problem(status: int, detail: str, **headers: str) -> HTTPException:
    return HTTPException(status_code=status, detail=detail, headers=headers or None)


def photo_view(photo: Photo) -> dict[str, Any]:
    """The photo object of the API."""
    return {
        "photo_id": photo.photo_id,
        "status": "pending" if photo.prediction is None else "done",
        "submitted_at": photo.submitted_at.isoformat(),
        "region": photo.region,
        "prediction": photo.prediction,
        "feedback": photo.feedback,
    }


def create_app(gateway: Gateway, lifespan: Callable[[], AbstractAsyncContextManager[None]] | None = None) -> FastAPI:
    """The API; ``lifespan`` starts and stops what it needs around serving (Kafka clients)."""

    @asynccontextmanager
    async def serving(_: FastAPI) -> AsyncIterator[None]:
        gateway.notifier.bind(asyncio.get_running_loop())
        if lifespan is None:
            yield
        else:
            async with lifespan():
                yield

    app = FastAPI(
        title="Fruits! gateway",
        summary="Send photos of fruit, get what fruit it is.",
        version="1",
        docs_url=None,  # served below with local assets, no CDN
        redoc_url=None,
        lifespan=serving,
    )
    settings, store = gateway.settings, gateway.store

    @app.middleware("http")
    async def measure(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            seconds = time.perf_counter() - started
            route = getattr(request.scope.get("route"), "path", None) or "other"
            metrics.GATEWAY_REQUESTS.labels(route, request.method, str(status)).inc()
            metrics.GATEWAY_REQUEST_SECONDS.labels(route).observe(seconds)
            # The path only: the query may hold a token (events) or a position, neither ever logged.
            log.info("%s %s %d %.0f ms", request.method, request.url.path, status, 1000 * seconds)

    async def authenticate(token: str) -> User:
        parsed = parse_token(token)
        if parsed is None:
            raise problem(401, "malformed token (expected <token id>.<secret>)", **{"WWW-Authenticate": "Bearer"})
        token_id, secret = parsed
        cached = gateway.tokens.get(token_id, token)
        found = await run_in_threadpool(store.credentials, token_id)
        if found is None:
            gateway.tokens.forget(token_id)
        elif cached == found[0].name or await run_in_threadpool(verify_secret, secret, found[1]):
            gateway.tokens.put(token_id, token, found[0].name)
            return found[0]
        raise problem(401, "invalid token", **{"WWW-Authenticate": "Bearer"})

    def bearer(request: Request) -> str | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None

    async def user(request: Request) -> User:
        token = bearer(request)
        if token is None:
            raise problem(401, "missing Authorization: Bearer <token>", **{"WWW-Authenticate": "Bearer"})
        return await authenticate(token)

    async def stream_user(request: Request, access_token: str | None = Query(None, include_in_schema=False)) -> User:
        # EventSource cannot send headers: this route alone also takes the token in the query.
        token = bearer(request) or access_token
        if not token:
            raise problem(
                401, "missing Authorization: Bearer <token> (or ?access_token=)", **{"WWW-Authenticate": "Bearer"}
            )
        return await authenticate(token)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        ok = gateway.ready()
        return JSONResponse({"status": "ok" if ok else "starting"}, status_code=200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/me", summary="Who the token belongs to")
    async def me(who: User = Depends(user)) -> dict[str, Any]:
        return {"user": who.name, "region": who.region}

    @app.get("/v1/catalog/types", summary="The fruit types, by common name (the choices of a correction)")
    async def catalog_types(_: User = Depends(user)) -> dict[str, Any]:
        return {"types": gateway.types}

    @app.post(
        "/v1/photos",
        status_code=202,
        summary="Send a photo (raw image body, or multipart field `photo`)",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "image/*": {"schema": {"type": "string", "format": "binary"}},
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["photo"],
                            "properties": {
                                "photo": {"type": "string", "format": "binary"},
                                "latitude": {"type": "number"},
                                "longitude": {"type": "number"},
                            },
                        }
                    },
                },
            }
        },
    )
    async def upload(
        request: Request,
        latitude: float | None = Query(None, description="Picks the nearest region; never stored"),
        longitude: float | None = Query(None, description="Picks the nearest region; never stored"),
        who: User = Depends(user),
    ) -> JSONResponse:
        if wait := gateway.rate.take(who.user_id):
            raise problem(429, "too many photos; try again later", **{"Retry-After": str(math.ceil(wait))})
        if gateway.in_flight >= settings.gateway_max_in_flight:
            raise problem(503, "busy; try again shortly", **{"Retry-After": str(RETRY_AFTER_BUSY_SECONDS)})
        gateway.in_flight += 1
        metrics.GATEWAY_IN_FLIGHT.inc()
        try:
            data, fields = await read_photo(request, settings)
            latitude = latitude if latitude is not None else fields.get("latitude")
            longitude = longitude if longitude is not None else fields.get("longitude")
            try:
                position = valid_position(latitude, longitude)
            except ValueError as exc:
                raise problem(422, str(exc)) from None
            region = choose_region(who.region, position, settings.region_buckets,
                                   settings.gateway_region_locations, settings.gateway_default_region)  # fmt: skip
            data, content_type = await run_in_threadpool(checked_photo, data, settings.max_image_pixels)
            photo_id = new_photo_id()
            submitted_at = datetime.now(timezone.utc)
            # Stored first: the prediction may be back before the producer's acknowledgement.
            await run_in_threadpool(store.add_photo, photo_id, who.user_id, region, submitted_at)
            try:
                event = await run_in_threadpool(
                    photo_event, settings, gateway.s3(), photo_id, who.user_id, region, data, content_type
                )
                await gateway.send(settings.topic_photos, photo_id.encode(), encode_record(event))
            except (NotDelivered, OSError) as exc:
                await run_in_threadpool(store.remove_photo, photo_id)
                log.warning("photo not sent: %s", exc)
                raise problem(503, "cannot store the photo now; try again", **{"Retry-After": "5"}) from None
        finally:
            gateway.in_flight -= 1
            metrics.GATEWAY_IN_FLIGHT.dec()
        return JSONResponse(
            {"photo_id": photo_id, "status": "pending", "region": region},
            status_code=202,
            headers={"Location": f"/v1/photos/{photo_id}"},
        )

    @app.get("/v1/photos", summary="My recent photos and their predictions, newest first")
    async def recent(limit: int = Query(20, ge=1, le=100), who: User = Depends(user)) -> dict[str, Any]:
        photos = await run_in_threadpool(store.recent, who.user_id, limit)
        return {"photos": [photo_view(photo) for photo in photos]}

    async def own_photo(who: User, photo_id: str) -> Photo:
        photo = await run_in_threadpool(store.photo, who.user_id, photo_id)
        if photo is None:  # someone else's photo is answered like one that does not exist
            raise problem(404, "no such photo")
        return photo

    @app.get("/v1/photos/{photo_id}", summary="One of my photos: its prediction, or pending")
    async def one(photo_id: str, who: User = Depends(user)) -> dict[str, Any]:
        return photo_view(await own_photo(who, photo_id))

    @app.get(
        "/v1/photos/{photo_id}/events",
        summary="Server-sent events: `prediction` with the photo object as soon as it is known",
        response_class=StreamingResponse,
    )
    async def events(photo_id: str, who: User = Depends(stream_user)) -> StreamingResponse:
        await own_photo(who, photo_id)
        return StreamingResponse(
            prediction_events(gateway, who, photo_id),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.post("/v1/photos/{photo_id}/feedback", status_code=202, summary="Was the answer right?")
    async def feedback(photo_id: str, verdict: FeedbackIn, who: User = Depends(user)) -> dict[str, str]:
        if verdict.correct and verdict.corrected_type is not None:
            raise problem(422, "corrected_type goes with correct: false only")
        if not verdict.correct and verdict.corrected_type not in {t["type"] for t in gateway.types}:
            raise problem(422, "correct: false needs corrected_type, one of GET /v1/catalog/types")
        photo = await own_photo(who, photo_id)
        if photo.prediction is None:
            raise problem(409, "the photo has no prediction yet")
        predicted = photo.prediction
        record = Feedback(
            photo_id=photo_id,
            user_id=who.user_id,
            region=photo.region,
            original_uri=photo.original_uri or "",
            given_at=datetime.now(timezone.utc),
            predicted_label=predicted["label"],
            correct=verdict.correct,
            model_versions=ModelVersions(**predicted["model_versions"]),
            predicted_type=predicted["fruit_type"],
            unsure=predicted["unsure"],
            corrected_type=verdict.corrected_type,
        )
        try:
            await gateway.send(settings.topic_feedback, photo_id.encode(), encode_record(record))
        except NotDelivered as exc:
            log.warning("feedback not sent: %s", exc)
            raise problem(503, "cannot store the feedback now; try again", **{"Retry-After": "5"}) from None
        stored = {"correct": verdict.correct, "corrected_type": verdict.corrected_type}
        await run_in_threadpool(store.set_feedback, photo_id, stored)
        verdict_label = "right" if verdict.correct else "wrong"
        metrics.FEEDBACK.labels(predicted["fruit_type"] or "unknown", verdict_label).inc()
        return {"status": "accepted"}

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} — API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )

    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets")
    app.mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="static")  # last: the API routes come first
    return app


async def read_photo(request: Request, settings: Settings) -> tuple[bytes, dict[str, float]]:
    """The photo's bytes (raw body or multipart field ``photo``) and the multipart's position
    fields; 413 past FRUITS_MAX_IMAGE_BYTES, 415 for a body that is not declared an image."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        body = await read_body(request, settings.max_image_bytes + MULTIPART_OVERHEAD_BYTES)

        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async with Request(request.scope, replay).form(max_files=1, max_fields=4) as form:
            part = form.get("photo")
            if not isinstance(part, UploadFile):
                raise problem(422, "multipart body without a file field `photo`")
            data = await part.read()
            try:
                fields = {name: float(str(form[name])) for name in ("latitude", "longitude") if form.get(name)}
            except ValueError:
                raise problem(422, "latitude and longitude must be numbers") from None
        if len(data) > settings.max_image_bytes:
            raise too_large(settings)
        return data, fields
    if not content_type.startswith("image/"):
        raise problem(415, "send the photo as the body with Content-Type image/*, or as multipart field `photo`")
    return await read_body(request, settings.max_image_bytes), {}


def too_large(settings: Settings) -> HTTPException:
    return problem(413, f"the photo is over the limit of {settings.max_image_bytes:,} bytes")


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it is known to pass ``limit`` bytes: never read whole first."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise problem(413, f"the body is over the limit of {limit:,} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise problem(413, f"the body is over the limit of {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def checked_photo(data: bytes, max_pixels: int) -> tuple[bytes, str]:
    """The photo without its location, and its type: its magic bytes and its header (read by
    Pillow) must be an image of a supported type (415), within the pixel limit (413)."""
    try:
        open_image(data, sniff_content_type(data), max_pixels)
    except RecordError as exc:
        status = 413 if exc.reason == Reason.IMAGE_TOO_LARGE else 415
        raise problem(status, f"not a photo we can read: {exc}") from None
    try:
        stripped, content_type = without_location(data)
    except LocationNotRemovable as exc:
        raise problem(422, str(exc)) from None
    assert content_type is not None  # sniffed above
    return stripped, content_type


async def prediction_events(gateway: Gateway, who: User, photo_id: str) -> AsyncIterator[str]:
    """``event: prediction`` once the photo has one (at once if it has), keep-alive comments meanwhile."""
    metrics.GATEWAY_SSE_CLIENTS.inc()
    waiter = gateway.notifier.subscribe(photo_id)  # before looking, so that no notification falls in between
    try:
        while True:
            photo = await run_in_threadpool(gateway.store.photo, who.user_id, photo_id)
            if photo is None:  # deleted meanwhile
                return
            if photo.prediction is not None:
                yield f"event: prediction\ndata: {json.dumps(photo_view(photo))}\n\n"
                return
            try:
                await asyncio.wait_for(waiter.wait(), gateway.settings.gateway_sse_keepalive_seconds)
                waiter.clear()
            except TimeoutError:
                yield ": keep-alive\n\n"
    finally:
        gateway.notifier.unsubscribe(photo_id, waiter)
        metrics.GATEWAY_SSE_CLIENTS.dec()
