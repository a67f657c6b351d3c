"""Tables of statements as documents (migration 0006): partner billing details versions, the
statement number counters, and each closed statement's document with its store lines.

A closed statement's document is a snapshot: the partner's and the operator's billing details,
terms and tax are copied into it at close, so later changes never alter a document sent out.
"""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    ForeignKeyConstraint,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    select,
)

from services.settlement.documents import (
    BillingDetails,
    BillingVersion,
    StatementDocument,
    StoreLine,
    statement_number,
)
from services.settlement.model import LineKind
from services.settlement.store import metadata

billing_details = Table(
    "settlement_billing_details",
    metadata,
    Column("billing_details_id", String(128), primary_key=True),
    Column("partner_id", String(128), nullable=False),
    Column("effective_from_us", BigInteger, nullable=False),
    Column("legal_name", String(200), nullable=False),
    Column("address", String(500), nullable=False),
    Column("vat_id", String(16), nullable=False),
    Column("iban", String(34), nullable=False),
    Column("billing_email", String(254), nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
    UniqueConstraint("partner_id", "effective_from_us", name="uq_settlement_billing_partner_start"),
)

# One row per numbering series ("ST-2026"): the last number given. Locked FOR UPDATE by the close
# that numbers its statements, in the same transaction that stores them: a rolled back close
# gives its numbers back, so the series has no gap and never reuses a number.
statement_counters = Table(
    "settlement_statement_counters",
    metadata,
    Column("series", String(16), primary_key=True),
    Column("last_number", BigInteger, nullable=False),
)

statement_documents = Table(
    "settlement_statement_documents",
    metadata,
    Column("period_id", String(64), primary_key=True),
    Column("partner_id", String(128), primary_key=True),
    Column("statement_number", String(32), nullable=False),
    Column("issue_date", String(10), nullable=False),
    Column("due_date", String(10), nullable=False),
    Column("payment_terms_days", Integer, nullable=False),
    Column("tax_rate_percent", String(16), nullable=False),
    Column("tax_note", String(500), nullable=False),
    Column("net_cents", BigInteger, nullable=False),
    Column("tax_cents", BigInteger, nullable=False),
    Column("gross_cents", BigInteger, nullable=False),
    Column("agreement_id", String(128), nullable=False),
    # JSON of documents.BillingDetails, or "" when none was recorded.
    Column("partner_billing_json", Text, nullable=False),
    Column("operator_billing_json", Text, nullable=False),
    UniqueConstraint("statement_number", name="uq_settlement_statement_number"),
    ForeignKeyConstraint(
        ["period_id", "partner_id"], ["settlement_statements.period_id", "settlement_statements.partner_id"]
    ),
)

statement_store_lines = Table(
    "settlement_statement_store_lines",
    metadata,
    Column("period_id", String(64), primary_key=True),
    Column("partner_id", String(128), primary_key=True),
    Column("line_number", Integer, primary_key=True),
    Column("store_id", String(128), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("currency_code", String(16), nullable=False),
    Column("transaction_count", BigInteger, nullable=False),
    Column("quantity", BigInteger, nullable=False),
    ForeignKeyConstraint(
        ["period_id", "partner_id"],
        ["settlement_statement_documents.period_id", "settlement_statement_documents.partner_id"],
    ),
)


# ---------------------------------------------------------------- billing details


def _version_from_row(row) -> BillingVersion:
    return BillingVersion(
        row.billing_details_id,
        row.partner_id,
        row.effective_from_us,
        BillingDetails(row.legal_name, row.address, row.vat_id, row.iban, row.billing_email),
    )


def get_billing_version(connection: Connection, billing_details_id: str) -> tuple[BillingVersion, int] | None:
    row = connection.execute(
        select(billing_details).where(billing_details.c.billing_details_id == billing_details_id)
    ).one_or_none()
    return None if row is None else (_version_from_row(row), row.create_time_us)


def billing_version_at_start(connection: Connection, partner_id: str, effective_from_us: int) -> str | None:
    return connection.execute(
        select(billing_details.c.billing_details_id).where(
            billing_details.c.partner_id == partner_id, billing_details.c.effective_from_us == effective_from_us
        )
    ).scalar_one_or_none()


def insert_billing_version(connection: Connection, version: BillingVersion, now_us: int) -> None:
    d = version.details
    connection.execute(
        billing_details.insert().values(
            billing_details_id=version.billing_details_id,
            partner_id=version.partner_id,
            effective_from_us=version.effective_from_us,
            legal_name=d.legal_name,
            address=d.address,
            vat_id=d.vat_id,
            iban=d.iban,
            billing_email=d.billing_email,
            create_time_us=now_us,
        )
    )


def billing_versions_up_to(connection: Connection, time_us: int) -> list[BillingVersion]:
    rows = connection.execute(
        select(billing_details)
        .where(billing_details.c.effective_from_us <= time_us)
        .order_by(billing_details.c.partner_id, billing_details.c.effective_from_us)
    )
    return [_version_from_row(row) for row in rows]


def list_billing_versions(
    connection: Connection, partner_id: str, after: tuple[str, int] | None, limit: int
) -> list[tuple[BillingVersion, int]]:
    query = select(billing_details)
    if partner_id:
        query = query.where(billing_details.c.partner_id == partner_id)
    if after is not None:
        query = query.where(
            (billing_details.c.partner_id > after[0])
            | ((billing_details.c.partner_id == after[0]) & (billing_details.c.effective_from_us > after[1]))
        )
    query = query.order_by(billing_details.c.partner_id, billing_details.c.effective_from_us).limit(limit)
    return [(_version_from_row(row), row.create_time_us) for row in connection.execute(query)]


# ---------------------------------------------------------------- numbers and documents


def next_numbers(connection: Connection, series: str, count: int) -> list[str]:
    """`count` consecutive numbers of the series, taken under the counter row's lock."""
    if count == 0:
        return []
    query = select(statement_counters.c.last_number).where(statement_counters.c.series == series)
    if connection.dialect.name == "postgresql":
        query = query.with_for_update()
    last = connection.execute(query).scalar_one_or_none()
    if last is None:
        # Two first closes of a year racing: the loser's INSERT fails on the primary key and its
        # whole close transaction is retried or refused, so no number is given twice.
        connection.execute(statement_counters.insert().values(series=series, last_number=count))
        last = 0
    else:
        connection.execute(
            statement_counters.update().where(statement_counters.c.series == series).values(last_number=last + count)
        )
    return [statement_number(series, last + index) for index in range(1, count + 1)]


def _billing_json(details: BillingDetails | None) -> str:
    if details is None:
        return ""
    return json.dumps(
        {
            "legal_name": details.legal_name,
            "address": details.address,
            "vat_id": details.vat_id,
            "iban": details.iban,
            "billing_email": details.billing_email,
        },
        sort_keys=True,
    )


def _billing_of(text: str) -> BillingDetails | None:
    return BillingDetails(**json.loads(text)) if text else None


def insert_documents(connection: Connection, period_id: str, documents: tuple[StatementDocument, ...]) -> None:
    """Every document of a period and its store lines: one statement per table, whatever the count."""
    if not documents:
        return
    connection.execute(
        statement_documents.insert(),
        [
            {
                "period_id": period_id,
                "partner_id": document.partner_id,
                "statement_number": document.statement_number,
                "issue_date": document.issue_date.isoformat(),
                "due_date": document.due_date.isoformat(),
                "payment_terms_days": document.payment_terms_days,
                "tax_rate_percent": str(document.tax_rate_percent),
                "tax_note": document.tax_note,
                "net_cents": document.net_cents,
                "tax_cents": document.tax_cents,
                "gross_cents": document.gross_cents,
                "agreement_id": document.agreement_id,
                "partner_billing_json": _billing_json(document.partner_billing),
                "operator_billing_json": _billing_json(document.operator_billing),
            }
            for document in documents
        ],
    )
    store_lines = [
        {
            "period_id": period_id,
            "partner_id": document.partner_id,
            "line_number": number,
            "store_id": line.store_id,
            "kind": line.kind.value,
            "currency_code": line.currency_code,
            "transaction_count": line.transaction_count,
            "quantity": line.quantity,
        }
        for document in documents
        for number, line in enumerate(document.store_lines, start=1)
    ]
    if store_lines:
        connection.execute(statement_store_lines.insert(), store_lines)


def load_documents(connection: Connection, period_id: str) -> tuple[StatementDocument, ...]:
    lines: dict[str, list[StoreLine]] = {}
    for row in connection.execute(
        select(statement_store_lines)
        .where(statement_store_lines.c.period_id == period_id)
        .order_by(statement_store_lines.c.partner_id, statement_store_lines.c.line_number)
    ):
        lines.setdefault(row.partner_id, []).append(
            StoreLine(row.store_id, LineKind(row.kind), row.currency_code, row.transaction_count, row.quantity)
        )
    rows = connection.execute(
        select(statement_documents)
        .where(statement_documents.c.period_id == period_id)
        .order_by(statement_documents.c.partner_id)
    )
    return tuple(
        StatementDocument(
            partner_id=row.partner_id,
            statement_number=row.statement_number,
            issue_date=date.fromisoformat(row.issue_date),
            due_date=date.fromisoformat(row.due_date),
            payment_terms_days=row.payment_terms_days,
            tax_rate_percent=Decimal(row.tax_rate_percent),
            tax_note=row.tax_note,
            net_cents=row.net_cents,
            tax_cents=row.tax_cents,
            gross_cents=row.gross_cents,
            agreement_id=row.agreement_id,
            partner_billing=_billing_of(row.partner_billing_json),
            operator_billing=_billing_of(row.operator_billing_json),
            store_lines=tuple(lines.get(row.partner_id, ())),
        )
        for row in rows
    )
