"""Stand-ins shared by unit tests."""

from __future__ import annotations

import io
from collections.abc import Callable

from botocore.exceptions import ClientError
from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_CREATE_TIME,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)


class MemoryS3:
    """The calls ModelStore makes, on a dict."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}

    def put_object(self, Bucket: str, Key: str, Body: bytes, **_: object) -> None:
        self.objects[Bucket, Key] = Body

    def get_object(self, Bucket: str, Key: str) -> dict:
        if (Bucket, Key) not in self.objects:
            raise ClientError({"Error": {"Code": "NoSuchKey"}}, "GetObject")
        return {"Body": io.BytesIO(self.objects[Bucket, Key])}

    def get_paginator(self, operation: str) -> MemoryS3:
        assert operation == "list_objects_v2"
        return self

    def paginate(self, Bucket: str, Prefix: str, Delimiter: str) -> list[dict]:
        prefixes = sorted({
            Prefix + key[len(Prefix):].split(Delimiter, 1)[0] + Delimiter
            for bucket, key in self.objects
            if bucket == Bucket and key.startswith(Prefix) and Delimiter in key[len(Prefix):]
        })  # fmt: skip
        return [{"CommonPrefixes": [{"Prefix": p} for p in prefixes]}]


# --- Kafka ------------------------------------------------------------------------------------
# A broker, transactional producer and consumer that keep the rules the stage loop depends on:
# a transaction's records and offsets count only once committed; after a retriable error only
# the same call may follow (librdkafka refuses another one); after an abortable error only an
# abort; after a fatal one nothing. Each call can be made to fail: ``faults`` maps a method
# name to the outcomes of its successive calls (an exception to raise, or None to succeed).


def kafka_error(code: int, *, retriable: bool = False, abortable: bool = False, fatal: bool = False) -> KafkaException:
    return KafkaException(KafkaError(code, "injected", fatal=fatal, retriable=retriable, txn_requires_abort=abortable))


class FakeCluster:
    """One input topic's records, the stage's group (committed offsets, generation) and the
    records of committed transactions (``output``: topic, key, value)."""

    def __init__(self, topic: str, records: dict[int, list[tuple[bytes, bytes]]]) -> None:
        self.topic = topic
        self.logs = {
            partition: [
                Message(topic=topic, partition=partition, offset=offset, key=key, value=value,
                        timestamp=(TIMESTAMP_CREATE_TIME, 1_700_000_000_000 + offset))
                for offset, (key, value) in enumerate(values)
            ]
            for partition, values in records.items()
        }  # fmt: skip
        self.committed: dict[int, int] = {}
        self.generation = 1
        self.output: list[tuple[str, bytes | None, bytes]] = []
        self.transactions = {"committed": 0, "aborted": 0}
        self.events: list[str] = []
        """What happened, in order: committed, aborted, handed over (partitions left a consumer)."""

    def at_end(self) -> bool:
        return all(self.committed.get(p, 0) == len(log) for p, log in self.logs.items())


class FakeProducer:
    def __init__(self, cluster: FakeCluster, faults: dict[str, list[Exception | None]] | None = None) -> None:
        self.cluster = cluster
        self.faults = {name: list(outcomes) for name, outcomes in (faults or {}).items()}
        self.calls: list[str] = []
        self.state = "uninitialised"
        self.resume: str | None = None
        """The transactional call that failed retriably: the only one allowed next."""
        self.pending: list[tuple[str, bytes | None, bytes]] = []
        self.headers: list[list[tuple[str, bytes]] | None] = []
        """The headers of each produced record, in order (committed or not)."""
        self.pending_offsets: list[TopicPartition] = []

    def _enter(self, name: str, *allowed_states: str) -> None:
        self.calls.append(name)
        assert self.state != "fatal", f"{name} after a fatal error"
        assert self.resume in (None, name), f"{name} while {self.resume} must be called again"
        assert self.state in allowed_states, f"{name} in state {self.state}"
        outcomes = self.faults.get(name)
        error = outcomes.pop(0) if outcomes else None
        if error is None:
            self.resume = None
            return
        kafka = error.args[0] if isinstance(error, KafkaException) else None
        retriable = kafka is not None and kafka.retriable() and name != "produce"
        self.resume = name if retriable else None
        if kafka is not None and kafka.fatal():
            self.state = "fatal"
        elif kafka is not None and kafka.txn_requires_abort():
            self.state = "abortable"
        raise error

    def init_transactions(self, timeout: float | None = None) -> None:
        self._enter("init_transactions", "uninitialised")
        self.state = "ready"

    def begin_transaction(self) -> None:
        self._enter("begin_transaction", "ready")
        self.state = "in_transaction"

    def produce(
        self, topic: str, key: bytes | None = None, value: bytes = b"", headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        self._enter("produce", "in_transaction")
        self.pending.append((topic, key, value))
        self.headers.append(headers)

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float | None = None) -> int:
        return 0

    def purge(self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True) -> None:
        self.calls.append("purge")
        self.pending = []

    def send_offsets_to_transaction(self, offsets: list[TopicPartition], group: object, timeout: float = -1) -> None:
        self._enter("send_offsets_to_transaction", "in_transaction")
        if group != self.cluster.generation:  # the broker refuses offsets of an earlier generation
            self.state = "abortable"
            raise kafka_error(KafkaError.ILLEGAL_GENERATION, abortable=True)
        self.pending_offsets = offsets

    def commit_transaction(self, timeout: float = -1) -> None:
        self._enter("commit_transaction", "in_transaction")
        self.cluster.output += self.pending
        for tp in self.pending_offsets:
            self.cluster.committed[tp.partition] = tp.offset
        self.cluster.transactions["committed"] += 1
        self.cluster.events.append("committed")
        self._end()

    def abort_transaction(self, timeout: float = -1) -> None:
        self._enter("abort_transaction", "in_transaction", "abortable")
        self.cluster.transactions["aborted"] += 1
        self.cluster.events.append("aborted")
        self._end()

    def _end(self) -> None:
        self.pending, self.pending_offsets, self.state = [], [], "ready"


class FakeConsumer:
    """Subscribed to the cluster's topic, assigned all its partitions at the first poll.

    ``per_call`` caps the records one poll/consume returns (a trickle keeps a transaction
    open over several polls). ``rebalance_at`` holds the poll/consume calls (counted from 1)
    inside which a rebalance happens, as librdkafka may do it: records of the old assignment
    are taken first, then the revoke (``lost=True``: lost) and assign callbacks run (the
    positions restart from the committed offsets), and the call returns the old records.
    ``on_idle`` runs when a poll finds nothing left (tests stop the loop there); ``hooks`` run
    at the start of the poll/consume calls they are keyed by."""

    def __init__(self, cluster: FakeCluster, *, per_call: int = 1000, rebalance_at: tuple[int, ...] = (),
                 lost: bool = False, errors_at: dict[int, KafkaError] | None = None) -> None:  # fmt: skip
        self.cluster = cluster
        self.per_call = per_call
        self.rebalance_at = rebalance_at
        self.lost = lost
        self.errors_at = errors_at or {}
        self.on_idle: Callable[[], object] = lambda: None
        self.hooks: dict[int, Callable[[], object]] = {}
        self.calls = 0
        self.positions: dict[int, int] = {}
        self.assigned: list[int] = []
        self.callbacks: dict[str, Callable[..., None]] = {}
        self.closed = False

    def subscribe(self, topics: list[str], on_assign=None, on_revoke=None, on_lost=None) -> None:
        assert topics == [self.cluster.topic]
        self.callbacks = {"assign": on_assign, "revoke": on_revoke, "lost": on_lost}

    def _partitions(self) -> list[TopicPartition]:
        return [TopicPartition(self.cluster.topic, p) for p in self.assigned]

    def _assign(self) -> None:
        self.assigned = sorted(self.cluster.logs)
        self.positions = {p: self.cluster.committed.get(p, 0) for p in self.assigned}
        self.callbacks["assign"](self, self._partitions())

    def _take(self, limit: int) -> list[Message]:
        taken: list[Message] = []
        for partition in self.assigned:
            log = self.cluster.logs[partition]
            while len(taken) < limit and self.positions[partition] < len(log):
                taken.append(log[self.positions[partition]])
                self.positions[partition] += 1
        return taken

    def _call(self, limit: int) -> list[Message]:
        assert not self.closed
        self.calls += 1
        assert self.calls < 2000, "the loop does not get anywhere"
        if self.calls in self.hooks:
            self.hooks[self.calls]()
        if not self.assigned:
            self._assign()
        if self.calls in self.errors_at:
            return [Message(error=self.errors_at[self.calls])]
        taken = self._take(min(limit, self.per_call))
        if self.calls in self.rebalance_at:
            gone = self._partitions()
            self.assigned, self.positions = [], {}
            self.callbacks["lost" if self.lost else "revoke"](self, gone)
            self.cluster.events.append("handed over")
            self.cluster.generation += 1
            self._assign()
        return taken

    def poll(self, timeout: float | None = None) -> Message | None:
        taken = self._call(1)
        if not taken:
            self.on_idle()
        return taken[0] if taken else None

    def consume(self, num_messages: int = 1, timeout: float | None = None) -> list[Message]:
        return self._call(num_messages)

    def assignment(self) -> list[TopicPartition]:
        return self._partitions()

    def committed(self, partitions: list[TopicPartition], timeout: float | None = None) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self.cluster.committed.get(tp.partition, -1001))
                for tp in partitions]  # fmt: skip

    def seek(self, tp: TopicPartition) -> None:
        assert tp.partition in self.assigned
        self.positions[tp.partition] = 0 if tp.offset == OFFSET_BEGINNING else tp.offset

    def consumer_group_metadata(self) -> int:
        return self.cluster.generation

    def close(self) -> None:
        self.closed = True
