"""The local stack's secrets and CA apply to its own loopback servers only."""

import json

import pytest
from pydantic import SecretStr

from core.settings import MissingCredentials, Settings


def test_local_secrets_and_ca_only_for_loopback_servers(tmp_path):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "ingest.json").write_text(json.dumps(
        {"kafka_password": "k", "s3_access_key_id": "id", "s3_secret_access_key": "s"}))  # fmt: skip
    (tmp_path / "tls").mkdir()
    (tmp_path / "tls" / "ca.pem").write_text("ca")
    local = Settings(state_dir=tmp_path, identity="ingest")
    assert local.kafka_credentials() == ("ingest", "k")
    assert local.s3_credentials() == ("id", "s") and local.s3_client_kwargs()["verify"] == str(tmp_path / "tls" / "ca.pem")
    assert local.kafka_security_config()["ssl.ca.location"] == str(tmp_path / "tls" / "ca.pem")
    remote = Settings(state_dir=tmp_path, identity="ingest", kafka_bootstrap_servers="b-1.kafka.example:9096",
                      s3_endpoint_url="https://s3.eu-west-1.amazonaws.com")  # fmt: skip
    assert remote.s3_credentials() is None  # AWS's default chain, not the local keys
    assert remote.s3_client_kwargs()["verify"] is True  # the system's CAs
    with pytest.raises(MissingCredentials, match="FRUITS_KAFKA_PASSWORD"):
        remote.kafka_credentials()  # a managed cluster never gets the local password
    with_password = remote.model_copy(update={"kafka_password": SecretStr("p")})
    assert "ssl.ca.location" not in with_password.kafka_security_config()  # the system's CAs
