"""Errors that route a record to the dead-letter topic instead of stopping a service."""

from __future__ import annotations


class RecordError(Exception):
    """This record cannot be processed; the stage carries on with the next one.

    ``reason`` is a short, bounded machine-readable class (it becomes a metric label
    and the dead letter's ``error_class``); the message explains it to a human.
    Any other exception is a bug or an outage: the service stops without committing,
    so the record is retried after a restart rather than lost.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
