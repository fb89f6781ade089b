"""The stage loop without a broker: batching offsets, per-record error isolation, and every
error branch of the transactional loop, driven by the fake producer and consumer of
tests/unit/fakes.py that raise each kind of error."""

import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timezone

import pytest
from botocore.exceptions import EndpointConnectionError
from confluent_kafka import KafkaError
from prometheus_client import REGISTRY

from core import kafka
from core.errors import DependencyError, Reason, RecordError
from core.kafka import FatalKafkaError, Received, Stage, StageRunner, StopFlag, next_offsets, per_record
from core.records import DeadLetter, PhotoEvent, decode_record, encode_record
from core.settings import Settings
from tests.unit.fakes import FakeCluster, FakeConsumer, FakeProducer, kafka_error


class FakeMessage:
    def __init__(self, topic, partition, offset):
        self._t, self._p, self._o = topic, partition, offset

    def topic(self):
        return self._t

    def partition(self):
        return self._p

    def offset(self):
        return self._o


def test_next_offsets_are_one_past_the_highest_per_partition():
    msgs = [FakeMessage("t", 0, 5), FakeMessage("t", 1, 7), FakeMessage("t", 0, 6), FakeMessage("u", 0, 1)]
    got = {(tp.topic, tp.partition): tp.offset for tp in next_offsets(msgs)}
    assert got == {("t", 0): 7, ("t", 1): 8, ("u", 0): 2}


def test_per_record_keeps_order_and_isolates_record_errors():
    def transform(received):
        if received.record["n"] == 2:
            raise RecordError(Reason.BAD_EVENT, "two is bad")
        return received.record["n"] * 10

    now = datetime.now(timezone.utc)
    out = per_record(transform)([Received({"n": n}, now) for n in (1, 2, 3)])
    assert out[0] == 10 and out[2] == 30
    assert isinstance(out[1], RecordError) and out[1].reason == Reason.BAD_EVENT


# --- The transactional loop, driven by the fakes of tests/unit/fakes.py ---------------------

SETTINGS = Settings(
    max_batch_records=4,
    commit_interval_seconds=0,
    retry_backoff_initial_seconds=0.1,
    retry_backoff_max_seconds=0.8,
    transaction_retries=3,
    transform_attempts=3,
    topic_dead_letter="dead",
    metrics_enabled=True,
)
CAPTURED = datetime(2026, 1, 1, tzinfo=timezone.utc)


def event(n: int, secret: str = "") -> PhotoEvent:
    return PhotoEvent(photo_id=f"p{n}", user_id="u", captured_at=CAPTURED, region="eu", image=secret.encode() or b"x")


def cluster_of(events_per_partition: int = 5, partitions: int = 2, secret: dict[int, str] | None = None) -> FakeCluster:
    secret = secret or {}
    records: dict[int, list[tuple[bytes, bytes]]] = {}
    for p in range(partitions):
        numbers = [p * 100 + i for i in range(events_per_partition)]
        records[p] = [(f"p{n}".encode(), encode_record(event(n, secret.get(n, "")))) for n in numbers]
    return FakeCluster("in", records)


def tag(batch):
    return [replace(r.record, region="us") for r in batch]


def loop_stage(name: str, transform=tag) -> Stage:
    return Stage(name=name, input_topic="in", input_type=PhotoEvent, output_topic="out", transform=transform)


@dataclass
class Run:
    cluster: FakeCluster
    producer: FakeProducer
    consumer: FakeConsumer
    waits: list[float]
    stop: StopFlag


def run_loop(stage, cluster, producer=None, consumer=None, settings=SETTINGS, stop_after_waits=None) -> Run:
    """Run the stage until every record is taken and nothing is left to do (or SIGTERM, as
    ``stop_after_waits`` waits came)."""
    stop = StopFlag()
    producer = producer or FakeProducer(cluster)
    consumer = consumer or FakeConsumer(cluster)
    consumer.on_idle = stop.event.set
    waits: list[float] = []

    def sleep(seconds: float) -> bool:
        waits.append(seconds)
        if stop_after_waits is not None and len(waits) >= stop_after_waits:
            stop.event.set()
        return bool(stop)

    StageRunner(stage, settings, stop, "0", consumer=consumer, producer=producer, sleep=sleep).run()
    assert consumer.closed
    return Run(cluster, producer, consumer, waits, stop)


def outputs(cluster: FakeCluster) -> Counter:
    """(topic, photo id) of every committed record: each valid input should be there once."""
    return Counter((topic, key.decode()) for topic, key, _ in cluster.output)


def all_once(cluster: FakeCluster, topic: str = "out", but: frozenset = frozenset()) -> Counter:
    keys = [m.key().decode() for log in cluster.logs.values() for m in log]
    return Counter({(("dead" if key in but else topic), key): 1 for key in keys})


def dead_letters(cluster: FakeCluster) -> dict[str, DeadLetter]:
    return {key.decode(): decode_record(DeadLetter, value) for topic, key, value in cluster.output if topic == "dead"}


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_every_record_is_produced_once_and_its_offset_committed():
    run = run_loop(loop_stage("loop-ok"), cluster_of())
    assert outputs(run.cluster) == all_once(run.cluster)
    assert run.cluster.at_end() and run.cluster.transactions == {"committed": 3, "aborted": 0}
    decoded = [decode_record(PhotoEvent, value) for _, _, value in run.cluster.output]
    assert {e.region for e in decoded} == {"us"}
    assert run.waits == []


ABORTABLE = kafka_error(KafkaError._STATE, abortable=True)


@pytest.mark.parametrize("call", ["produce", "send_offsets_to_transaction", "commit_transaction"])
def test_an_abortable_error_aborts_rewinds_and_redoes_the_batch(call):
    cluster = cluster_of()
    # The second call fails: in the first batch for produce, in the second for the others.
    faults = {call: [None, ABORTABLE]}
    run = run_loop(loop_stage(f"loop-abort-{call}"), cluster, FakeProducer(cluster, faults))
    assert outputs(cluster) == all_once(cluster)  # no loss, no duplicate
    assert cluster.at_end() and cluster.transactions["aborted"] == 1
    assert run.producer.calls.count("abort_transaction") == 1
    assert metric("fruits_transactions_total", stage=f"loop-abort-{call}", outcome="aborted") == 1


@pytest.mark.parametrize("call", ["produce", "send_offsets_to_transaction", "commit_transaction"])
def test_a_fatal_error_ends_the_run_for_a_restart(call):
    cluster = cluster_of()
    fenced = kafka_error(KafkaError._FENCED, fatal=True)
    with pytest.raises(FatalKafkaError, match="_FENCED"):
        run_loop(loop_stage(f"loop-fenced-{call}"), cluster, FakeProducer(cluster, {call: [fenced]}))
    assert cluster.output == [] and cluster.committed == {}


def test_a_fenced_consumer_ends_the_run_for_a_restart():
    cluster = cluster_of()
    fenced = KafkaError(KafkaError._FENCED, "static consumer fenced", fatal=True)
    consumer = FakeConsumer(cluster, errors_at={1: fenced})
    with pytest.raises(FatalKafkaError, match="fenced"):
        run_loop(loop_stage("loop-fenced-consumer"), cluster, consumer=consumer)
    assert consumer.closed and cluster.output == []


def test_a_transient_consumer_error_is_logged_and_the_loop_goes_on(caplog):
    cluster = cluster_of()
    consumer = FakeConsumer(cluster, errors_at={1: KafkaError(KafkaError._ALL_BROKERS_DOWN, "all brokers down")})
    run_loop(loop_stage("loop-consumer-news"), cluster, consumer=consumer)
    assert outputs(cluster) == all_once(cluster)
    assert "all brokers down" in caplog.text


def test_run_stage_exits_with_the_restart_status_on_a_fatal_error(monkeypatch, tmp_path, caplog):
    class Fenced:
        def __init__(self, *args, **kwargs):
            pass

        def run(self):
            raise FatalKafkaError("commit_transaction: fenced")

    monkeypatch.setattr(kafka, "StageRunner", Fenced)
    monkeypatch.setattr(kafka, "metadata_problem", lambda settings, timeout: None)
    monkeypatch.setattr(kafka.StopFlag, "install", lambda self: None)
    settings = Settings(state_dir=tmp_path, metrics_enabled=False)
    with pytest.raises(SystemExit) as exited:
        kafka.run_stage(loop_stage("loop-exit"), settings)
    assert exited.value.code == kafka.EXIT_RESTART
    assert "fenced; exiting (status 75) to be restarted" in caplog.text


def test_a_stage_started_while_kafka_is_away_waits_for_it_instead_of_exiting(monkeypatch, tmp_path, caplog):
    answers = [kafka_error(KafkaError._TRANSPORT).args[0], kafka_error(KafkaError._ALL_BROKERS_DOWN).args[0], None]
    ran = []

    class Runner:
        def __init__(self, *args, **kwargs):
            pass

        def run(self):
            ran.append(True)

    monkeypatch.setattr(kafka, "StageRunner", Runner)
    monkeypatch.setattr(kafka, "metadata_problem", lambda settings, timeout: answers.pop(0))
    monkeypatch.setattr(kafka.StopFlag, "install", lambda self: None)
    settings = Settings(state_dir=tmp_path, metrics_enabled=False, retry_backoff_initial_seconds=0.01)
    kafka.run_stage(loop_stage("loop-wait"), settings)
    assert ran == [True] and answers == []
    waits = [line for line in caplog.messages if "loop-wait: Kafka at" in line and "is unavailable" in line]
    assert [line.rsplit("retrying in ", 1)[1] for line in waits] == ["0.0 s", "0.0 s"]


def test_a_refused_login_at_start_is_not_waited_out(monkeypatch, tmp_path):
    refused = kafka_error(KafkaError._AUTHENTICATION).args[0]
    monkeypatch.setattr(kafka, "metadata_problem", lambda settings, timeout: refused)
    monkeypatch.setattr(kafka.StopFlag, "install", lambda self: None)
    with pytest.raises(ConnectionError, match="refused the login"):
        settings = Settings(state_dir=tmp_path, metrics_enabled=False, kafka_username="u", kafka_password="wrong")
        kafka.run_stage(loop_stage("loop-login"), settings)


RETRIABLE = kafka_error(KafkaError._TIMED_OUT, retriable=True)


def test_a_retriable_commit_error_calls_commit_again_after_a_growing_wait():
    cluster = cluster_of()
    run = run_loop(loop_stage("loop-retry"), cluster, FakeProducer(cluster, {"commit_transaction": [RETRIABLE] * 2}))
    assert run.waits == [0.1, 0.2]
    assert outputs(cluster) == all_once(cluster) and cluster.transactions["aborted"] == 0
    assert run.producer.calls.count("commit_transaction") == 3 + 2
    assert metric("fruits_retries_total", stage="loop-retry", cause="kafka") == 2
    assert metric("fruits_retry_wait_seconds_total", stage="loop-retry", cause="kafka") == pytest.approx(0.3)


def test_past_its_retries_a_retriable_error_is_waited_out_as_a_kafka_outage(caplog):
    cluster = cluster_of()
    producer = FakeProducer(cluster, {"send_offsets_to_transaction": [RETRIABLE] * 6})
    run = run_loop(loop_stage("loop-outage"), cluster, producer)
    assert run.waits == [0.1, 0.2, 0.4, 0.8, 0.8, 0.8]  # 3 retries, then at the longest interval
    assert "Kafka is unavailable: send_offsets_to_transaction failed 4 times" in caplog.text
    assert metric("fruits_retries_total", stage="loop-outage", cause="kafka") == 3
    assert metric("fruits_retries_total", stage="loop-outage", cause="dependency") == 3
    assert outputs(cluster) == all_once(cluster) and cluster.transactions["aborted"] == 0


def test_sigterm_while_waiting_for_kafka_leaves_without_committing(caplog):
    cluster = cluster_of()
    producer = FakeProducer(cluster, {"commit_transaction": [RETRIABLE] * 100})
    run = run_loop(loop_stage("loop-stop"), cluster, producer, stop_after_waits=4)
    assert len(run.waits) == 4 and cluster.output == [] and cluster.committed == {}
    assert "abort_transaction" not in producer.calls  # librdkafka allows only commit again: the broker aborts it
    assert "stopped while waiting for Kafka" in caplog.text


def test_an_abortable_error_after_retries_aborts_and_redoes():
    cluster = cluster_of()
    producer = FakeProducer(cluster, {"commit_transaction": [RETRIABLE, ABORTABLE]})
    run = run_loop(loop_stage("loop-retry-abort"), cluster, producer)
    assert run.waits == [0.1]
    assert outputs(cluster) == all_once(cluster) and cluster.transactions["aborted"] == 1


@pytest.mark.parametrize("lost", [False, True], ids=["revoked", "lost"])
def test_partitions_taken_mid_batch_abort_it_and_their_records_are_redone(lost):
    """The transaction spans several polls (a trickle, commit interval > 0); inside the third
    a rebalance runs and that poll returns records of the old assignment."""
    cluster = cluster_of()
    consumer = FakeConsumer(cluster, per_call=1, rebalance_at=(3,), lost=lost)
    settings = SETTINGS.model_copy(update={"commit_interval_seconds": 30.0})
    name = f"loop-rebalance-{'lost' if lost else 'revoked'}"
    run = run_loop(loop_stage(name), cluster, consumer=consumer, settings=settings)
    assert outputs(cluster) == all_once(cluster)
    assert cluster.at_end() and cluster.transactions["aborted"] == 1
    # aborted by the revoke callback, before the partitions go to their new owner
    assert cluster.events[:2] == ["aborted", "handed over"]
    assert metric("fruits_rebalances_total", stage=name, event="lost" if lost else "revoked") == 1
    assert metric("fruits_rebalances_total", stage=name, event="assigned") == 2


def poisoned(poison: set[str], calls: list[list[str]] | None = None, transient: int = 0):
    """A transform that raises ValueError (quoting the record) on a batch holding a poison
    record; ``transient``: the first that many calls fail whatever they hold."""
    failures = {"left": transient}

    def transform(batch):
        ids = [r.record.photo_id for r in batch]
        if calls is not None:
            calls.append(ids)
        if failures["left"] > 0:
            failures["left"] -= 1
            raise RuntimeError("flaky")
        for r in batch:
            if r.record.photo_id in poison:
                raise ValueError(f"cannot handle {r.record.image!r}")
        return tag(batch)

    return transform


def test_a_poison_record_is_dead_lettered_as_internal_error_and_the_others_go_on():
    cluster = cluster_of(secret={101: "secret-payload"})
    calls: list[list[str]] = []
    run = run_loop(loop_stage("loop-poison", poisoned({"p101"}, calls)), cluster)
    assert outputs(cluster) == all_once(cluster, but=frozenset({"p101"}))
    (letter,) = dead_letters(cluster).values()
    assert letter.error_class == "internal_error" and letter.stage == "loop-poison"
    assert letter.error_message == "ValueError raised in 3 tries"
    assert "secret" not in letter.error_message
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == ("in", 1, 1)
    assert letter.original_value == cluster.logs[1][1].value() and letter.photo_id == "p101"
    assert calls.count(["p101"]) == 3  # tried alone as often as the batch was
    assert sum("p101" in ids and len(ids) > 1 for ids in calls) == 3 + 1  # the batch, then its failing half
    assert cluster.at_end() and cluster.transactions["aborted"] == 0 and run.waits == []
    assert metric("fruits_dead_letters_total", stage="loop-poison", reason="internal_error") == 1
    assert metric("fruits_retries_total", stage="loop-poison", cause="transform") == 2 + 2


def test_every_poison_record_of_a_batch_is_found():
    cluster = cluster_of(events_per_partition=8, partitions=1)
    SETTINGS_8 = SETTINGS.model_copy(update={"max_batch_records": 8})
    run_loop(loop_stage("loop-poison-two", poisoned({"p2", "p7"})), cluster, settings=SETTINGS_8)
    assert outputs(cluster) == all_once(cluster, but=frozenset({"p2", "p7"}))
    assert {key: letter.error_class for key, letter in dead_letters(cluster).items()} == {
        "p2": "internal_error", "p7": "internal_error"
    }  # fmt: skip


def test_a_transient_transform_failure_is_retried_and_nothing_is_dead_lettered():
    cluster = cluster_of()
    run_loop(loop_stage("loop-flaky", poisoned(set(), transient=2)), cluster)
    assert outputs(cluster) == all_once(cluster)
    assert metric("fruits_retries_total", stage="loop-flaky", cause="transform") == 2


def failing_with(errors: list[Exception]):
    def transform(batch):
        if errors:
            raise errors.pop(0)
        return tag(batch)

    return transform


def endpoint_down() -> Exception:
    return EndpointConnectionError(endpoint_url="http://s3:8333/bucket/key")


def refused_then_wrapped() -> Exception:
    try:
        raise ConnectionRefusedError(111, "Connection refused")
    except ConnectionRefusedError:
        try:
            raise RuntimeError("client library gave up")  # a wrapper that keeps the cause as context
        except RuntimeError as wrapper:
            return wrapper


@pytest.mark.parametrize(
    "outage",
    [lambda: DependencyError("model store", "EndpointConnectionError"), endpoint_down, refused_then_wrapped],
    ids=["DependencyError", "botocore-unwrapped", "network-cause"],
)
def test_a_dependency_outage_is_waited_out_and_never_dead_lettered(outage, caplog):
    cluster = cluster_of()
    name = f"loop-outage-{outage.__name__}"
    run = run_loop(loop_stage(name, failing_with([outage() for _ in range(5)])), cluster)
    assert outputs(cluster) == all_once(cluster) and dead_letters(cluster) == {}
    assert run.waits == [0.1, 0.2, 0.4, 0.8, 0.8]
    assert cluster.transactions["aborted"] == 5  # each try's transaction
    assert metric("fruits_retries_total", stage=name, cause="dependency") == 5
    assert "is unavailable" in caplog.text


def test_an_output_the_schema_refuses_is_dead_lettered_not_a_crash():
    cluster = cluster_of(events_per_partition=2, partitions=1)
    bad = lambda batch: [replace(r.record, photo_id=None) if r.record.photo_id == "p1" else r.record for r in batch]  # noqa: E731
    run_loop(loop_stage("loop-bad-output", bad), cluster)
    assert outputs(cluster) == Counter({("out", "p0"): 1, ("dead", "p1"): 1})
    assert dead_letters(cluster)["p1"].error_message.endswith("encoding the output")


def test_the_watchdog_ends_a_call_blocked_past_its_timeout_and_only_that():
    wedged = threading.Event()
    watchdog = kafka.Watchdog("loop-watchdog", limit=0.3, interval=0.05, on_wedged=wedged.set).start()
    with watchdog.watching("commit_transaction"):
        time.sleep(0.1)  # a call that returns in time
    assert not wedged.wait(0.5)
    with watchdog.watching("send_offsets_to_transaction"):
        assert wedged.wait(2)  # blocked: librdkafka ignoring its timeout


def test_the_loop_marks_each_blocking_kafka_call_for_the_watchdog():
    cluster = cluster_of(events_per_partition=1, partitions=1)
    seen: list[str] = []

    class Recording(kafka.Watchdog):
        def watching(self, name):
            seen.append(name)
            return super().watching(name)

    stop = StopFlag()
    consumer = FakeConsumer(cluster)
    consumer.on_idle = stop.event.set
    watchdog = Recording("loop-watched", on_wedged=lambda: None)
    StageRunner(loop_stage("loop-watched"), SETTINGS, stop, "0", consumer=consumer, producer=FakeProducer(cluster),
                sleep=lambda s: False, watchdog=watchdog).run()  # fmt: skip
    assert seen == ["init_transactions", "begin_transaction", "send_offsets_to_transaction", "commit_transaction"]


def test_after_kafka_was_lost_the_next_transaction_has_a_new_producer(caplog):
    """librdkafka's producer may keep a dead coordinator after the brokers restarted (and wedge
    in send_offsets_to_transaction): the loop makes a new one between transactions."""
    cluster = cluster_of()
    made: list[FakeProducer] = []

    def new_producer() -> FakeProducer:
        made.append(FakeProducer(cluster))
        return made[-1]

    stop = StopFlag()
    consumer = FakeConsumer(cluster)
    consumer.on_idle = stop.event.set
    runner = StageRunner(loop_stage("loop-renew"), SETTINGS, stop, "0", consumer=consumer, new_producer=new_producer,
                         sleep=lambda s: False)  # fmt: skip
    lost = KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down")
    consumer.hooks[3] = lambda: runner._client_error(lost)  # the second transaction's first poll
    runner.run()
    assert len(made) == 2
    assert made[0].calls.count("commit_transaction") == 1 and made[0].state == "ready"
    assert made[1].calls[:2] == ["init_transactions", "begin_transaction"]
    assert outputs(cluster) == all_once(cluster) and cluster.transactions["aborted"] == 0
    assert "Kafka is unavailable" in caplog.text and "starting a new transactional producer" in caplog.text


@pytest.mark.parametrize("news", ["all brokers down", "transport failure"])
def test_kafka_lost_mid_transaction_drops_it_for_a_new_producer_instead_of_trying_again(news, caplog):
    """Once every broker went away, or the coordinator's connection broke, the open transaction's
    next try on the old producer may wedge after the broker is back (librdkafka 5456): a retriable
    failure then drops the transaction, without an abort that could wedge too, for a new producer
    whose init_transactions aborts it; its records are redone once."""
    cluster = cluster_of()
    made: list[FakeProducer] = []
    lost = KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down")
    failure = RETRIABLE if news == "all brokers down" else kafka_error(KafkaError._TRANSPORT, retriable=True)

    class LosingTheBroker(FakeProducer):
        def poll(self, timeout=0):
            if news == "all brokers down":
                runner._client_error(lost)  # librdkafka serves its error news in poll
            return super().poll(timeout)

    def new_producer() -> FakeProducer:
        made.append(LosingTheBroker(cluster, {"send_offsets_to_transaction": [failure]}) if not made
                    else FakeProducer(cluster))  # fmt: skip
        return made[-1]

    stop = StopFlag()
    consumer = FakeConsumer(cluster)
    consumer.on_idle = stop.event.set
    runner = StageRunner(loop_stage("loop-lost"), SETTINGS, stop, "0", consumer=consumer, new_producer=new_producer,
                         sleep=lambda s: False)  # fmt: skip
    runner.run()
    assert len(made) == 2
    assert made[0].calls.count("send_offsets_to_transaction") == 1 and "purge" in made[0].calls
    assert "abort_transaction" not in made[0].calls and "commit_transaction" not in made[0].calls
    assert made[1].calls[0] == "init_transactions"
    assert outputs(cluster) == all_once(cluster)
    assert "dropping the transaction of 4 records" in caplog.text


# --- Hop headers (core.hops) ---------------------------------------------------------------


def test_the_first_stage_stamps_the_source_time_and_its_own_hop():
    from core.hops import SOURCE_HEADER, parse

    cluster = cluster_of(events_per_partition=2, partitions=1)
    before = time.time()
    run = run_loop(loop_stage("loop-hops-first"), cluster)
    after = time.time()
    assert len(run.producer.headers) == 2
    for headers, message in zip(run.producer.headers, cluster.logs[0]):
        assert headers[0] == (SOURCE_HEADER, str(message.timestamp()[1] * 1000).encode())
        source, (hop,) = parse(headers)
        assert hop.stage == "loop-hops-first"
        assert before <= hop.received <= hop.processed <= hop.produced <= after


def test_hop_headers_are_carried_on_and_a_replay_header_is_not():
    from confluent_kafka import TIMESTAMP_CREATE_TIME, Message

    from core.hops import Hop, hop_header, parse

    upstream = [hop_header(Hop("up", 1.0, 2.0, 3.0))]
    cluster = cluster_of(events_per_partition=1, partitions=1)
    original = cluster.logs[0][0]
    cluster.logs[0][0] = Message(
        topic="in", partition=0, offset=0, key=original.key(), value=original.value(),
        headers=[("fruits-replay-of", b"dead[0]@7"), *upstream], timestamp=(TIMESTAMP_CREATE_TIME, 1_000),
    )  # fmt: skip
    run = run_loop(loop_stage("loop-hops-carried"), cluster)
    (headers,) = run.producer.headers
    assert headers[0] == upstream[0]
    assert all(name.startswith("fruits-hop-") for name, _ in headers)
    assert [hop.stage for hop in parse(headers)[1]] == ["up", "loop-hops-carried"]


def test_dead_letters_carry_no_hop_headers():
    def reject(batch):
        return [RecordError(Reason.BAD_EVENT, "no") for _ in batch]

    run = run_loop(loop_stage("loop-hops-dead", reject), cluster_of(events_per_partition=2, partitions=1))
    assert len(dead_letters(run.cluster)) == 2
    assert run.producer.headers == [None, None]


def test_the_last_stage_records_every_hop_and_each_stage_its_commit_wait():
    stage = replace(loop_stage("loop-hops-last"), observes_hops=True)
    run_loop(stage, cluster_of(events_per_partition=3, partitions=1))
    assert metric("fruits_hop_seconds_count", hop="loop-hops-last", part="process") == 3
    assert metric("fruits_hop_seconds_count", hop="loop-hops-last", part="wait") == 3  # from the source
    assert metric("fruits_commit_wait_seconds_count", stage="loop-hops-last") == 3
    run_loop(loop_stage("loop-hops-middle"), cluster_of(events_per_partition=3, partitions=1))
    assert metric("fruits_hop_seconds_count", hop="loop-hops-middle", part="process") == 0
    assert metric("fruits_commit_wait_seconds_count", stage="loop-hops-middle") == 3
