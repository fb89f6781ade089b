"""API tokens: ``<token_id>.<secret>``, printed once by ``fruits users add``. The store keeps
the id and a scrypt hash of the secret (never the secret), found by the id; a verified token
is trusted for a short while (``TokenCache``) so that a busy user does not cost a hash per request."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
"""scrypt's cost (16 MiB, ~50 ms a hash): OWASP's minimum for password storage. Our secrets are
random 256-bit values, so the hash guards a leaked database, not a guessable password."""
TOKEN_ID = re.compile(r"^[0-9a-f]{16}$")


def new_token() -> tuple[str, str]:
    """(token id, secret) of a new token; the token a client sends is ``f"{id}.{secret}"``."""
    return secrets.token_hex(8), secrets.token_urlsafe(32)


def parse_token(token: str) -> tuple[str, str] | None:
    """(token id, secret) of a well-formed token, else None."""
    token_id, dot, secret = token.partition(".")
    if not dot or not TOKEN_ID.match(token_id) or not 16 <= len(secret) <= 128:
        return None
    return token_id, secret


def _scrypt(secret: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, n=n, r=r, p=p, maxmem=2 * 128 * r * n, dklen=32)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hash_secret(secret: str) -> str:
    """``scrypt$n$r$p$salt$hash`` (base64): the parameters travel with the hash, so they can grow."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(secret, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_secret(secret: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        actual = _scrypt(secret, base64.b64decode(salt), int(n), int(r), int(p))
    except ValueError:  # a malformed stored hash verifies nothing
        return False
    return hmac.compare_digest(actual, base64.b64decode(digest))


@dataclass(frozen=True)
class _Verified:
    fingerprint: bytes
    user: str
    until: float


class TokenCache:
    """Token id → the user its token was verified for, for ``ttl_seconds``. Keyed by the id and
    checked against a fast hash of the whole token, so a wrong secret never rides on a cached id."""

    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.monotonic, max_entries: int = 10_000):
        self.ttl, self.clock, self.max_entries = ttl_seconds, clock, max_entries
        self._entries: dict[str, _Verified] = {}

    @staticmethod
    def _fingerprint(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def get(self, token_id: str, token: str) -> str | None:
        entry = self._entries.get(token_id)
        if entry is None or entry.until < self.clock():
            return None
        return entry.user if hmac.compare_digest(entry.fingerprint, self._fingerprint(token)) else None

    def put(self, token_id: str, token: str, user: str) -> None:
        if self.ttl <= 0:
            return
        if len(self._entries) >= self.max_entries:  # bounded: drop the expired, else start afresh
            now = self.clock()
            self._entries = {k: v for k, v in self._entries.items() if v.until >= now}
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
        self._entries[token_id] = _Verified(self._fingerprint(token), user, self.clock() + self.ttl)

    def forget(self, token_id: str) -> None:
        self._entries.pop(token_id, None)
