"""Credentials of the local stack: for every identity (``core.settings.IDENTITIES``) a Kafka
password and an S3 key pair, random, made once into ``<state_dir>/secrets/<identity>.json``
(owner-only). A process finds its own there by its identity (``Settings.local_secret``);
the servers' recipes read them all to set up users (Kafka SCRAM, SeaweedFS identities)."""

from __future__ import annotations

import json
import os
import secrets

from core.settings import IDENTITIES, Settings


def ensure_secrets(settings: Settings) -> dict[str, dict[str, str]]:
    """identity → {kafka_password, s3_access_key_id, s3_secret_access_key}, made on first use."""
    folder = settings.secrets_dir
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    every = {}
    for identity in IDENTITIES:
        path = folder / f"{identity}.json"
        if not path.is_file():
            made = {
                "kafka_password": secrets.token_urlsafe(24),
                "s3_access_key_id": f"fruits-{identity}-{secrets.token_hex(4)}",
                "s3_secret_access_key": secrets.token_urlsafe(30),
            }
            # Created owner-only before the secret is written into it.
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as out:
                json.dump(made, out, indent=2)
        every[identity] = json.loads(path.read_text())
    return every
