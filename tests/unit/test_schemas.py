"""Every schema is documented, and backward compatible with its previous committed
version: data written with the old schema is readable with the new one."""

import io
import json
import subprocess

import fastavro
import pytest
from fastavro.utils import generate_many

from core.avro import SCHEMA_DIR, load_schema_file
from core.settings import PROJECT_ROOT

SCHEMAS = sorted(SCHEMA_DIR.glob("*.avsc"))
HISTORY = sorted((SCHEMA_DIR / "history").glob("*.avsc"))


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True).stdout


def previous_version(path) -> str | None:
    """The newest committed text of ``path`` that differs from the working copy."""
    current = path.read_text()
    relative = path.relative_to(PROJECT_ROOT).as_posix()
    try:
        commits = git("log", "--format=%H", "--", relative).split()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return None
    for commit in commits:
        text = git("show", f"{commit}:{relative}")
        if text != current:
            return text
    return None


def walk_records(schema):
    if isinstance(schema, dict):
        if schema.get("type") == "record":
            yield schema
            for field in schema["fields"]:
                yield from walk_records(field["type"])
        elif schema.get("type") == "array":
            yield from walk_records(schema["items"])
    elif isinstance(schema, list):
        for branch in schema:
            yield from walk_records(branch)


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda p: p.stem)
def test_schema_is_namespaced_and_documented(path):
    schema = json.loads(path.read_text())
    assert schema["namespace"].startswith("app.fruits.")
    assert schema["name"] == path.stem
    for record in walk_records(schema):
        assert record.get("doc"), f"record {record['name']} has no doc"
        for field in record["fields"]:
            assert field.get("doc"), f"{record['name']}.{field['name']} has no doc"


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda p: p.stem)
def test_backward_compatible_with_previous_version(path, tmp_path):
    old_text = previous_version(path)
    if old_text is None:
        pytest.skip(f"{path.name} has no earlier committed version")
    old_path = tmp_path / path.name
    old_path.write_text(old_text)
    old, new = load_schema_file(old_path), load_schema_file(path)
    for record in generate_many(old, 50):
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, old, record)
        buffer.seek(0)
        fastavro.schemaless_reader(buffer, old, new)  # raises SchemaResolutionError if incompatible


def test_incompatible_change_is_detected(tmp_path):
    """The check above can fail: a new required field without default breaks old data."""
    old = load_schema_file(SCHEMA_DIR / "PhotoEvent.avsc")
    changed = json.loads((SCHEMA_DIR / "PhotoEvent.avsc").read_text())
    changed["fields"].append({"name": "device", "type": "string", "doc": "new"})
    new = fastavro.parse_schema(changed)
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, old, next(iter(generate_many(old, 1))))
    buffer.seek(0)
    with pytest.raises(fastavro.read.SchemaResolutionError):
        fastavro.schemaless_reader(buffer, old, new)


@pytest.mark.parametrize("path", HISTORY, ids=lambda p: p.stem)
def test_current_schema_reads_every_kept_earlier_version(path):
    """Every version in schemas/history/ is still accepted by the decoder, so it must
    resolve against the current schema."""
    name = path.name.split(".v")[0]
    old, new = load_schema_file(path), load_schema_file(SCHEMA_DIR / f"{name}.avsc")
    for record in generate_many(old, 50):
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, old, record)
        buffer.seek(0)
        fastavro.schemaless_reader(buffer, old, new)
