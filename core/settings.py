"""Settings for every Fruits! process, read from environment variables prefixed
``FRUITS_`` (e.g. ``FRUITS_KAFKA_BOOTSTRAP_SERVERS``). Defaults match the embedded
local stack started by ``make up``; the README's configuration table lists them all."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent

PIPELINE_SERVICES = ("ingest", "preprocess", "featurize", "reduce", "predict")
"""The five services, in the order a photo passes them (``python -m services.<name>``)."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FRUITS_", frozen=True, extra="ignore", use_attribute_docstrings=True)

    # --- Kafka -------------------------------------------------------------------
    kafka_bootstrap_servers: str = "127.0.0.1:19092"
    """Kafka bootstrap servers (host:port[,host:port])."""
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
    topic_dead_letter: str = "fruits.dead-letter"
    """Records any stage could not process, with the reason (DeadLetter)."""
    instance_id: str = Field(default="", pattern=r"^[A-Za-z0-9._-]{0,64}$")
    """This process's replica slot of its service: part of its Kafka transactional.id and
    group.instance.id, so a restarted replica takes its partitions back at once and fences its
    own zombie. Empty (default): the lowest slot (0, 1, …) no live process of the service holds
    on this machine. A slot is held by a lock file under FRUITS_STATE_DIR/slots while the process
    lives: a second process given a taken slot refuses to start. `fruits services` gives each
    replica its slot; on a cluster give each pod its own (a StatefulSet pod's ordinal or name)."""
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
    s3_endpoint_url: str = "http://127.0.0.1:18333"
    """S3 endpoint; set to your AWS regional endpoint (or empty for the AWS default) in production."""
    s3_access_key_id: str = "fruits"
    """S3 access key id."""
    s3_secret_access_key: SecretStr = SecretStr("fruits-local-secret")
    """S3 secret access key."""
    s3_region: str = "us-east-1"
    """Signing region for S3 requests."""
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

    def s3_client_kwargs(self) -> dict[str, str | None]:
        return {
            "endpoint_url": self.s3_endpoint_url or None,
            "aws_access_key_id": self.s3_access_key_id,
            "aws_secret_access_key": self.s3_secret_access_key.get_secret_value(),
            "region_name": self.s3_region,
        }


@cache
def get_settings() -> Settings:
    return Settings()
