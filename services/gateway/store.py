"""The gateway's store (SQLAlchemy: SQLite by default, any URL by configuration): users and
their token hashes, and each user's photo history (photo id, region, when, the prediction
once known, the user's feedback). Replicas share it when it is a server database."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Index,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from services.gateway.auth import hash_secret, new_token

USER_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
"""User names: lower-case letters, digits, ``.``, ``_``, ``-``; at most 64 characters."""

metadata = MetaData()
users = Table(
    "gateway_users",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("user_id", String(64), nullable=False, unique=True),
    Column("token_id", String(32), nullable=False, unique=True),
    Column("token_hash", String(256), nullable=False),
    Column("region", String(32), nullable=True),
    Column("created_at", DateTime, nullable=False),
)
photos = Table(
    "gateway_photos",
    metadata,
    Column("photo_id", String(64), primary_key=True),
    Column("user_id", String(64), nullable=False),
    Column("region", String(32), nullable=False),
    Column("submitted_at", DateTime, nullable=False),
    Column("original_uri", String(1024), nullable=True),
    Column("prediction", Text, nullable=True),  # as the API shows it (JSON), once it arrived
    Column("feedback", Text, nullable=True),
    Index("gateway_photos_by_user", "user_id", "submitted_at"),
)


class UserExists(ValueError):
    pass


@dataclass(frozen=True)
class User:
    name: str
    user_id: str
    """What the pipeline and the lake know the user by (PhotoEvent.user_id, ``uploads/<user_id>/``)."""
    region: str | None
    created_at: datetime


@dataclass(frozen=True)
class Photo:
    photo_id: str
    user_id: str
    region: str
    submitted_at: datetime
    original_uri: str | None
    prediction: dict[str, Any] | None
    feedback: dict[str, Any] | None


def _utc(value: datetime) -> datetime:
    """Stored naive in UTC (SQLite keeps no zone): read back as aware UTC."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _naive(value: datetime) -> datetime:
    return value.astimezone(timezone.utc).replace(tzinfo=None)


def _user(row: Any) -> User:
    return User(row.name, row.user_id, row.region, _utc(row.created_at))


def _photo(row: Any) -> Photo:
    return Photo(
        row.photo_id,
        row.user_id,
        row.region,
        _utc(row.submitted_at),
        row.original_uri,
        json.loads(row.prediction) if row.prediction else None,
        json.loads(row.feedback) if row.feedback else None,
    )


def _sqlite_pragmas(connection: Any, _: Any) -> None:
    # WAL: readers never wait for the writer; busy_timeout: writers (gateway, CLI) wait for each other.
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


class Store:
    def __init__(self, url: str) -> None:
        self.engine: Engine = create_engine(url, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # --- users ---------------------------------------------------------------------------

    def add_user(self, name: str, region: str | None = None) -> tuple[User, str]:
        """A new user and their token (``<token_id>.<secret>``), which is not kept: show it once."""
        if not USER_NAME.match(name):
            raise ValueError(f"user name {name!r}: use 1 to 64 of a-z 0-9 . _ - (starting with a letter or digit)")
        token_id, secret = new_token()
        user = User(name, f"u-{token_id}", region, datetime.now(timezone.utc))
        row = {"name": name, "user_id": user.user_id, "token_id": token_id, "token_hash": hash_secret(secret),
               "region": region, "created_at": _naive(user.created_at)}  # fmt: skip
        try:
            with self.engine.begin() as connection:
                connection.execute(insert(users).values(**row))
        except IntegrityError:
            raise UserExists(f"user {name!r} exists (`fruits users delete {name}` first)") from None
        return user, f"{token_id}.{secret}"

    def users(self) -> list[User]:
        with self.engine.connect() as connection:
            return [_user(row) for row in connection.execute(select(users).order_by(users.c.name))]

    def user(self, name: str) -> User | None:
        with self.engine.connect() as connection:
            row = connection.execute(select(users).where(users.c.name == name)).first()
        return _user(row) if row else None

    def credentials(self, token_id: str) -> tuple[User, str] | None:
        """The user of a token id and the stored hash of its secret."""
        with self.engine.connect() as connection:
            row = connection.execute(select(users).where(users.c.token_id == token_id)).first()
        return (_user(row), row.token_hash) if row else None

    def delete_user(self, name: str) -> tuple[User, list[Photo]] | None:
        """Remove the user, their token and their history; returns them (None: no such user)."""
        with self.engine.begin() as connection:
            row = connection.execute(select(users).where(users.c.name == name)).first()
            if row is None:
                return None
            history = [_photo(p) for p in connection.execute(select(photos).where(photos.c.user_id == row.user_id))]
            connection.execute(delete(photos).where(photos.c.user_id == row.user_id))
            connection.execute(delete(users).where(users.c.name == name))
        return _user(row), history

    # --- photos --------------------------------------------------------------------------

    def add_photo(self, photo_id: str, user_id: str, region: str, submitted_at: datetime) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                insert(photos).values(
                    photo_id=photo_id, user_id=user_id, region=region, submitted_at=_naive(submitted_at)
                )
            )

    def remove_photo(self, photo_id: str) -> None:
        """Forget a photo that was never sent (its event was not acknowledged)."""
        with self.engine.begin() as connection:
            connection.execute(delete(photos).where(photos.c.photo_id == photo_id))

    def record_predictions(self, found: Iterable[tuple[str, dict[str, Any], str]]) -> list[str]:
        """Store (photo id, prediction as the API shows it, original's URI) for the photos of
        the gateway's users (others', e.g. from `fruits produce`, are not ours); returns the
        ids stored. The same prediction again overwrites itself: replicas and replays may."""
        stored = []
        with self.engine.begin() as connection:
            for photo_id, prediction, original_uri in found:
                result = connection.execute(
                    update(photos)
                    .where(photos.c.photo_id == photo_id)
                    .values(prediction=json.dumps(prediction), original_uri=original_uri)
                )
                if result.rowcount:
                    stored.append(photo_id)
        return stored

    def photo(self, user_id: str, photo_id: str) -> Photo | None:
        """The user's photo; None if there is none of that id, or it is someone else's."""
        with self.engine.connect() as connection:
            row = connection.execute(
                select(photos).where(photos.c.photo_id == photo_id, photos.c.user_id == user_id)
            ).first()
        return _photo(row) if row else None

    def recent(self, user_id: str, limit: int) -> list[Photo]:
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(photos)
                .where(photos.c.user_id == user_id)
                .order_by(photos.c.submitted_at.desc(), photos.c.photo_id)
                .limit(limit)
            )
            return [_photo(row) for row in rows]

    def oldest_pending(self) -> datetime | None:
        """When the oldest photo still without a prediction was sent."""
        with self.engine.connect() as connection:
            value = connection.execute(select(func.min(photos.c.submitted_at)).where(photos.c.prediction.is_(None)))
            oldest = value.scalar()
        return _utc(oldest) if oldest else None

    def set_feedback(self, photo_id: str, feedback: dict[str, Any]) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                update(photos).where(photos.c.photo_id == photo_id).values(feedback=json.dumps(feedback))
            )
