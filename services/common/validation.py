"""Rules for text at every service's boundary, the same in all three.

Ids are checked with a full match (a trailing newline is not an id), and no string field of any
request may carry NUL: PostgreSQL cannot store it, and no legitimate value contains it.
"""

from __future__ import annotations

import re

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from services.common.errors import InvalidArgument

ID_LENGTH_MAX = 128
ID_PATTERN = re.compile(rf"[A-Za-z0-9._:/@-]{{1,{ID_LENGTH_MAX}}}")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def is_printable(value: str) -> bool:
    """No C0 or C1 control characters, DEL or NUL."""
    return _CONTROL_CHARACTERS.search(value) is None


def check_id(value: str, field: str, pattern: re.Pattern[str] = ID_PATTERN, reason: str = "INVALID_ID") -> str:
    if not pattern.fullmatch(value or ""):
        raise InvalidArgument(reason, f"{field} must match {pattern.pattern}", field=field)
    return value


def check_no_nul(request: Message, raw: bytes) -> None:
    """INVALID_ARGUMENT naming the first string field that holds NUL.

    A NUL in a string field always leaves a zero byte in the encoding, so the walk runs only for
    the rare request whose bytes hold one (empty sub-messages, fixed-width numbers).
    """
    if b"\x00" not in raw:
        return
    path = _field_with_nul(request, "")
    if path:
        # Batch items are named by index too, as the ledger names every item's error.
        where = {"index": path[path.index("[") + 1 : path.index("]")]} if "[" in path else {}
        raise InvalidArgument("VALUE_NOT_PRINTABLE", f"{path} contains a NUL character", field=path, **where)


def _field_with_nul(message: Message, prefix: str) -> str:
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            found = _map_with_nul(field, value, path)
        elif field.type == FieldDescriptor.TYPE_STRING:
            values = value if _is_repeated(field) else (value,)
            found = next(
                (f"{path}[{i}]" if _is_repeated(field) else path for i, v in enumerate(values) if "\0" in v), ""
            )
        elif field.message_type is not None:
            items = value if _is_repeated(field) else (value,)
            found = next(
                (hit for i, item in enumerate(items) if (hit := _field_with_nul(item, _item_prefix(field, path, i)))),
                "",
            )
        else:
            found = ""
        if found:
            return found
    return ""


def _map_with_nul(field: FieldDescriptor, entries, path: str) -> str:
    value_field = field.message_type.fields_by_name["value"]
    for key, value in entries.items():
        if isinstance(key, str) and "\0" in key:
            return f"{path}[key]"
        if value_field.message_type is not None:
            hit = _field_with_nul(value, f"{path}[{key!r}].")
            if hit:
                return hit
        elif isinstance(value, str) and "\0" in value:
            return f"{path}[{key!r}]"
    return ""


def _item_prefix(field: FieldDescriptor, path: str, index: int) -> str:
    return f"{path}[{index}]." if _is_repeated(field) else f"{path}."


def _is_repeated(field: FieldDescriptor) -> bool:
    is_repeated = getattr(field, "is_repeated", None)
    return is_repeated if is_repeated is not None else field.label == FieldDescriptor.LABEL_REPEATED
