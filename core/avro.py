"""Avro single-object encoding of the records in ``schemas/``.

Wire format (Avro specification, "Single-object encoding"): the two marker bytes
``C3 01``, the 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema's
Parsing Canonical Form, then the Avro binary body. Any Avro library can decode a
record with the ``.avsc`` files alone; no schema registry is needed.

When a schema changes, its previous version is kept as
``schemas/history/<Name>.v<N>.avsc``: records still written with it (in flight, or
from producers not yet upgraded) are read through Avro schema resolution instead of
being dead-lettered as foreign.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

from core.errors import Reason, RecordError
from core.settings import PROJECT_ROOT

SCHEMA_DIR = PROJECT_ROOT / "schemas"
HISTORY_DIR = SCHEMA_DIR / "history"
MARKER = b"\xc3\x01"
HEADER_SIZE = len(MARKER) + 8


def single_object_header(schema: dict[str, Any]) -> bytes:
    canonical = to_parsing_canonical_form(schema)
    return MARKER + bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))


@dataclass(frozen=True)
class AvroType:
    """One record type: encodes dicts to single-object bytes and back."""

    name: str
    schema: dict[str, Any]
    header: bytes
    earlier_writers: dict[bytes, dict[str, Any]]
    """Header → schema of each earlier version still accepted."""

    def encode(self, record: dict[str, Any]) -> bytes:
        out = io.BytesIO()
        out.write(self.header)
        schemaless_writer(out, self.schema, record)
        return out.getvalue()

    def decode(self, data: bytes | None) -> dict[str, Any]:
        """Decode a record written with this schema; raise RecordError otherwise."""
        if not data:
            raise RecordError(Reason.EMPTY_RECORD, f"empty Kafka value, expected a {self.name}")
        if data[:2] != MARKER:
            raise RecordError(
                Reason.NOT_AVRO_SINGLE_OBJECT,
                f"value does not start with the Avro single-object marker C3 01 "
                f"(got {data[:2].hex() or 'nothing'}); expected a {self.name}",
            )
        writer = self.schema if data[:HEADER_SIZE] == self.header else self.earlier_writers.get(data[:HEADER_SIZE])
        if writer is None:
            raise RecordError(
                Reason.FOREIGN_SCHEMA,
                f"written with schema fingerprint {data[2:HEADER_SIZE].hex()}, "
                f"expected {self.name} ({self.header[2:].hex()})",
            )
        body = io.BytesIO(data)
        body.seek(HEADER_SIZE)
        try:
            record = schemaless_reader(body, writer, self.schema)
        except Exception as exc:  # fastavro raises several types for a corrupt body
            raise RecordError(Reason.CORRUPT_AVRO, f"cannot decode {self.name}: {type(exc).__name__}: {exc}") from exc
        if body.tell() != len(data):
            raise RecordError(
                Reason.CORRUPT_AVRO,
                f"{len(data) - body.tell()} trailing bytes after the {self.name} record",
            )
        return record


def load_schema_file(path: Path) -> dict[str, Any]:
    return parse_schema(json.loads(path.read_text()), _write_hint=False)


@cache
def avro_type(name: str) -> AvroType:
    """The record type defined in ``schemas/<name>.avsc``."""
    path = SCHEMA_DIR / f"{name}.avsc"
    if not path.exists():
        raise FileNotFoundError(f"no schema {path}")
    schema = load_schema_file(path)
    earlier = [load_schema_file(p) for p in sorted(HISTORY_DIR.glob(f"{name}.v*.avsc"))]
    return AvroType(
        name=name,
        schema=schema,
        header=single_object_header(schema),
        earlier_writers={single_object_header(s): s for s in earlier},
    )


PHOTO_EVENT = "PhotoEvent"
INGESTED_PHOTO = "IngestedPhoto"
PREPROCESSED_PHOTO = "PreprocessedPhoto"
PHOTO_FEATURES = "PhotoFeatures"
REDUCED_FEATURES = "ReducedFeatures"
PREDICTION = "Prediction"
DEAD_LETTER = "DeadLetter"
FEEDBACK = "Feedback"
