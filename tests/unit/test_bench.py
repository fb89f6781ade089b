"""The bench's arithmetic: histogram quantiles from scraped buckets, the median and spread
of repeated runs, the waterfall read from the predictions' hop headers, the variants."""

import argparse

import pytest

from core.hops import Hop, hop_header, source_header
from core.settings import Settings
from tools import roundtrip
from tools.bench import (
    bucket_quantile,
    commit_wait_buckets,
    cpu_figures,
    parse_variant,
    print_comparison,
    summarise,
    transactions_between,
)
from tools.roundtrip import RoundTrip


def test_bucket_quantile_interpolates_within_the_bucket_as_prometheus_does():
    buckets = {0.01: 50.0, 0.1: 90.0, 1.0: 100.0, float("inf"): 100.0}
    assert bucket_quantile(buckets, 0.5) == pytest.approx(0.01)
    assert bucket_quantile(buckets, 0.7) == pytest.approx(0.01 + 0.09 * 0.5)
    assert bucket_quantile(buckets, 0.99) == pytest.approx(0.1 + 0.9 * 0.9)


def test_bucket_quantile_of_nothing_is_none_and_beyond_the_last_bound_is_that_bound():
    assert bucket_quantile({0.1: 0.0, float("inf"): 0.0}, 0.5) is None
    assert bucket_quantile({0.1: 1.0, float("inf"): 10.0}, 0.99) == 0.1


def test_commit_wait_buckets_are_the_difference_between_two_scrapes_of_one_stage():
    def sample(stage, le, value):
        return ("fruits_commit_wait_seconds_bucket", (("le", le), ("stage", stage))), value

    before = dict([sample("reduce", "0.1", 5.0), sample("reduce", "+Inf", 6.0)])
    after = dict([sample("reduce", "0.1", 8.0), sample("reduce", "+Inf", 10.0), sample("predict", "0.1", 3.0)])
    assert commit_wait_buckets(before, after, "reduce") == {0.1: 3.0, float("inf"): 4.0}


def test_cpu_figures_are_ms_per_record_of_each_process_and_their_total():
    figures = cpu_figures("half", {"ingest": 1.0, "kafka": 2.0}, {"ingest": 1.5, "kafka": 4.0}, records=100)
    assert figures == pytest.approx({"half.ingest": 5.0, "half.kafka": 20.0, "half.total": 25.0})


def test_transactions_between_counts_the_committed_ones_of_every_service():
    def scrape(committed, aborted):
        return {
            ("fruits_transactions_total", (("outcome", "committed"), ("stage", "x"))): committed,
            ("fruits_transactions_total", (("outcome", "aborted"), ("stage", "x"))): aborted,
        }

    before = {"ingest": scrape(10.0, 1.0), "predict": scrape(3.0, 0.0)}
    after = {"ingest": scrape(25.0, 9.0), "predict": scrape(8.0, 2.0)}
    assert transactions_between(before, after) == 20.0


def test_summarise_gives_median_and_spread_of_the_runs_that_have_a_figure():
    summary = summarise([{"ratio": 0.5, "x": 1.0}, {"ratio": 0.7}, {"ratio": 0.6}])
    assert summary["ratio"] == {"median": 0.6, "min": 0.5, "max": 0.7, "runs": 3}
    assert summary["x"]["runs"] == 1


def test_round_trip_hop_seconds_include_the_wait_of_the_client():
    result = RoundTrip()
    headers = [source_header(10_000), hop_header(Hop("ingest", 10.5, 11.0, 11.25))]
    result.hops = {"a": (headers, 12.0), "b": (headers, 11.5)}
    seconds = result.hop_seconds()
    assert seconds["ingest", "wait"] == [0.5, 0.5]
    assert seconds["client", "wait"] == [0.25, 0.75]


def test_start_up_is_apart_from_the_latencies_of_the_photos_sent_after_it():
    sent, received = {"a": 0.0, "b": 0.5, "c": 3.0, "d": 4.0}, {"a": 2.0, "b": 2.1, "c": 3.25, "d": 4.5}
    result = RoundTrip(sent_at=sent, received_at=received)
    assert result.startup_seconds() == 2.0
    assert result.steady_latencies() == [0.25, 0.5]
    assert RoundTrip(sent_at={"a": 0.0}).startup_seconds() is None
    assert RoundTrip(sent_at={"a": 0.0}).steady_latencies() == []


def test_steady_hop_seconds_leave_out_the_photos_sent_before_the_first_prediction():
    early = [source_header(0), hop_header(Hop("ingest", 0.4, 0.5, 0.6))]  # waited for the client to connect
    late = [source_header(3_000), hop_header(Hop("ingest", 3.01, 3.1, 3.2))]
    result = RoundTrip(sent_at={"a": 0.0, "c": 3.0}, received_at={"a": 2.0, "c": 3.25})
    result.hops = {"a": (early, 2.0), "c": (late, 3.25)}
    assert result.hop_seconds()["ingest", "wait"] == pytest.approx([0.01, 0.4])
    assert result.hop_seconds(steady=True)["ingest", "wait"] == pytest.approx([0.01])


def test_a_variant_names_its_environment():
    assert parse_variant("lz4:FRUITS_KAFKA_COMPRESSION=lz4,MALLOC_ARENA_MAX=2") == (
        "lz4",
        {"FRUITS_KAFKA_COMPRESSION": "lz4", "MALLOC_ARENA_MAX": "2"},
    )
    assert parse_variant("url:X=a=b") == ("url", {"X": "a=b"})  # only the first = splits


@pytest.mark.parametrize("text", ["lz4", ":X=1", "baseline:X=1", "lz4:", "lz4:X=1,Y"])
def test_a_malformed_variant_is_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_variant(text)


def test_the_comparison_sets_each_variant_beside_the_baseline():
    def summary(ratio, p99):
        return summarise([{"ratio": ratio, "latency_ms.p99": p99}])

    lines: list[str] = []
    print_comparison({"baseline": summary(0.5, 200.0), "lz4": summary(0.6, 150.0)}, lines.append)
    text = "\n".join(lines)
    assert "lz4" in text
    assert "0.50 →       0.60  +20 %" in text
    assert "200 →        150  -25 %" in text


def test_round_trip_sends_with_the_sender_it_is_given_and_makes_none(monkeypatch, tmp_path):
    class Sent:
        def __init__(self):
            self.photos = []
            self.flushed = False

        def send_bytes(self, data, photo_id, name):
            self.photos.append(photo_id)

        def flush(self):
            self.flushed = True

    class Nothing:  # a consumer with no predictions
        def poll(self, timeout):
            return None

    class Reader:
        consumer = Nothing()

        def __init__(self, settings):
            pass

        def close(self):
            pass

    def no_new_sender(settings):
        raise AssertionError("round_trip made a sender of its own")

    monkeypatch.setattr(roundtrip, "PredictionReader", Reader)
    monkeypatch.setattr(roundtrip, "PhotoSender", no_new_sender)
    (tmp_path / "a.jpg").write_bytes(b"a")
    (tmp_path / "b.jpg").write_bytes(b"b")
    sender = Sent()
    result = roundtrip.round_trip(
        Settings(), [("p1", tmp_path / "a.jpg"), ("p2", tmp_path / "b.jpg")], timeout=0.01, sender=sender
    )
    assert sender.photos == ["p1", "p2"] and sender.flushed
    assert result.missing() == ["p1", "p2"]
