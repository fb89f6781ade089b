"""Dead-letter reasons and the batch-with-rejects helper that every stage uses."""

import pytest

from core.errors import Reason, RecordError, map_valid


def test_reasons_are_a_closed_set():
    assert RecordError(Reason.BAD_TENSOR, "x").reason == "bad_tensor"
    assert RecordError("bad_tensor", "x").reason is Reason.BAD_TENSOR  # the wire string maps back
    with pytest.raises(ValueError):
        RecordError("made_up_reason", "x")


def test_map_valid_applies_once_to_the_valid_items_and_keeps_the_order():
    calls = []

    def check(n):
        if n % 2:
            raise RecordError(Reason.BAD_FEATURES, f"{n} is odd")
        return n * 10

    def apply(values):
        calls.append(list(values))
        return [v + 1 for v in values]

    earlier = RecordError(Reason.CORRUPT_AVRO, "did not decode")
    out = map_valid([2, 3, earlier, 4], check, apply)
    assert calls == [[20, 40]]
    assert out[0] == 21 and out[3] == 41
    assert out[1].reason is Reason.BAD_FEATURES and out[2] is earlier


def test_map_valid_skips_apply_when_nothing_is_valid_and_keeps_rejects_from_apply():
    def refuse(n):
        raise RecordError(Reason.BAD_TENSOR, "no")

    assert [e.reason for e in map_valid([1, 2], refuse, lambda v: pytest.fail("applied"))] == ["bad_tensor"] * 2
    rejected_later = RecordError(Reason.UNKNOWN_MODEL_VERSION, "gone")
    assert map_valid([1, 2], lambda n: n, lambda v: [rejected_later, 7]) == [rejected_later, 7]


def test_map_valid_refuses_an_apply_that_loses_outcomes():
    with pytest.raises(ValueError, match="2 valid"):
        map_valid([1, 2], lambda n: n, lambda v: v[:1])
