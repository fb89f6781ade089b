"""Integration tests: real servers, started by the session fixtures of conftest.py."""

from core.settings import Settings


def as_identity(settings: Settings, identity: str) -> Settings:
    """``settings`` acting as ``identity`` on Kafka and S3, whatever identity they had."""
    return settings.model_copy(update={"identity": identity})
