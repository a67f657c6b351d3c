"""How a till's write is recorded: the checks every till call passes, the answer to a reused
request id (earns, holds and returns), and a batch of calls (earns, holds) decided one by one
and inserted together, where one call's refusal is its own answer and never its neighbours'."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from sqlalchemy import Connection, Row

from services.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, ServiceError
from services.partners import model
from services.partners.access import Caller, check_point_of_sale
from services.partners.app import App
from services.partners.members import MemberRef, resolve_member

# failure_reason of an item the ledger refused as a whole call with INVALID_ARGUMENT.
LEDGER_INVALID_ARGUMENT = "INVALID_ARGUMENT"

Item = TypeVar("Item")
New = TypeVar("New")


def as_service_error(error: model.DomainError) -> ServiceError:
    kind = FailedPrecondition if error.precondition else InvalidArgument
    return kind(error.reason, error.message, **error.metadata)


def till_member(
    connection: Connection, app: App, caller: Caller, store_id: str, terminal_id: str, member: MemberRef
) -> Row:
    """The member a till call is for, once the caller is known to own the store and terminal."""
    check_point_of_sale(connection, app.facts, caller, store_id, terminal_id)
    return resolve_member(connection, app, member)


def same_request(recorded_fingerprint: str, fingerprint: str, request_id: str, what: str) -> None:
    """A request id answers its first request only: a different one under it is refused."""
    if recorded_fingerprint != fingerprint:
        raise AlreadyExists(
            "ID_REUSED_WITH_DIFFERENT_CONTENT",
            f"this request_id was used for a different {what}; use a new request_id",
            request_id=request_id,
        )


def record_batch(
    items: Sequence[Item],
    decide: Callable[[Item], Row | New],
    is_new: Callable[[object], bool],
    insert: Callable[[list[New]], list[Row]],
    raise_refusals: bool = False,
) -> list[Row | New | BaseException]:
    """Decide each item (the row recorded before under its request id, a new record, or a
    refusal), then insert the new records in one call. Items that are the same request share
    one new record. Returns per item the row, or its refusal (raised with `raise_refusals`)."""
    decisions: list[object] = []
    for item in items:
        try:
            decisions.append(decide(item))
        except (ServiceError, model.DomainError) as error:
            if raise_refusals:
                raise
            decisions.append(as_service_error(error) if isinstance(error, model.DomainError) else error)
    new = list({id(decision): decision for decision in decisions if is_new(decision)}.values())
    inserted = dict(zip([id(decision) for decision in new], insert(new), strict=True)) if new else {}
    return [inserted[id(decision)] if is_new(decision) else decision for decision in decisions]
