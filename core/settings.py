"""Settings for every Fruits! process, read from environment variables prefixed
``FRUITS_`` (e.g. ``FRUITS_KAFKA_BOOTSTRAP_SERVERS``). Defaults match the embedded
local stack started by ``make up``; the README's configuration table lists them all."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent

PIPELINE_SERVICES = ("ingest", "preprocess", "featurize", "reduce", "predict")
"""The five services, in the order a photo passes them (``python -m services.<name>``)."""

IDENTITIES = (*PIPELINE_SERVICES, "spark", "gateway", "client", "admin")
"""Who a process is on Kafka and S3, each with its own credentials and rights: the five
services, the Spark jobs, ``gateway`` (the HTTP gateway, ``python -m services.gateway``),
``client`` (trusted producers: batch tools) and ``admin`` (provisioning; operators). The
local stack makes a secret for each."""


SASL_LOGIN_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}
"""The Java login module of each SASL mechanism (JAAS configuration of Java clients and the broker)."""


def jaas_config(mechanism: str, username: str, password: str, **options: str) -> str:
    """A ``sasl.jaas.config`` value for a Java Kafka client (Spark's Kafka source) or the
    broker's own logins; ``options`` are further ``name="value"`` pairs."""
    if mechanism not in SASL_LOGIN_MODULES:
        raise ValueError(f"SASL mechanism {mechanism!r} is not one of {', '.join(SASL_LOGIN_MODULES)}")

    def quoted(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    pairs = {"username": username, "password": password, **options}
    return f"{SASL_LOGIN_MODULES[mechanism]} required " + " ".join(f"{k}={quoted(v)}" for k, v in pairs.items()) + ";"
LOCAL_TRUSTSTORE_PASSWORD = "fruits-local-ca"
"""Of the local stack's truststore (``Settings.local_truststore``): it holds the public CA
certificate only, so its password guards nothing secret (Java requires one)."""


def on_loopback(addresses: str) -> bool:
    """Whether every host in ``addresses`` (``host:port,…`` or a URL) is this machine: only
    then do the local stack's secrets and CA apply (never to a managed Kafka or AWS)."""
    hosts = [urlsplit(a if "//" in a else f"//{a}").hostname for a in addresses.split(",") if a.strip()]
    return bool(hosts) and all(host in ("127.0.0.1", "localhost", "::1") for host in hosts)


class MissingCredentials(RuntimeError):
    """No credentials for this process's identity; the message says where to set them."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FRUITS_", frozen=True, extra="ignore", use_attribute_docstrings=True)

    # --- Identity and credentials ------------------------------------------------------
    identity: str = ""
    """Who this process is on Kafka and S3 (one of IDENTITIES). Empty: its entry point's own
    (a service's name, ``spark`` for the Spark jobs, ``client`` for the CLI). Empty
    credentials below are this identity's secret of the local stack (``<state_dir>/secrets``)."""

    # --- Kafka -------------------------------------------------------------------
    kafka_bootstrap_servers: str = "127.0.0.1:19092"
    """Kafka bootstrap servers (host:port[,host:port])."""
    kafka_security_protocol: Literal["SASL_SSL", "SASL_PLAINTEXT", "SSL", "PLAINTEXT"] = "SASL_SSL"
    """How clients talk to Kafka. SASL_SSL (default: authenticated, encrypted); PLAINTEXT is an
    explicit opt-in (the local stack then starts its broker without TLS, SASL or ACLs)."""
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    """SASL mechanism: SCRAM-SHA-512 (local stack, MSK SCRAM, self-managed) or PLAIN (Confluent Cloud API keys)."""
    kafka_username: str = ""
    """SASL user name; empty = the identity's name."""
    kafka_password: SecretStr = SecretStr("")
    """SASL password; empty = the identity's secret of the local stack."""
    kafka_ssl_ca_location: str = ""
    """PEM file of the CA that signed the brokers' certificates; empty = the local stack's CA if
    it made one, else the system's CAs (MSK, Confluent Cloud)."""
    topic_photos: str = "fruits.photos"
    """Photo events produced by users (PhotoEvent)."""
    topic_ingested: str = "fruits.ingested"
    """Validated photos stored in S3 (IngestedPhoto)."""
    topic_preprocessed: str = "fruits.preprocessed"
    """Model-ready uint8 tensors (PreprocessedPhoto)."""
    topic_features: str = "fruits.features"
    """Featurizer output vectors (PhotoFeatures)."""
    topic_reduced: str = "fruits.reduced"
    """PCA-reduced vectors (ReducedFeatures)."""
    topic_predictions: str = "fruits.predictions"
    """Predictions for users (Prediction)."""
    topic_feedback: str = "fruits.feedback"
    """Users' verdicts on their answers, from the HTTP gateway (Feedback)."""
    topic_dead_letter: str = "fruits.dead-letter"
    """Records any stage could not process, with the reason (DeadLetter)."""
    instance_id: str = Field(default="", pattern=r"^[A-Za-z0-9._-]{0,64}$")
    """This process's replica slot of its service: part of its Kafka transactional.id and
    group.instance.id, so a restarted replica takes its partitions back at once and fences its
    own zombie. Empty (default): the lowest slot (0, 1, …) no live process of the service holds
    on this machine. A slot is held by a lock file under FRUITS_STATE_DIR/slots while the process
    lives: a second process given a taken slot refuses to start. `fruits services` gives each
    replica its slot; on a cluster give each pod its own (a StatefulSet pod's ordinal or name)."""
    kafka_compression: Literal["none", "lz4", "zstd", "snappy", "gzip"] = "none"
    """Compression of what the services produce (librdkafka's compression.type)."""
    kafka_producer_options: dict[str, str] = {}
    """librdkafka properties for every producer, over the defaults (JSON), to tune without a
    release: ``{"retry.backoff.ms": "20"}``. What a producer's role sets (its transactional.id,
    idempotence) is not overridden."""
    kafka_consumer_options: dict[str, str] = {}
    """The same for every consumer (its group.id and isolation level are not overridden)."""
    max_batch_records: int = Field(default=64, ge=1)
    """Most records one stage processes (and commits) in one transaction."""
    commit_interval_seconds: float = Field(default=0.0, ge=0)
    """Longest a stage keeps a transaction open to add more records to it. 0 (default):
    commit what has arrived at once; batches still grow by themselves under load. A
    positive value trades up to that much latency per stage for fewer transactions."""
    poll_timeout_seconds: float = Field(default=0.5, gt=0, le=1.0)
    """How long a service waits for the first record of a batch (≤ 1 s so signals are handled)."""
    retry_backoff_initial_seconds: float = Field(default=0.2, gt=0)
    """First wait before retrying after a retriable Kafka error or a dependency outage (S3, the
    model store, Kafka); each further wait doubles, up to the next setting."""
    retry_backoff_max_seconds: float = Field(default=10.0, gt=0)
    """Longest wait between two retries: an outage is waited out at this pace, never a crash."""
    transaction_retries: int = Field(default=5, ge=0)
    """Retriable errors of one transactional call (begin, send offsets, commit, abort) retried at
    a growing interval; after that the call is logged as waiting for Kafka and retried every
    FRUITS_RETRY_BACKOFF_MAX_SECONDS until it succeeds, fails for good (the batch is then aborted
    and redone, or the process exits to be restarted) or the service is stopped."""
    transform_attempts: int = Field(default=3, ge=1)
    """Tries of a batch whose transform raised an unexpected exception (not a RecordError, not an
    outage); then the batch is halved until the failing records are found, and each of those is
    dead-lettered as internal_error after as many tries of its own."""
    max_record_bytes: int = Field(default=2 * 1024 * 1024, ge=64 * 1024)
    """Largest record on the pipeline's data topics (their max.message.bytes). The dead-letter
    topic, the producers and the broker take twice this, so a dead letter always carries the
    rejected record whole (`core.limits`; checked when a service starts)."""

    # --- Topics (provisioning: `python -m tools.stack provision`, `make up`) -----------
    topic_partitions: int = Field(default=3, ge=1)
    """Partitions of each pipeline topic: the most replicas of one service that share the work."""
    topic_replication_factor: int = Field(default=3, ge=1)
    """Replicas of each topic's partitions. Safe for a real cluster; the embedded local stack
    (one broker) uses 1. Above the broker count is refused; below min(3, brokers) too, unless
    FRUITS_TOPIC_ALLOW_UNDER_REPLICATED=true."""
    topic_min_insync_replicas: int = Field(default=2, ge=1)
    """min.insync.replicas of each topic: acknowledged writes survive the loss of a broker."""
    topic_allow_under_replicated: bool = False
    """Create topics with fewer replicas than the cluster could hold (e.g. a test cluster)."""
    topic_retention_hours: float = Field(default=7 * 24, gt=0)
    """How long the data topics keep records."""
    dead_letter_retention_hours: float = Field(default=30 * 24, gt=0)
    """How long the dead-letter topic keeps records: time to look at the failures and replay them."""

    # --- S3 -----------------------------------------------------------------------
    s3_endpoint_url: str = "https://127.0.0.1:18333"
    """S3 endpoint; set to your AWS regional endpoint (or empty for the AWS default) in production."""
    s3_access_key_id: str = ""
    """S3 access key id; empty = the identity's key on the local stack, or, with no local stack
    secret, the AWS default chain (environment, instance profile, IRSA)."""
    s3_secret_access_key: SecretStr = SecretStr("")
    """S3 secret access key (with s3_access_key_id)."""
    s3_ca_bundle: str = ""
    """PEM file of the CA that signed the S3 endpoint's certificate; empty = the local stack's CA
    if it made one, else the system's CAs."""
    s3_region: str = "us-east-1"
    """Signing region for S3 requests."""
    s3_sse: Literal["AES256", "aws:kms", ""] = "AES256"
    """Server-side encryption every write requests: AES256 (SSE-S3, default; the local stack's
    SeaweedFS has a key for it), aws:kms (SSE-KMS with s3_sse_kms_key_id) or empty (none
    requested: the bucket's default encryption applies)."""
    s3_sse_kms_key_id: str = ""
    """KMS key (id, alias or ARN) of SSE-KMS; empty = the account's aws/s3 key."""
    model_bucket: str = "fruits-models"
    """Bucket of the model store (bundles and the `current` pointer)."""
    region_buckets: dict[str, str] = {
        "eu": "fruits-photos-eu",
        "us": "fruits-photos-us",
        "ap": "fruits-photos-ap",
    }
    """Photo region → bucket holding that region's originals (JSON object). Photos
    from a region missing here are dead-lettered: data stays near the user."""
    upload_prefix: str = "uploads/{user_id}/"
    """Key prefix, in the region's bucket, of a user's photos sent by reference (``{user_id}``
    is replaced): ingest reads an image_uri only under its event's user's prefix."""
    lake_bucket: str = "fruits-lake"
    """Bucket of the data lake (Spark jobs' tables and checkpoints)."""

    # --- Images -------------------------------------------------------------------
    max_image_bytes: int = Field(default=20 * 1024 * 1024, ge=1)
    """Largest accepted photo, in bytes (inline or referenced)."""
    max_inline_image_bytes: int = Field(default=900 * 1024, ge=1)
    """Largest photo carried inline in a Kafka record; larger photos travel as an s3:// reference."""
    max_image_pixels: int = Field(default=40_000_000, ge=1)
    """Largest accepted width × height: a guard against decompression bombs."""

    # --- Model --------------------------------------------------------------------
    featurizer_path: Path = PROJECT_ROOT / "core" / "models" / "mobilenetv2_192px_fruits.onnx"
    """ONNX featurizer (uint8 NHWC image in, float32 features out)."""
    onnx_threads: int = Field(default=1, ge=1)
    """onnxruntime intra-op threads of the featurize service. 1 on a small machine: a
    single thread costs the least CPU per image, and Kafka and the other services need
    the other cores (the trainer and the benchmark's featurizer-alone use all cores)."""
    model_refresh_seconds: float = Field(default=5.0, gt=0)
    """How often reduce checks the model store for a new current bundle."""

    # --- Spark (spark/: the streaming job and the Spark trainer) ---------------------
    spark_master: str = "local[2]"
    """Spark master URL: local[N] on one machine; empty under spark-submit (its --master applies: yarn, k8s://…)."""
    spark_jars_dir: str = str(PROJECT_ROOT / ".jars" / "spark")
    """Folder whose jars go in spark.jars (Kafka source, spark-avro, S3A; `make spark-jars`); empty when spark-submit ships them."""
    spark_driver_memory: str = "2g"
    """Driver JVM heap (spark.driver.memory) when the job starts its own JVM (local runs)."""
    s3_path_style_access: bool = True
    """Address buckets as <endpoint>/<bucket> (SeaweedFS, MinIO); false for AWS's virtual-hosted style."""
    lake_prefix: str = ""
    """Key prefix of the lake's tables in the lake bucket (e.g. `prod`); empty = the bucket's root."""
    spark_checkpoint_location: str = ""
    """Root of the streaming job's checkpoints, one folder per query; empty = s3a://<lake bucket>/<lake prefix>/_checkpoints."""
    lake_trigger_seconds: float = Field(default=10.0, gt=0)
    """Micro-batch interval of the streaming job (each lake table is written at most this often)."""
    spark_max_offsets_per_trigger: int = Field(default=20_000, ge=1)
    """Most Kafka records one micro-batch of the streaming job reads per topic."""
    pca_update_rows: int = Field(default=5_000, ge=2)
    """The streaming job refits and publishes the PCA once this many new feature rows arrived …"""
    pca_update_seconds: float = Field(default=3600.0, gt=0)
    """… or once this many seconds passed since the last publication, if any new row arrived."""
    pca_min_explained_variance: float = Field(default=0.98, gt=0, le=1)
    """Share of the variance the streaming job's PCA keeps (the fewest components reaching it)."""
    pca_promotion_tolerance: float = Field(default=0.005, ge=0, le=1)
    """A refitted bundle becomes current only if its out-of-fold type and variety accuracy and its
    not-ours unsure share are each at most this much below the current bundle's; else it is kept
    as a candidate (`fruits model promote`)."""

    # --- HTTP gateway (python -m services.gateway) ------------------------------------
    gateway_host: str = "127.0.0.1"
    """Address the gateway listens on (0.0.0.0 in a container, behind a TLS-terminating proxy)."""
    gateway_port: int = Field(default=18080, ge=0, le=65535)
    """Port of the gateway (the API, the web page, /docs and /metrics)."""
    gateway_database_url: str = ""
    """SQLAlchemy URL of the gateway's store (users, their token hashes, their photo history);
    empty = SQLite at FRUITS_STATE_DIR/gateway.db. Replicas share one database
    (e.g. ``postgresql+psycopg://…``) so that any replica answers for any photo."""
    gateway_default_region: str = "eu"
    """Region of a user without a region of their own who sent no position (one of FRUITS_REGION_BUCKETS)."""
    gateway_region_locations: dict[str, tuple[float, float]] = {
        "eu": (50.11, 8.68),
        "us": (39.04, -77.49),
        "ap": (1.35, 103.82),
    }
    """Region → (latitude, longitude) of where its data is kept (JSON object): a user's position,
    if sent, picks the nearest configured region; it is used for that choice only, never stored."""
    gateway_uploads_per_minute: float = Field(default=30.0, gt=0)
    """Photos one user may send per minute, on average (429 with Retry-After beyond) …"""
    gateway_upload_burst: int = Field(default=20, ge=1)
    """… and at once (the size of each user's token bucket)."""
    gateway_max_in_flight: int = Field(default=64, ge=1)
    """Uploads the gateway works on at once (read, stripped, stored, produced); one more is
    answered 503 with Retry-After at once instead of waiting in a queue."""
    gateway_token_cache_seconds: float = Field(default=30.0, ge=0)
    """How long a verified API token is trusted without hashing its secret again (0: never
    cached). The user is still looked up on each request: a deleted user's token fails at once."""
    gateway_sse_keepalive_seconds: float = Field(default=15.0, gt=0)
    """Interval of the keep-alive comments of a pending photo's event stream."""
    gateway_predictions_lookback_hours: float = Field(default=24.0, gt=0)
    """On start, the gateway reads the predictions topic from its oldest pending photo's time,
    at most this far back (predictions that arrived while it was down), else from the end."""

    # --- Local stack --------------------------------------------------------------
    state_dir: Path = PROJECT_ROOT / ".stack"
    """Data, logs and pid files of the embedded local stack (`python -m tools.stack`)."""

    # --- Metrics ------------------------------------------------------------------
    metrics_enabled: bool = True
    """Record metrics and serve /metrics; false makes every metric call a no-op (to measure their cost)."""
    metrics_host: str = "127.0.0.1"
    """Address the /metrics endpoint binds to (0.0.0.0 in a container, so Prometheus can reach it)."""
    metrics_port: int = Field(default=0, ge=0, le=65535)
    """Port of this process's /metrics endpoint; 0 = the service's default port."""
    metrics_stats_interval_seconds: float = Field(default=5.0, gt=0)
    """How often librdkafka reports a consumer's statistics, which update the consumer lag gauges."""

    def gateway_database(self) -> str:
        """The gateway store's SQLAlchemy URL (FRUITS_GATEWAY_DATABASE_URL, else SQLite in the state dir)."""
        return self.gateway_database_url or f"sqlite:///{self.state_dir / 'gateway.db'}"

    def data_topics(self) -> list[str]:
        """The pipeline's topics, in stage order, without the dead-letter topic."""
        return [
            self.topic_photos,
            self.topic_ingested,
            self.topic_preprocessed,
            self.topic_features,
            self.topic_reduced,
            self.topic_predictions,
        ]

    def acting_as(self, identity: str) -> Settings:
        """These settings for an entry point whose own identity is ``identity``, unless
        FRUITS_IDENTITY chose another."""
        return self if self.identity else self.model_copy(update={"identity": identity})

    @property
    def secrets_dir(self) -> Path:
        """The local stack's per-identity secrets (`tools.stack.secrets`)."""
        return self.state_dir / "secrets"

    @property
    def local_ca(self) -> Path:
        """The local stack's CA certificate (`tools.stack.tls`)."""
        return self.state_dir / "tls" / "ca.pem"

    @property
    def local_truststore(self) -> Path:
        """The local stack's CA as a PKCS#12 truststore, for the JVM (Spark's S3A)."""
        return self.state_dir / "tls" / "truststore.p12"

    def local_secret(self, field: str) -> str | None:
        """The identity's ``field`` in the local stack's secrets, if the stack made them."""
        path = self.secrets_dir / f"{self.identity}.json"
        if not self.identity or not path.is_file():
            return None
        return json.loads(path.read_text()).get(field)

    def kafka_credentials(self) -> tuple[str, str]:
        username = self.kafka_username or self.identity
        local = self.local_secret("kafka_password") if on_loopback(self.kafka_bootstrap_servers) else None
        password = self.kafka_password.get_secret_value() or local
        if not username or not password:
            raise MissingCredentials(
                f"no Kafka credentials for identity {self.identity or '(none)'!r}: set FRUITS_KAFKA_USERNAME "
                f"and FRUITS_KAFKA_PASSWORD, or start the local stack (`make up`), which writes {self.secrets_dir}"
            )
        return username, password

    def kafka_security_config(self) -> dict[str, str]:
        """librdkafka options for the configured protocol and this identity's credentials."""
        config = {"security.protocol": self.kafka_security_protocol}
        if self.kafka_security_protocol.startswith("SASL_"):
            username, password = self.kafka_credentials()
            config |= {"sasl.mechanism": self.kafka_sasl_mechanism, "sasl.username": username, "sasl.password": password}
        if self.kafka_security_protocol.endswith("SSL") and (ca := self.kafka_ca_file()):
            config["ssl.ca.location"] = ca
        return config

    def kafka_ca_file(self) -> str | None:
        if self.kafka_ssl_ca_location:
            return self.kafka_ssl_ca_location
        local = self.local_ca.is_file() and on_loopback(self.kafka_bootstrap_servers)
        return str(self.local_ca) if local else None

    def s3_ca_file(self) -> str | None:
        if self.s3_ca_bundle:
            return self.s3_ca_bundle
        local = self.local_ca.is_file() and on_loopback(self.s3_endpoint_url)
        return str(self.local_ca) if local else None

    def s3_credentials(self) -> tuple[str, str] | None:
        """(access key id, secret) of this identity; None = the AWS default chain."""
        if self.s3_access_key_id:
            return self.s3_access_key_id, self.s3_secret_access_key.get_secret_value()
        if not on_loopback(self.s3_endpoint_url):  # the local stack's keys are for its own server only
            return None
        key, secret = self.local_secret("s3_access_key_id"), self.local_secret("s3_secret_access_key")
        return (key, secret) if key and secret else None

    def s3_client_kwargs(self) -> dict[str, Any]:
        """boto3 client arguments: endpoint, this identity's credentials, CA."""
        credentials = self.s3_credentials()
        return {
            "endpoint_url": self.s3_endpoint_url or None,
            "aws_access_key_id": credentials[0] if credentials else None,
            "aws_secret_access_key": credentials[1] if credentials else None,
            "region_name": self.s3_region,
            "verify": self.s3_ca_file() or True,
        }


@cache
def get_settings() -> Settings:
    return Settings()
