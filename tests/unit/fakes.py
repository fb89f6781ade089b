"""Stand-ins shared by unit tests."""

from __future__ import annotations

import io

from botocore.exceptions import ClientError


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
