"""Time on the wire is google.protobuf.Timestamp; in storage it is integer microseconds since the epoch (UTC).

A Timestamp a caller sends is checked at the service boundary (`micros_from_request`): the
protobuf range is years 0001..9999 and nanos 0..999,999,999, and anything outside it is
INVALID_ARGUMENT INVALID_TIMESTAMP naming the field, never a value that overflows a BIGINT
column or a datetime further in.
"""

from __future__ import annotations

from google.protobuf import timestamp_pb2

from services.common.errors import InvalidArgument

MICROS_PER_SECOND = 1_000_000
TIMESTAMP_SECONDS_MIN = -62_135_596_800  # 0001-01-01T00:00:00Z
TIMESTAMP_SECONDS_MAX = 253_402_300_799  # 9999-12-31T23:59:59Z
NANOS_MAX = 999_999_999


def timestamp_from_micros(micros: int) -> timestamp_pb2.Timestamp:
    seconds, remainder = divmod(micros, MICROS_PER_SECOND)
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=remainder * 1000)


def micros_from_timestamp(timestamp: timestamp_pb2.Timestamp) -> int:
    return timestamp.seconds * MICROS_PER_SECOND + timestamp.nanos // 1000


def check_timestamp(timestamp: timestamp_pb2.Timestamp, field_name: str) -> None:
    """Refuse a Timestamp outside 0001-01-01..9999-12-31 UTC or with nanos outside 0..999,999,999."""
    if not TIMESTAMP_SECONDS_MIN <= timestamp.seconds <= TIMESTAMP_SECONDS_MAX:
        raise InvalidArgument(
            "INVALID_TIMESTAMP",
            f"{field_name} must lie in years 0001..9999 UTC (seconds {TIMESTAMP_SECONDS_MIN}..{TIMESTAMP_SECONDS_MAX})",
            field=field_name,
            seconds=timestamp.seconds,
        )
    if not 0 <= timestamp.nanos <= NANOS_MAX:
        raise InvalidArgument(
            "INVALID_TIMESTAMP",
            f"{field_name}.nanos must be 0..{NANOS_MAX}",
            field=field_name,
            nanos=timestamp.nanos,
        )


def micros_from_request(timestamp: timestamp_pb2.Timestamp, field_name: str) -> int:
    """A caller's Timestamp in microseconds, checked first (see check_timestamp)."""
    check_timestamp(timestamp, field_name)
    return micros_from_timestamp(timestamp)
