"""Pure DataFrame → DataFrame steps of the Spark jobs (no sources, sinks or I/O here),
tested on a local SparkSession.

Kafka values are Avro single-object encoded (``core/avro.py``): ``C3 01``, the 8-byte
CRC-64-AVRO fingerprint of the writer schema, then the Avro body. ``decode_kafka``
checks the 10-byte header against the expected schema's and decodes the body with
spark-avro's ``from_avro`` and the ``.avsc`` from ``schemas/``; a record that does not
decode gets the same ``error_class`` the services would give it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.avro.functions import from_avro

from core.avro import HEADER_SIZE, HISTORY_DIR, MARKER, SCHEMA_DIR, avro_type, load_schema_file, single_object_header
from core.errors import Reason
from core.model import PcaStats

KAFKA_COLUMNS = ("kafka_partition", "kafka_offset", "kafka_timestamp")
"""Where each lake row came from: with the table's topic, a unique key of the row."""

ERROR = "error_class"


def avro_schema_json(type_name: str) -> str:
    return (SCHEMA_DIR / f"{type_name}.avsc").read_text()


def _error_class(value: Column, headers: list[bytes], record: Column) -> Column:
    known = F.substring(value, 1, HEADER_SIZE).isin([bytearray(header) for header in headers])
    return (
        F.when(value.isNull() | (F.length(value) == 0), F.lit(Reason.EMPTY_RECORD.value))
        .when(
            F.substring(value, 1, len(MARKER)) != F.lit(bytearray(MARKER)), F.lit(Reason.NOT_AVRO_SINGLE_OBJECT.value)
        )
        .when(~known, F.lit(Reason.FOREIGN_SCHEMA.value))
        .when(record.isNull(), F.lit(Reason.CORRUPT_AVRO.value))
    )


def _decoded_record(value: Column, type_name: str) -> Column:
    """The record as the current schema's struct, whichever accepted version wrote it: an
    earlier one (``schemas/history/``) is read through Avro resolution (``avroSchema``), as
    the services read it."""
    current = avro_schema_json(type_name)
    body = F.expr(f"substring(value, {HEADER_SIZE + 1}, length(value) - {HEADER_SIZE})")
    header = F.substring(value, 1, HEADER_SIZE)
    # PERMISSIVE: a corrupt body gives null instead of failing the batch.
    record = F.when(
        header == F.lit(bytearray(avro_type(type_name).header)), from_avro(body, current, {"mode": "PERMISSIVE"})
    )
    for path in sorted(HISTORY_DIR.glob(f"{type_name}.v*.avsc")):
        earlier_header = single_object_header(load_schema_file(path))
        options = {"mode": "PERMISSIVE", "avroSchema": current}
        record = record.when(header == F.lit(bytearray(earlier_header)), from_avro(body, path.read_text(), options))
    return record


def decode_kafka(kafka: DataFrame, type_name: str) -> DataFrame:
    """Kafka source rows → the record's fields, the Kafka coordinates (``KAFKA_COLUMNS``),
    the raw ``key``/``value``/``topic`` and ``error_class`` (null when the record decoded)."""
    avro = avro_type(type_name)
    value = F.col("value")
    decoded = kafka.select(
        "key", "value", "topic",
        F.col("partition").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"),
        F.col("timestamp").alias("kafka_timestamp"),
        _decoded_record(value, type_name).alias("record"),
    )  # fmt: skip
    # from_avro in PERMISSIVE mode yields a struct of nulls for a corrupt body: the
    # required first field (photo_id) is null only then.
    first_field = avro.schema["fields"][0]["name"]
    headers = [avro.header, *avro.earlier_writers]
    return decoded.withColumn(ERROR, _error_class(value, headers, F.col(f"record.{first_field}")))


def lake_rows(decoded: DataFrame, date_field: str = "received_at") -> DataFrame:
    """The decoded records as lake rows: record fields, Kafka coordinates and ``date``, the
    UTC day of ``date_field``: ``received_at``, the photo event's time (the same for a photo
    in every pipeline table), or ``given_at`` for feedback."""
    return decoded.where(F.col(ERROR).isNull()).select(
        "record.*", *KAFKA_COLUMNS, F.to_date(f"record.{date_field}").alias("date")
    )


def rejected_rows(decoded: DataFrame) -> DataFrame:
    """Records that did not decode, kept whole for inspection and replay (like dead letters)."""
    return decoded.where(F.col(ERROR).isNotNull()).select(
        "topic", *KAFKA_COLUMNS, "key", "value", ERROR, F.to_date("kafka_timestamp").alias("date")
    )


def with_batch_id(rows: DataFrame, batch_id: int) -> DataFrame:
    return rows.withColumn("batch_id", F.lit(batch_id).cast("long"))


# --- PCA statistics -------------------------------------------------------------------------

STATS_SCHEMA = "count long, dim int, total binary, outer binary"


def _partial_stats(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Count, sum and sum of outer products of one partition's vectors (on an executor)."""
    stats: PcaStats | None = None
    for batch in batches:
        if len(batch) == 0:
            continue
        x = np.stack(batch["features"].to_numpy()).astype(np.float64)
        if stats is None:
            stats = PcaStats.empty(x.shape[1])
        stats.add(x)
    if stats is not None:
        yield pd.DataFrame(
            {"count": [stats.count], "dim": [len(stats.total)], "total": [stats.total.tobytes()],
             "outer": [stats.outer.tobytes()]}
        )  # fmt: skip


def partial_pca_stats(vectors: DataFrame, column: str = "features") -> DataFrame:
    """One row of mergeable PCA statistics per non-empty partition of ``vectors``."""
    return vectors.select(F.col(column).alias("features")).mapInPandas(_partial_stats, STATS_SCHEMA)


def merge_partial_stats(rows: list, dim: int) -> PcaStats:
    """Merge collected ``partial_pca_stats`` rows into one PcaStats (on the driver)."""
    total = PcaStats.empty(dim)
    for row in rows:
        if row["dim"] != dim:
            raise ValueError(f"partial statistics of dimension {row['dim']}, expected {dim}")
        total = total.merge(
            PcaStats(
                int(row["count"]),
                np.frombuffer(row["total"], dtype=np.float64),
                np.frombuffer(row["outer"], dtype=np.float64).reshape(dim, dim),
            )
        )
    return total


def pca_stats(vectors: DataFrame, dim: int, column: str = "features") -> PcaStats:
    """Exact PCA statistics of a DataFrame of vectors: partial sums on the executors, merged on the driver."""
    return merge_partial_stats(partial_pca_stats(vectors, column).collect(), dim)


class SparkBatchStats:
    """``spark.pca_update.BatchStats`` of lake rows: only the vectors of ``featurizer_id``
    (a stream may carry another featurizer's during an upgrade) and of the expected length."""

    def __init__(self, featurizer_id: str) -> None:
        self.featurizer_id = featurizer_id

    def _mine(self, rows: DataFrame) -> DataFrame:
        return rows.where(F.col("featurizer_id") == self.featurizer_id)

    def dim(self, rows: DataFrame) -> int | None:
        first = self._mine(rows).select(F.size("features")).first()
        return None if first is None else int(first[0])

    def stats(self, rows: DataFrame, dim: int) -> PcaStats:
        return pca_stats(self._mine(rows).where(F.size("features") == dim), dim)
