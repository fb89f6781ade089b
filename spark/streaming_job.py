"""The streaming job: ``python -m spark.streaming_job`` (settings: FRUITS_* variables).

One Structured Streaming query per topic (features, reduced, predictions, feedback), each with
its own checkpoint under ``FRUITS_SPARK_CHECKPOINT_LOCATION``, reading Kafka
``read_committed`` (the services write transactionally). Each micro-batch is decoded and
written to its lake table in ``foreachBatch`` as plain Parquet partitioned by date (and
label), plus ``batch_id``, overwriting exactly the partitions of that batch: Spark
replays an unfinished batch with the same offsets after a restart, so the replay
replaces what the killed attempt wrote, and rows are neither lost nor duplicated. The
features query then updates the live PCA (``spark.pca_update``).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from pyspark.errors import StreamingQueryException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery, StreamingQueryListener

from core import lake, metrics
from core.avro import FEEDBACK, PHOTO_FEATURES, PREDICTION, REDUCED_FEATURES
from core.featurizer import model_id
from core.model import ModelStore
from core.s3 import s3_client
from core.settings import Settings, get_settings
from spark import transforms
from spark.pca_update import HadoopFiles, PcaPublisher, PcaUpdater, StateStore, read_labelled_features
from spark.session import kafka_options, spark_session

log = logging.getLogger("spark.streaming_job")

STOP_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Table:
    name: str
    topic: str
    avro_type: str
    partitions: tuple[str, ...]
    date_field: str = "received_at"
    """The record's time whose UTC day is the ``date`` partition."""


def tables(settings: Settings) -> list[Table]:
    return [
        Table(lake.FEATURES, settings.topic_features, PHOTO_FEATURES, ("date",)),
        Table(lake.REDUCED, settings.topic_reduced, REDUCED_FEATURES, ("date",)),
        Table(lake.PREDICTIONS, settings.topic_predictions, PREDICTION, ("date", "label")),
        Table(lake.FEEDBACK, settings.topic_feedback, FEEDBACK, ("date",), date_field="given_at"),
    ]


def overwrite_partitions(rows: DataFrame, path: str, partitions: tuple[str, ...]) -> None:
    """Write ``rows`` (one micro-batch, with its batch_id) replacing only the partitions
    they fall in: one file per partition folder and batch."""
    columns = (*partitions, "batch_id")
    (
        rows.repartition(*columns)
        .write.mode("overwrite")
        .option("partitionOverwriteMode", "dynamic")
        .partitionBy(*columns)
        .parquet(path)
    )


class LakeSink:
    """foreachBatch of one table: decode, write good rows and rejected ones, then ``after``."""

    def __init__(
        self, settings: Settings, table: Table, after: Callable[[DataFrame, int], object] | None = None
    ) -> None:
        self.table = table
        self.path = lake.lake_uri(settings, table.name, scheme="s3a")
        self.rejected_path = lake.lake_uri(settings, lake.REJECTED, scheme="s3a")
        self.after = after

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        log.info("%s: batch %d: started", self.table.topic, batch_id)
        decoded = transforms.decode_kafka(batch, self.table.avro_type).persist()
        try:
            counts = {row[0]: row[1] for row in decoded.groupBy(transforms.ERROR).count().collect()}
            good = counts.pop(None, 0)
            if good:
                rows = transforms.with_batch_id(transforms.lake_rows(decoded, self.table.date_field), batch_id)
                overwrite_partitions(rows, self.path, self.table.partitions)
            if counts:
                log.warning("%s: batch %d: rejected %s", self.table.topic, batch_id, counts)
                rejected = transforms.with_batch_id(transforms.rejected_rows(decoded), batch_id)
                overwrite_partitions(rejected, self.rejected_path, ("topic", "date"))
            log.info("%s: batch %d: %d rows → %s", self.table.topic, batch_id, good, self.path)
            metrics.SPARK_ROWS_WRITTEN.labels(self.table.name).inc(good)
            if self.after is not None and good:
                self.after(transforms.lake_rows(decoded, self.table.date_field), batch_id)
        finally:
            decoded.unpersist()


class ProgressMetrics(StreamingQueryListener):
    """Exports each query's micro-batch duration and input rate: the driver is the one
    long-lived process that sees every query's progress, so it serves /metrics itself."""

    def onQueryStarted(self, event) -> None:  # noqa: N802 (Spark's names)
        pass

    def onQueryProgress(self, event) -> None:  # noqa: N802
        progress = event.progress
        metrics.SPARK_BATCH_SECONDS.labels(progress.name).observe(progress.durationMs.get("triggerExecution", 0) / 1000)
        rate = progress.inputRowsPerSecond
        metrics.SPARK_INPUT_ROWS_PER_SECOND.labels(progress.name).set(rate if rate == rate else 0.0)  # NaN when idle

    def onQueryIdle(self, event) -> None:  # noqa: N802
        pass

    def onQueryTerminated(self, event) -> None:  # noqa: N802
        pass


def kafka_stream(spark: SparkSession, settings: Settings, topic: str) -> DataFrame:
    return (
        spark.readStream.format("kafka")
        .options(**kafka_options(settings))
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        # The services produce in transactions: never land an aborted record.
        .option("kafka.isolation.level", "read_committed")
        .option("maxOffsetsPerTrigger", settings.spark_max_offsets_per_trigger)
        .load()
    )


def pca_updater(spark: SparkSession, settings: Settings) -> PcaUpdater:
    state_folder = f"{lake.checkpoint_root(settings)}/{lake.FEATURES}/pca_state"
    featurizer_id = model_id(settings.featurizer_path)  # the featurize service's model
    publisher = PcaPublisher(
        settings,
        ModelStore(s3_client(settings), settings.model_bucket),
        lambda uri: read_labelled_features(spark, uri),
    )
    return PcaUpdater(
        settings,
        StateStore(HadoopFiles(spark, state_folder)),
        publisher,
        featurizer_id=featurizer_id,
        batch_stats=transforms.SparkBatchStats(featurizer_id),
    )


def start(spark: SparkSession, settings: Settings) -> list[StreamingQuery]:
    updater = pca_updater(spark, settings)
    queries = []
    for table in tables(settings):
        after = updater.update if table.name == lake.FEATURES else None
        query = (
            kafka_stream(spark, settings, table.topic)
            .writeStream.queryName(f"lake-{table.name}")
            .option("checkpointLocation", f"{lake.checkpoint_root(settings)}/{table.name}")
            .trigger(processingTime=f"{settings.lake_trigger_seconds} seconds")
            .foreachBatch(LakeSink(settings, table, after))
            .start()
        )
        log.info("query %s: %s → %s", query.name, table.topic, lake.lake_uri(settings, table.name, scheme="s3a"))
        queries.append(query)
    return queries


def stop_gracefully(queries: list[StreamingQuery], timeout: float = STOP_TIMEOUT_S) -> None:
    """Stop each query once its running micro-batch is done (up to ``timeout``). A batch
    interrupted anyway is replayed on the next start, so this only spares work and noise."""
    deadline = time.monotonic() + timeout
    for query in queries:
        while query.isActive and query.status["isTriggerActive"] and time.monotonic() < deadline:
            time.sleep(0.2)
        query.stop()


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    settings = get_settings().acting_as("spark")
    spark = spark_session(settings, "fruits-streaming")
    if settings.metrics_enabled:
        port = metrics.serve_metrics("spark", settings.metrics_port, settings.metrics_host)
        log.info("metrics on http://%s:%d/metrics", settings.metrics_host, port)
        spark.streams.addListener(ProgressMetrics())
    queries = start(spark, settings)
    # The handler only sets a flag: a py4j call from it would interleave with the main
    # thread's call in progress on the same connection.
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stopping.set())
    try:
        while not stopping.is_set() and not spark.streams.awaitAnyTermination(1):
            pass
    except StreamingQueryException:
        pass  # reported below, with the query's name
    if stopping.is_set():
        log.info("stopping %d queries after their running micro-batches", len(queries))
    failed = [q for q in queries if not q.isActive and q.exception() is not None]
    stop_gracefully(queries)
    for query in failed:
        log.error("query %s failed: %s", query.name, query.exception())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
