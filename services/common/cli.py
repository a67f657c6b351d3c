"""What the operator's command-line tools share (coalition-finance, coalition-admin).

They dial a service with the operator's TLS identity (services/common/tls.client_transport:
COALITION_CLIENT_TLS_*, or `var/tls/operator.*` in development), send the admin key
(COALITION_ADMIN_API_KEY; its published value in development only), and print a refusal as one
line with the status, the ErrorInfo reason and its metadata. Exit statuses: EXIT_OK, EXIT_REFUSED
(the server refused or could not be reached; the reason is printed), EXIT_USAGE (bad command
line or settings, as argparse and settings_or_exit already use).
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from services.common.addresses import dial_address
from services.common.auth import DEV_ADMIN_API_KEY
from services.common.config import env_str, settings_or_exit, zone_of
from services.common.errors import error_info_of
from services.common.mode import secret_setting
from services.common.tls import client_transport

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2

ADMIN_KEY_SETTING = "COALITION_ADMIN_API_KEY"


def admin_metadata(request_id: str = "") -> tuple[tuple[str, str], ...]:
    """The admin key as bearer metadata, and the caller's request id for the service's log line."""
    admin_key = settings_or_exit(lambda: secret_setting(ADMIN_KEY_SETTING, DEV_ADMIN_API_KEY))
    metadata = (("authorization", f"Bearer {admin_key}"),)
    return metadata + ((("x-request-id", request_id),) if request_id else ())


def operator_channel(service: str) -> grpc.Channel:
    """A channel to `service` (partners, settlement) presenting the operator's certificate, at its
    documented address setting (services/common/addresses.py)."""
    return settings_or_exit(client_transport).channel(dial_address(service))


def describe_refusal(error: grpc.RpcError) -> str:
    """`error: NOT_FOUND [PARTNER_NOT_FOUND]: no partner with this id (partner_id=acme)`."""
    info = error_info_of(error)
    reason = f" [{info.reason}]" if info is not None else ""
    values = ", ".join(f"{key}={value}" for key, value in sorted(info.metadata.items())) if info is not None else ""
    return f"error: {error.code().name}{reason}: {error.details()}" + (f" ({values})" if values else "")


def print_refusal(error: grpc.RpcError) -> None:
    print(describe_refusal(error), file=sys.stderr)


def new_request_id() -> str:
    return str(uuid.uuid4())


def time_argument(text: str) -> int:
    """An argparse `type`: ISO 8601 with an offset, as microseconds since the epoch."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not ISO 8601, e.g. 2026-10-01T00:00:00+02:00") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"time {text!r} needs an offset, e.g. 2026-10-01T00:00:00+02:00")
    return int(moment.timestamp() * 1_000_000)


def coalition_zone() -> ZoneInfo:
    """The time zone the tools show times in: the coalition's (COALITION_TIME_ZONE), as the services use."""
    return settings_or_exit(lambda: zone_of(env_str("COALITION_TIME_ZONE", "Europe/Amsterdam")))


def format_time(message, zone: ZoneInfo | None = None) -> str:
    """A google.protobuf.Timestamp as ISO 8601 to the second in `zone` (default: the coalition's),
    with its offset; empty when unset (zero)."""
    if not message.seconds and not message.nanos:
        return ""
    return datetime.fromtimestamp(message.seconds, zone or coalition_zone()).isoformat(sep=" ")


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns padded to their widest cell; numbers right-aligned."""
    cells = [[str(value) for value in row] for row in rows]
    widths = [max([len(header)] + [len(row[index]) for row in cells]) for index, header in enumerate(headers)]
    numeric = [bool(rows) and all(isinstance(row[index], int) for row in rows) for index in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        padded = (
            value.rjust(width) if is_number else value.ljust(width)
            for value, width, is_number in zip(values, widths, numeric, strict=True)
        )
        return "  ".join(padded).rstrip()

    return "\n".join([line(headers), line(["-" * width for width in widths]), *(line(row) for row in cells)])


def message_json(message: Message) -> str:
    """Protobuf JSON with the proto's own field names and every field present, for scripts."""
    return json_format.MessageToJson(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True, indent=2
    )


def examples(*lines: str) -> str:
    """An argparse epilog (use RawDescriptionHelpFormatter) listing example command lines."""
    return "Examples:\n" + "\n".join(f"  {line}" for line in lines)
