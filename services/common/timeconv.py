"""Time on the wire is google.protobuf.Timestamp; in storage it is integer microseconds since the epoch (UTC)."""

from __future__ import annotations

from google.protobuf import timestamp_pb2

MICROS_PER_SECOND = 1_000_000


def timestamp_from_micros(micros: int) -> timestamp_pb2.Timestamp:
    seconds, remainder = divmod(micros, MICROS_PER_SECOND)
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=remainder * 1000)


def micros_from_timestamp(timestamp: timestamp_pb2.Timestamp) -> int:
    return timestamp.seconds * MICROS_PER_SECOND + timestamp.nanos // 1000
