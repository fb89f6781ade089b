"""The gateway's pure rules: each user's upload rate (a token bucket) and the region a photo
is stored in."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Per key (a user), ``burst`` requests at once and ``per_minute`` on average."""

    def __init__(self, per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = per_minute / 60.0, burst, clock
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key: str) -> float:
        """0 if ``key`` may go on (a token is spent), else the seconds until it may."""
        now = self.clock()
        bucket = self._buckets.setdefault(key, _Bucket(float(self.burst), now))
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate


EARTH_RADIUS_KM = 6371.0


def distance_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance between two (latitude, longitude) points (haversine)."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(h))


def valid_position(latitude: float | None, longitude: float | None) -> tuple[float, float] | None:
    """The position if both coordinates are given and on Earth; raises ValueError for half a
    position or one off the globe."""
    if latitude is None and longitude is None:
        return None
    if latitude is None or longitude is None:
        raise ValueError("latitude and longitude go together")
    if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        raise ValueError("latitude must be in [-90, 90] and longitude in [-180, 180]")
    return latitude, longitude


def choose_region(
    user_region: str | None,
    position: tuple[float, float] | None,
    regions: Mapping[str, str],
    locations: Mapping[str, tuple[float, float]],
    default: str,
) -> str:
    """The user's own region if they have one (their photos stay there), else the configured
    region (one of ``regions``, the region → bucket map) nearest ``position``, else ``default``."""
    if user_region and user_region in regions:
        return user_region
    located = {name: where for name, where in locations.items() if name in regions}
    if position is not None and located:
        return min(located, key=lambda name: distance_km(position, located[name]))
    return default
