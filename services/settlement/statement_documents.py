"""Use cases of statements as documents: record and list partner billing details; attach the
document (terms, tax, parties, store lines) to a period's statements; number them at close.

Why settlement keeps the partners' billing details (and not the partners service): settlement
owns invoicing, a close must not depend on a second service being up, and a closed document is a
snapshot anyway (the details in effect at the close are copied into it).
"""

from __future__ import annotations

import re
from dataclasses import replace

from sqlalchemy import Connection
from sqlalchemy import exc as sa_exc

from services.common.errors import AlreadyExists, InvalidArgument
from services.settlement import document_store, documents, model, store
from services.settlement.context import SettlementContext
from services.settlement.documents import BillingVersion, StatementDocument
from services.settlement.model import AgreementBook, PeriodSettlement, SettlementRuleError

ID_PATTERN = re.compile(r"[A-Za-z0-9._:/@-]{1,128}")
# Only these account kinds have per-store activity on a statement.
STORE_ACCOUNT_KINDS = (model.KIND_PARTNER_ISSUANCE, model.KIND_PARTNER_REDEMPTION)


def _invalid(error: SettlementRuleError) -> InvalidArgument:
    return InvalidArgument(error.reason, error.message, **error.metadata)


def validate_billing_version(version: BillingVersion) -> BillingVersion:
    if not ID_PATTERN.fullmatch(version.billing_details_id):
        raise InvalidArgument(
            "INVALID_BILLING_DETAILS_ID", "billing_details_id must be 1..128 characters of A-Z a-z 0-9 ._:/@-"
        )
    if not ID_PATTERN.fullmatch(version.partner_id):
        raise InvalidArgument("INVALID_PARTNER_ID", "partner_id must be 1..128 characters of A-Z a-z 0-9 ._:/@-")
    try:
        return replace(version, details=documents.validate_billing_details(version.details))
    except SettlementRuleError as error:
        raise _invalid(error) from error


async def set_partner_billing_details(
    context: SettlementContext, version: BillingVersion
) -> tuple[BillingVersion, int, bool]:
    """Store a version; returns (version, create_time_us, created). Idempotent on the id."""
    version = validate_billing_version(version)

    def work(connection: Connection):
        existing = document_store.get_billing_version(connection, version.billing_details_id)
        if existing is not None:
            if existing[0].content_key() != version.content_key():
                raise AlreadyExists(
                    "ID_REUSED_WITH_DIFFERENT_CONTENT",
                    f"billing details {version.billing_details_id} exist with different content; record a"
                    " new version with a new id",
                    billing_details_id=version.billing_details_id,
                )
            return existing[0], existing[1], False
        other = document_store.billing_version_at_start(connection, version.partner_id, version.effective_from_us)
        if other is not None:
            raise AlreadyExists(
                "BILLING_DETAILS_START_TAKEN",
                f"partner {version.partner_id} already has billing details {other} effective from that time",
                billing_details_id=other,
            )
        now_us = context.now_us()
        document_store.insert_billing_version(connection, version, now_us)
        return version, now_us, True

    try:
        return await context.write(work)
    except sa_exc.IntegrityError:
        return await context.write(work)  # a concurrent identical call won: answer as its repeat


async def list_partner_billing_details(
    context: SettlementContext, partner_id: str, after: tuple[str, int] | None, limit: int
):
    return await context.read(lambda c: document_store.list_billing_versions(c, partner_id, after, limit))


async def _partner_accounts(context: SettlementContext) -> list[str]:
    ids: list[str] = []
    for kind in STORE_ACCOUNT_KINDS:
        ids.extend(a.id for a in await context.ledger.list_accounts(kind=kind))
    return sorted(ids)


async def attach_drafts(context: SettlementContext, settlement: PeriodSettlement, issue_us: int) -> PeriodSettlement:
    """The settlement with an unnumbered (DRAFT) document per statement, issued at `issue_us`:
    terms and tax of each partner's agreement in effect at the period end, its billing details in
    effect at issue_us, the operator's from settings, and the period window's activity per store."""
    book = AgreementBook(await context.read(store.all_agreements))
    versions = await context.read(lambda c: document_store.billing_versions_up_to(c, issue_us))
    account_ids = await _partner_accounts(context) if settlement.statements else []
    activity = (
        await context.ledger.store_activity(settlement.start_us, settlement.end_us, account_ids) if account_ids else []
    )
    by_store = documents.store_lines(activity)
    issued = documents.issue_date(issue_us, context.time_zone)
    drafts = tuple(
        documents.build_document(
            statement,
            book.valid_at(statement.partner_id, settlement.end_us - 1),
            documents.billing_in_effect(versions, statement.partner_id, issue_us),
            context.operator_billing,
            by_store,
            issued,
        )
        for statement in settlement.statements
    )
    return replace(settlement, documents=drafts)


def number_and_store(connection: Connection, settlement: PeriodSettlement) -> tuple[StatementDocument, ...]:
    """Inside the close's freeze transaction: give each draft the next numbers of its issue year's
    series (partner id order) and store the documents. Rolled back with the close, so no gap."""
    drafts = settlement.documents
    if not drafts:
        return ()
    series = documents.statement_number_series(drafts[0].issue_date)
    numbers = document_store.next_numbers(connection, series, len(drafts))
    numbered = tuple(replace(d, statement_number=n) for d, n in zip(drafts, numbers, strict=True))
    document_store.insert_documents(connection, settlement.period_id, numbered)
    return numbered
