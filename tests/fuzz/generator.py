"""Hostile requests for any RPC, built from its descriptor alone.

Three shapes, as an outside fuzzer sends them: a random message (every field drawn from values
that are plausible for its name or hostile), a mutation of the serialized bytes of one, and bytes
that do not decode at all. Deterministic for a seed, so a failure can be replayed.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from google.protobuf import descriptor as pd
from google.protobuf import message_factory

HOSTILE_STRINGS = (
    "",
    "\0",
    "x\0",
    "2026-11\0",
    "x\n",
    "\n",
    "\r\n",
    " ",
    " x ",
    "\t",
    "\x7f",
    "\x1b[31m",
    "\u202e",
    "\ufeff",
    "😀",
    "é" * 40,
    "a" * 129,
    "a" * 5000,
    "'; DROP TABLE transfers; --",
    "%s%s%n",
    "../../etc/passwd",
    "-1",
    "0",
    "NaN",
    "-NaN",
    "Infinity",
    "1e999999",
    "-0",
    "0.0000000000000000000000001",
    "9" * 400,
    "1" * 30,
    "0x10",
    "1,5",
    "2026-13",
    "0000-01",
    "9999-12",
    "[" * 200,
    "{}",
    "null",
)
HOSTILE_INTS = (0, 1, -1, 2, 7, 1_000, 2**31 - 1, -(2**31), 2**53 + 1, 10**15, 10**15 + 1, 2**63 - 1, -(2**63))
HOSTILE_UINTS = (0, 1, 2, 1_000, 2**32 - 1, 2**63 - 1, 2**63, 2**64 - 1)
TIMESTAMP_SECONDS = (0, -1, 1, -62_135_596_801, -62_135_596_800, 253_402_300_799, 253_402_300_800, 2**63 - 1, -(2**63))
TIMESTAMP_NANOS = (0, 1, 999_999_999, 1_000_000_000, -1, 2**31 - 1, -(2**31))


@dataclass
class Pools:
    """Values that exist in the system under test, keyed by the field names that carry them."""

    by_name: dict[str, list] = field(default_factory=dict)
    now_seconds: int = 0

    def add(self, name: str, *values) -> None:
        self.by_name.setdefault(name, []).extend(values)

    def for_field(self, name: str) -> list:
        if name in self.by_name:
            return self.by_name[name]
        for suffix in ("account_id", "account_ids", "partner_id", "member_id", "currency_code", "request_id"):
            if name.endswith(suffix) and suffix in self.by_name:
                return self.by_name[suffix]
        return []


class RequestGenerator:
    def __init__(self, seed: int, pools: Pools) -> None:
        self.random = random.Random(seed)
        self.pools = pools

    # -- whole requests ---------------------------------------------------------------------
    def request_bytes(self, message_descriptor: pd.Descriptor) -> tuple[str, bytes]:
        """One request: ('random' | 'mutated' | 'undecodable', serialized bytes)."""
        roll = self.random.random()
        if roll < 0.6:
            return "random", self.message(message_descriptor).SerializeToString()
        if roll < 0.85:
            return "mutated", self.mutate(self.message(message_descriptor).SerializeToString(), message_descriptor)
        return "undecodable", self.undecodable(message_descriptor)

    def message(self, message_descriptor: pd.Descriptor, depth: int = 0):
        message = message_factory.GetMessageClass(message_descriptor)()
        if message_descriptor.full_name == "google.protobuf.Timestamp":
            message.seconds = self._timestamp_seconds()
            message.nanos = self.random.choice(TIMESTAMP_NANOS) if self.random.random() < 0.2 else 0
            return message
        for field_descriptor in message_descriptor.fields:
            if self.random.random() < 0.25:
                continue  # absent, as an unset field is a request shape too
            self._fill(message, field_descriptor, depth)
        return message

    def _fill(self, message, field_descriptor: pd.FieldDescriptor, depth: int) -> None:
        name = field_descriptor.name
        if field_descriptor.message_type is not None and field_descriptor.message_type.GetOptions().map_entry:
            entries = getattr(message, name)
            key_field = field_descriptor.message_type.fields_by_name["key"]
            value_field = field_descriptor.message_type.fields_by_name["value"]
            for _ in range(self.random.randint(0, 3)):
                key = self._scalar(key_field, key_field.name)
                if value_field.message_type is not None:
                    entries[key].CopyFrom(self.message(value_field.message_type, depth + 1))
                else:
                    entries[key] = self._scalar(value_field, name)
            return
        if _is_repeated(field_descriptor):
            count = self.random.choice((0, 1, 1, 2, 3, 5)) if self.random.random() < 0.97 else 300
            values = getattr(message, name)
            for _ in range(count):
                if field_descriptor.message_type is not None:
                    if depth >= 4:
                        return
                    values.add().CopyFrom(self.message(field_descriptor.message_type, depth + 1))
                else:
                    values.append(self._scalar(field_descriptor, name))
            return
        if field_descriptor.message_type is not None:
            if depth < 4:
                getattr(message, name).CopyFrom(self.message(field_descriptor.message_type, depth + 1))
            return
        setattr(message, name, self._scalar(field_descriptor, name))

    # -- scalars ----------------------------------------------------------------------------
    def _scalar(self, field_descriptor: pd.FieldDescriptor, name: str):
        kind = field_descriptor.type
        pool = self.pools.for_field(name)
        if kind == pd.FieldDescriptor.TYPE_STRING:
            if pool and self.random.random() < 0.6:
                value = self.random.choice(pool)
                return self._decorate(value) if self.random.random() < 0.2 else value
            if self.random.random() < 0.7:
                return self.random.choice(HOSTILE_STRINGS)
            return self._random_text()
        if kind == pd.FieldDescriptor.TYPE_BYTES:
            return self.random.randbytes(self.random.choice((0, 1, 16, 300)))
        if kind == pd.FieldDescriptor.TYPE_BOOL:
            return self.random.random() < 0.5
        if kind == pd.FieldDescriptor.TYPE_ENUM:
            values = [value.number for value in field_descriptor.enum_type.values]
            if self.random.random() < 0.85:
                return self.random.choice(values)
            return self.random.choice((max(values) + 1, 999, -1, 2**31 - 1))
        if kind in (pd.FieldDescriptor.TYPE_DOUBLE, pd.FieldDescriptor.TYPE_FLOAT):
            return self.random.choice((0.0, -1.0, 1e308, float("nan"), float("inf")))
        if kind in _UNSIGNED:
            bound = 2**32 - 1 if kind in _UNSIGNED_32 else 2**64 - 1
            choices = [value for value in HOSTILE_UINTS if value <= bound]
            choices += [int(v) for v in pool if _fits(v, 0, bound)]
            return self.random.choice(choices)
        bound = 2**31 if kind in _SIGNED_32 else 2**63
        choices = [value for value in HOSTILE_INTS if -bound <= value < bound]
        choices += [int(v) for v in pool if _fits(v, -bound, bound - 1)]
        if self.random.random() < 0.4:
            return self.random.randint(1, 100_000)
        return self.random.choice(choices)

    def _decorate(self, value: str) -> str:
        return value + self.random.choice(("\0", "\n", " ", "\x7f", "é", "\u200b")) if isinstance(value, str) else value

    def _random_text(self) -> str:
        alphabet = "abcXYZ019-_:.@/ \0\n\t\x01\x7f\u00e9\u4e2d\U0001f600\ufffd"
        return "".join(self.random.choice(alphabet) for _ in range(self.random.randint(1, 40)))

    def _timestamp_seconds(self) -> int:
        if self.random.random() < 0.5 and self.pools.now_seconds:
            return self.pools.now_seconds + self.random.randint(-400 * 86_400, 400 * 86_400)
        return self.random.choice(TIMESTAMP_SECONDS)

    # -- bytes ------------------------------------------------------------------------------
    def mutate(self, data: bytes, message_descriptor: pd.Descriptor) -> bytes:
        buffer = bytearray(data)
        operation = self.random.randrange(6)
        if operation == 0 and buffer:
            for _ in range(self.random.randint(1, 4)):
                buffer[self.random.randrange(len(buffer))] = self.random.randrange(256)
        elif operation == 1 and buffer:
            del buffer[self.random.randrange(len(buffer)) :]
        elif operation == 2:
            buffer += self.random.randbytes(self.random.randint(1, 12))
        elif operation == 3:
            buffer += _invalid_utf8_string(message_descriptor)
        elif operation == 4:
            buffer += _unknown_field(self.random)
        else:
            buffer = bytearray(data * self.random.randint(2, 4))  # repeated fields doubled, last scalar wins
        return bytes(buffer)

    def undecodable(self, message_descriptor: pd.Descriptor) -> bytes:
        choice = self.random.randrange(5)
        if choice == 0:
            return b"\xff" * self.random.randint(1, 11)  # a varint that never ends
        if choice == 1:
            return b"\x0a\xff\xff\xff\xff\x0f"  # field 1, length far beyond the message
        if choice == 2:
            return _invalid_utf8_string(message_descriptor) or b"\x0a\x02\xc3\x28"
        if choice == 3:
            return b"\x0f"  # wire type 7 does not exist
        return b"\x0b" * 3 + b"\x0c"  # mismatched group tags


_UNSIGNED_32 = {pd.FieldDescriptor.TYPE_UINT32, pd.FieldDescriptor.TYPE_FIXED32}
_UNSIGNED = _UNSIGNED_32 | {pd.FieldDescriptor.TYPE_UINT64, pd.FieldDescriptor.TYPE_FIXED64}
_SIGNED_32 = {pd.FieldDescriptor.TYPE_INT32, pd.FieldDescriptor.TYPE_SINT32, pd.FieldDescriptor.TYPE_SFIXED32}


def _is_repeated(field_descriptor: pd.FieldDescriptor) -> bool:
    is_repeated = getattr(field_descriptor, "is_repeated", None)
    if is_repeated is not None:
        return is_repeated
    return field_descriptor.label == pd.FieldDescriptor.LABEL_REPEATED


def _fits(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _invalid_utf8_string(message_descriptor: pd.Descriptor) -> bytes:
    """A string field of this message whose bytes are not UTF-8 (proto3 parsers must refuse it)."""
    for field_descriptor in message_descriptor.fields:
        if field_descriptor.type == pd.FieldDescriptor.TYPE_STRING:
            payload = b"ab\xc3\x28\xff"
            return _varint(field_descriptor.number << 3 | 2) + _varint(len(payload)) + payload
    return b""


def _unknown_field(rng: random.Random) -> bytes:
    return _varint(rng.randint(1000, 5000) << 3 | 0) + _varint(rng.randint(0, 2**40))


def page_tokens() -> Sequence[str]:
    """Page tokens nobody wrote: nesting bombs, wrong shapes, not base64."""
    return (
        base64.urlsafe_b64encode(b"[" * 50_000).decode(),
        base64.urlsafe_b64encode(b'{"a":' * 2_000).decode(),
        base64.urlsafe_b64encode(b'["x", 1e999999]').decode(),
        base64.urlsafe_b64encode(b"[1, 2, 3]").decode(),
        base64.urlsafe_b64encode(b'"\\u0000"').decode(),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        "!!!not base64!!!",
        "====",
        "a",
    )
