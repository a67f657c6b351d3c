"""Use cases: reconcile a partner's own transaction file with the ledger, read a stored result."""

from __future__ import annotations

import hashlib

import structlog
from sqlalchemy import exc as sa_exc

from services.common.errors import AlreadyExists, InvalidArgument, NotFound
from services.common.metrics import timed_use_case
from services.settlement import model, store
from services.settlement.agreements import ID_PATTERN
from services.settlement.context import SettlementContext
from services.settlement.ledger_client import reconciliation_rows_from_entries
from services.settlement.model import ReconciliationResult, SettlementRuleError
from services.settlement.periods import resolve_period

_log = structlog.get_logger("settlement")
FILE_BYTES_MAX = 10 * 1024 * 1024


async def _stored(context: SettlementContext, reconciliation_id: str):
    def work(connection):
        row = store.get_reconciliation_row(connection, reconciliation_id)
        if row is None:
            return None
        return row, store.load_reconciliation_rows(connection, reconciliation_id)

    return await context.read(work)


@timed_use_case("reconcile_seconds")
async def reconcile(
    context: SettlementContext,
    reconciliation_id: str,
    partner_id: str,
    period_id: str,
    start_us: int | None,
    end_us: int | None,
    file_csv: bytes,
):
    """Returns (row, result, created)."""
    if not ID_PATTERN.fullmatch(reconciliation_id):
        raise InvalidArgument("INVALID_RECONCILIATION_ID", "reconciliation_id must be 1..128 of A-Z a-z 0-9 ._:/@-")
    if not 1 <= len(partner_id) <= 128:
        raise InvalidArgument("INVALID_PARTNER_ID", "partner_id must be 1..128 characters")
    if len(file_csv) > FILE_BYTES_MAX:
        raise InvalidArgument("FILE_TOO_LARGE", f"the file exceeds {FILE_BYTES_MAX} bytes; split it")
    period_id, start_us, end_us = resolve_period(context, period_id, start_us, end_us)
    digest = hashlib.sha256(file_csv).hexdigest()
    existing = await _stored(context, reconciliation_id)
    if existing is not None:
        row, result = existing
        if (row.partner_id, row.period_id, row.file_sha256) != (partner_id, period_id, digest):
            raise AlreadyExists(
                "ID_REUSED_WITH_DIFFERENT_CONTENT",
                f"reconciliation {reconciliation_id} was made for another file, partner or period; use a new id",
            )
        return row, result, False
    try:
        partner_rows = model.parse_partner_file(file_csv)
    except SettlementRuleError as error:
        raise InvalidArgument(error.reason, error.message, **error.metadata) from error
    ledger_rows = []
    for account in await context.ledger.list_accounts(owner_id=partner_id):
        if account.kind in (model.KIND_PARTNER_ISSUANCE, model.KIND_PARTNER_REDEMPTION):
            entries = await context.ledger.entries_between(account.id, start_us, end_us)
            ledger_rows.extend(reconciliation_rows_from_entries(entries, account.kind))
    try:
        partner_rows = model.assign_currency(partner_rows, ledger_rows)
    except SettlementRuleError as error:
        raise InvalidArgument(error.reason, error.message, **error.metadata) from error
    result: ReconciliationResult = model.reconcile(partner_rows, ledger_rows, start_us, end_us, context.time_zone)
    try:
        await context.write(
            lambda c: store.insert_reconciliation(
                c, reconciliation_id, partner_id, period_id, digest, result, context.now_us()
            )
        )
    except sa_exc.IntegrityError:
        existing = await _stored(context, reconciliation_id)
        if existing is None:
            raise
        return existing[0], existing[1], False
    _log.info(
        "reconciliation_made",
        reconciliation_id=reconciliation_id,
        partner_id=partner_id,
        **{status.value.lower(): count for status, count in result.counts.items()},
    )
    row, stored = await _stored(context, reconciliation_id)
    return row, stored, True


async def get_reconciliation(context: SettlementContext, reconciliation_id: str):
    existing = await _stored(context, reconciliation_id)
    if existing is None:
        raise NotFound("RECONCILIATION_NOT_FOUND", f"no reconciliation {reconciliation_id}")
    return existing
