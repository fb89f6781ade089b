"""The hop headers' bookkeeping (core.hops): what a stage passes on, and the hop times
read back from a record's headers."""

import pytest

from core.hops import SOURCE_HEADER, Hop, carried, hop_header, hop_seconds, parse


def test_a_record_entering_the_pipeline_passes_on_its_kafka_timestamp_as_the_source():
    assert carried(None, 1_700_000_000_123) == [(SOURCE_HEADER, b"1700000000123000")]
    assert carried([("fruits-replay-of", b"dead[0]@3")], 1_700_000_000_123) == [(SOURCE_HEADER, b"1700000000123000")]


def test_a_record_without_a_timestamp_has_no_source():
    assert carried(None, 0) == []
    assert carried([], -1) == []


def test_hop_headers_are_passed_on_in_order_and_other_headers_are_not():
    first = hop_header(Hop("ingest", 10.0, 10.5, 10.6))
    second = hop_header(Hop("preprocess", 11.0, 11.25, 11.5))
    headers = [(SOURCE_HEADER, b"9000000"), first, ("fruits-replay-of", b"x"), second, ("other", None)]
    assert carried(headers, 1_700_000_000_000) == [(SOURCE_HEADER, b"9000000"), first, second]


def test_hops_read_back_as_written_to_the_microsecond():
    written = [Hop("ingest", 1_795_000_000.000001, 1_795_000_000.25, 1_795_000_000.5), Hop("predict", 1.5, 2.0, 2.25)]
    source, hops = parse([source_of(1_794_999_999.9), *(hop_header(hop) for hop in written)])
    assert source == pytest.approx(1_794_999_999.9, abs=1e-6)
    assert [hop.stage for hop in hops] == ["ingest", "predict"]
    for got, want in zip(hops, written):
        assert got.received == pytest.approx(want.received, abs=1e-6)
        assert got.processed == pytest.approx(want.processed, abs=1e-6)
        assert got.produced == pytest.approx(want.produced, abs=1e-6)


def source_of(seconds: float) -> tuple[str, bytes]:
    return SOURCE_HEADER, str(round(seconds * 1e6)).encode()


def test_malformed_and_foreign_headers_are_skipped():
    good = hop_header(Hop("reduce", 1.0, 2.0, 3.0))
    headers = [("fruits-hop-ingest", b"1,2"), ("fruits-hop-featurize", b"\xff\xfe"), ("fruits-hop-x", b"a,b,c"),
               (SOURCE_HEADER, b"1,2,3"), ("fruits-replay-of", b"1,2,3"), ("fruits-hop-preprocess", None), good]  # fmt: skip
    assert parse(headers) == (None, [Hop("reduce", 1.0, 2.0, 3.0)])


def test_hop_seconds_splits_each_stage_into_wait_process_and_produce():
    hops = [Hop("ingest", 10.0, 10.5, 10.75), Hop("preprocess", 11.0, 11.25, 12.0)]
    assert hop_seconds(9.5, hops) == {
        ("ingest", "wait"): 0.5,
        ("ingest", "process"): 0.5,
        ("ingest", "produce"): 0.25,
        ("preprocess", "wait"): 0.25,
        ("preprocess", "process"): 0.25,
        ("preprocess", "produce"): 0.75,
    }


def test_without_a_source_the_first_stage_has_no_wait():
    assert ("ingest", "wait") not in hop_seconds(None, [Hop("ingest", 10.0, 10.5, 10.75)])
