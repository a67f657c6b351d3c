"""Settlement's own tables: price agreements, closed periods with their frozen statements, reconciliations.

The ledger's tables are never read here; ledger figures come through its gRPC API.
Prices are stored as their exact decimal text, money as integer cents.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Connection,
    ForeignKeyConstraint,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    select,
    text,
)

from services.settlement.model import (
    BreakageOwner,
    ConversionPrice,
    LineKind,
    MatchStatus,
    PeriodSettlement,
    PointPrice,
    PriceAgreement,
    ReconciledRow,
    ReconciliationResult,
    RollForward,
    Statement,
    StatementLine,
    TierBonusFunder,
)
from services.settlement.scheme import ClosedSpan

PERIOD_STATE_CLOSING = "CLOSING"  # figures frozen, nets being posted on the ledger
PERIOD_STATE_CLOSED = "CLOSED"

metadata = MetaData()

price_agreements = Table(
    "settlement_price_agreements",
    metadata,
    Column("agreement_id", String(128), primary_key=True),
    Column("partner_id", String(128), nullable=False),
    Column("valid_from_us", BigInteger, nullable=False),
    # JSON of the prices as exact decimal strings: {"point_prices": [...], "conversion_prices": [...]}
    Column("prices_json", Text, nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
    # Who keeps the breakage of points the partner issued (model.BreakageOwner); migration 0004.
    Column("breakage_owner", String(32), nullable=False, server_default="OPERATOR"),
    # Who funds the tier bonus of points earned at the partner (model.TierBonusFunder); migration 0005.
    Column("tier_bonus_funder", String(32), nullable=False, server_default="PARTNER"),
    # Document terms (migration 0006): days to the due date, tax rate (decimal percent text), tax note.
    Column("payment_terms_days", Integer, nullable=False, server_default="30"),
    Column("tax_rate_percent", String(16), nullable=False, server_default="0"),
    Column("tax_note", String(500), nullable=False, server_default=""),
    UniqueConstraint("partner_id", "valid_from_us", name="uq_settlement_agreement_partner_start"),
)

periods = Table(
    "settlement_periods",
    metadata,
    Column("period_id", String(64), primary_key=True),
    Column("start_us", BigInteger, nullable=False),
    Column("end_us", BigInteger, nullable=False),
    Column("state", String(16), nullable=False),
    Column("last_commit_sequence", BigInteger, nullable=False),
    Column("close_time_us", BigInteger, nullable=False),
    CheckConstraint("end_us > start_us", name="ck_settlement_period_window"),
    CheckConstraint("state IN ('CLOSING', 'CLOSED')", name="ck_settlement_period_state"),
    UniqueConstraint("start_us", name="uq_settlement_period_start"),
)

statements = Table(
    "settlement_statements",
    metadata,
    Column("period_id", String(64), primary_key=True),
    Column("partner_id", String(128), primary_key=True),
    Column("net_cents", BigInteger, nullable=False),
    Column("settlement_transfer_id", String(128), nullable=False),
    ForeignKeyConstraint(["period_id"], ["settlement_periods.period_id"]),
)

statement_lines = Table(
    "settlement_statement_lines",
    metadata,
    Column("period_id", String(64), primary_key=True),
    Column("partner_id", String(128), primary_key=True),
    Column("line_number", Integer, primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("currency_code", String(16), nullable=False),
    Column("counterparty_currency_code", String(16), nullable=False),
    Column("counterparty_id", String(128), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("unit_price", String(40), nullable=False),
    Column("amount_cents", BigInteger, nullable=False),
    Column("agreement_id", String(128), nullable=False),
    Column("prior_period_adjustment", Boolean, nullable=False),
    # BREAKAGE lines (migration 0004): the points expired and reinstated, and who keeps the breakage.
    Column("expired_quantity", BigInteger, nullable=False, server_default="0"),
    Column("reinstated_quantity", BigInteger, nullable=False, server_default="0"),
    Column("breakage_owner", String(32), nullable=False, server_default=""),
    # TIER_BONUS lines (migration 0005): the bonus points issued and reversed, and who funds them.
    Column("tier_bonus_issued_quantity", BigInteger, nullable=False, server_default="0"),
    Column("tier_bonus_reversed_quantity", BigInteger, nullable=False, server_default="0"),
    Column("tier_bonus_funder", String(32), nullable=False, server_default=""),
    # Reversal lines priced at an earlier closed period's agreement: that period (migration 0007).
    Column("original_period_id", String(64), nullable=False, server_default=""),
    # ADJUSTMENT lines (migration 0007): the adjustment and its reason, frozen with the statement.
    Column("adjustment_id", String(128), nullable=False, server_default=""),
    Column("adjustment_reason", String(500), nullable=False, server_default=""),
    # A breakage line nets expired against reinstated points, a tier bonus line issued against
    # reversed bonus: either may be zero or negative.
    CheckConstraint("quantity > 0 OR kind IN ('BREAKAGE', 'TIER_BONUS')", name="ck_settlement_line_quantity"),
    ForeignKeyConstraint(
        ["period_id", "partner_id"], ["settlement_statements.period_id", "settlement_statements.partner_id"]
    ),
)

roll_forwards = Table(
    "settlement_roll_forwards",
    metadata,
    Column("period_id", String(64), primary_key=True),
    Column("currency_code", String(16), primary_key=True),
    Column("opening_outstanding", BigInteger, nullable=False),
    Column("issued", BigInteger, nullable=False),
    Column("earn_reversed", BigInteger, nullable=False),
    Column("redeemed", BigInteger, nullable=False),
    Column("redemption_reversed", BigInteger, nullable=False),
    Column("expired", BigInteger, nullable=False),
    Column("reinstated", BigInteger, nullable=False, server_default="0"),
    Column("converted_in", BigInteger, nullable=False),
    Column("converted_out", BigInteger, nullable=False),
    Column("other_adjustments", BigInteger, nullable=False),
    Column("closing_outstanding", BigInteger, nullable=False),
    ForeignKeyConstraint(["period_id"], ["settlement_periods.period_id"]),
)

reconciliations = Table(
    "settlement_reconciliations",
    metadata,
    Column("reconciliation_id", String(128), primary_key=True),
    Column("partner_id", String(128), nullable=False),
    Column("period_id", String(64), nullable=False),
    Column("file_sha256", String(64), nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
)

reconciliation_rows = Table(
    "settlement_reconciliation_rows",
    metadata,
    Column("reconciliation_id", String(128), primary_key=True),
    Column("row_number", Integer, primary_key=True),
    Column("status", String(32), nullable=False),
    Column("file_line_number", Integer, nullable=False),
    Column("receipt_id", String(128), nullable=False),
    Column("store_id", String(128), nullable=False),
    Column("terminal_id", String(128), nullable=False),
    Column("type", String(32), nullable=False),
    Column("partner_points", BigInteger, nullable=False),
    Column("ledger_points", BigInteger, nullable=False),
    Column("time", String(64), nullable=False),
    Column("currency_code", String(16), nullable=False, server_default=""),
    ForeignKeyConstraint(["reconciliation_id"], ["settlement_reconciliations.reconciliation_id"]),
)

_ROLL_FORWARD_FIELDS = (
    "opening_outstanding",
    "issued",
    "earn_reversed",
    "redeemed",
    "redemption_reversed",
    "expired",
    "reinstated",
    "converted_in",
    "converted_out",
    "other_adjustments",
    "closing_outstanding",
)


# Key of the PostgreSQL advisory lock that serialises recording agreement versions with freezing periods.
AGREEMENTS_AND_PERIODS_LOCK_KEY = 0x5E771E  # "settle"


def lock_agreements_and_periods(connection: Connection) -> None:
    """Held to the end of the transaction by SetPriceAgreement and by the close that freezes a period,
    so a version can never start inside a window while that window is being frozen.

    PostgreSQL: a transaction-scoped advisory lock (READ COMMITTED: statements after it see what the
    other side committed). SQLite: the writer's BEGIN IMMEDIATE already holds the single write lock."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": AGREEMENTS_AND_PERIODS_LOCK_KEY})


# ---------------------------------------------------------------- agreements


def _prices_json(agreement: PriceAgreement) -> str:
    return json.dumps(
        {
            "point_prices": [
                [p.currency_code, str(p.issue_price), str(p.reimbursement_price)] for p in agreement.point_prices
            ],
            "conversion_prices": [
                [p.from_currency_code, p.to_currency_code, str(p.price_per_unit_received)]
                for p in agreement.conversion_prices
            ],
        },
        sort_keys=True,
    )


def _agreement_from_row(row) -> PriceAgreement:
    prices = json.loads(row.prices_json)
    return PriceAgreement(
        agreement_id=row.agreement_id,
        partner_id=row.partner_id,
        valid_from_us=row.valid_from_us,
        point_prices=tuple(PointPrice(c, Decimal(i), Decimal(r)) for c, i, r in prices["point_prices"]),
        conversion_prices=tuple(ConversionPrice(f, t, Decimal(p)) for f, t, p in prices["conversion_prices"]),
        breakage_owner=BreakageOwner(row.breakage_owner),
        tier_bonus_funder=TierBonusFunder(row.tier_bonus_funder),
        payment_terms_days=row.payment_terms_days,
        tax_rate_percent=Decimal(row.tax_rate_percent),
        tax_note=row.tax_note,
    )


def get_agreement(connection: Connection, agreement_id: str) -> tuple[PriceAgreement, int] | None:
    row = connection.execute(
        select(price_agreements).where(price_agreements.c.agreement_id == agreement_id)
    ).one_or_none()
    return None if row is None else (_agreement_from_row(row), row.create_time_us)


def agreement_at_start(connection: Connection, partner_id: str, valid_from_us: int) -> str | None:
    return connection.execute(
        select(price_agreements.c.agreement_id).where(
            price_agreements.c.partner_id == partner_id, price_agreements.c.valid_from_us == valid_from_us
        )
    ).scalar_one_or_none()


def insert_agreement(connection: Connection, agreement: PriceAgreement, now_us: int) -> None:
    connection.execute(
        price_agreements.insert().values(
            agreement_id=agreement.agreement_id,
            partner_id=agreement.partner_id,
            valid_from_us=agreement.valid_from_us,
            prices_json=_prices_json(agreement),
            create_time_us=now_us,
            breakage_owner=agreement.breakage_owner.value,
            tier_bonus_funder=agreement.tier_bonus_funder.value,
            payment_terms_days=agreement.payment_terms_days,
            tax_rate_percent=str(agreement.tax_rate_percent),
            tax_note=agreement.tax_note,
        )
    )


def agreement_ids_starting_before(connection: Connection, end_us: int) -> frozenset[str]:
    """Ids of the versions that can price anything before end_us."""
    rows = connection.execute(select(price_agreements.c.agreement_id).where(price_agreements.c.valid_from_us < end_us))
    return frozenset(row.agreement_id for row in rows)


def all_agreements(connection: Connection) -> list[PriceAgreement]:
    rows = connection.execute(
        select(price_agreements).order_by(price_agreements.c.partner_id, price_agreements.c.valid_from_us)
    )
    return [_agreement_from_row(row) for row in rows]


def priced_partner_ids(connection: Connection, limit: int) -> frozenset[str]:
    """Partners with at least one agreement version: the first `limit` by id."""
    query = select(price_agreements.c.partner_id).distinct().order_by(price_agreements.c.partner_id).limit(limit)
    return frozenset(connection.execute(query).scalars())


def list_agreements(
    connection: Connection, partner_id: str, after: tuple[str, int] | None, limit: int
) -> list[tuple[PriceAgreement, int]]:
    query = select(price_agreements)
    if partner_id:
        query = query.where(price_agreements.c.partner_id == partner_id)
    if after is not None:
        query = query.where(
            (price_agreements.c.partner_id > after[0])
            | ((price_agreements.c.partner_id == after[0]) & (price_agreements.c.valid_from_us > after[1]))
        )
    query = query.order_by(price_agreements.c.partner_id, price_agreements.c.valid_from_us).limit(limit)
    return [(_agreement_from_row(row), row.create_time_us) for row in connection.execute(query)]


# ---------------------------------------------------------------- periods


def get_period_row(connection: Connection, period_id: str):
    return connection.execute(select(periods).where(periods.c.period_id == period_id)).one_or_none()


def last_period_row(connection: Connection):
    return connection.execute(select(periods).order_by(periods.c.end_us.desc()).limit(1)).one_or_none()


def closed_span(connection: Connection) -> ClosedSpan | None:
    """What the stored periods (closed, or frozen and closing) cover; None before the first close."""
    first = connection.execute(select(periods).order_by(periods.c.start_us).limit(1)).one_or_none()
    last = last_period_row(connection)
    if first is None or last is None:
        return None
    return ClosedSpan(first.period_id, first.start_us, last.period_id, last.end_us)


def period_containing(connection: Connection, time_us: int):
    return connection.execute(
        select(periods).where(periods.c.start_us <= time_us, periods.c.end_us > time_us)
    ).one_or_none()


def insert_closing_period(connection: Connection, settlement: PeriodSettlement, now_us: int) -> None:
    """Freeze the figures before anything is posted, so a retried close re-posts the same amounts."""
    connection.execute(
        periods.insert().values(
            period_id=settlement.period_id,
            start_us=settlement.start_us,
            end_us=settlement.end_us,
            state=PERIOD_STATE_CLOSING,
            last_commit_sequence=settlement.last_commit_sequence,
            close_time_us=now_us,
        )
    )
    for statement in settlement.statements:
        connection.execute(
            statements.insert().values(
                period_id=settlement.period_id,
                partner_id=statement.partner_id,
                net_cents=statement.net_cents,
                settlement_transfer_id=statement.settlement_transfer_id,
            )
        )
        if statement.lines:
            connection.execute(
                statement_lines.insert(),
                [
                    {
                        "period_id": settlement.period_id,
                        "partner_id": statement.partner_id,
                        "line_number": number,
                        "kind": line.kind.value,
                        "currency_code": line.currency_code,
                        "counterparty_currency_code": line.counterparty_currency_code,
                        "counterparty_id": line.counterparty_id,
                        "quantity": line.quantity,
                        "unit_price": str(line.unit_price),
                        "amount_cents": line.amount_cents,
                        "agreement_id": line.agreement_id,
                        "prior_period_adjustment": line.prior_period_adjustment,
                        "expired_quantity": line.expired_quantity,
                        "reinstated_quantity": line.reinstated_quantity,
                        "breakage_owner": line.breakage_owner.value if line.breakage_owner is not None else "",
                        "tier_bonus_issued_quantity": line.tier_bonus_issued_quantity,
                        "tier_bonus_reversed_quantity": line.tier_bonus_reversed_quantity,
                        "tier_bonus_funder": line.tier_bonus_funder.value if line.tier_bonus_funder else "",
                        "original_period_id": line.original_period_id,
                        "adjustment_id": line.adjustment_id,
                        "adjustment_reason": line.adjustment_reason,
                    }
                    for number, line in enumerate(statement.lines, start=1)
                ],
            )
    if settlement.roll_forwards:
        connection.execute(
            roll_forwards.insert(),
            [
                {"period_id": settlement.period_id, "currency_code": rf.currency_code}
                | {name: getattr(rf, name) for name in _ROLL_FORWARD_FIELDS}
                for rf in settlement.roll_forwards
            ],
        )


def mark_closed(connection: Connection, period_id: str) -> bool:
    """CLOSING -> CLOSED; True for the one transaction that made the change.

    The WHERE on the state makes concurrent closes (in any number of processes) agree: on
    PostgreSQL the second UPDATE waits for the first's row lock and re-checks the state; on
    SQLite writers are serialised by BEGIN IMMEDIATE."""
    result = connection.execute(
        periods.update()
        .where(periods.c.period_id == period_id, periods.c.state == PERIOD_STATE_CLOSING)
        .values(state=PERIOD_STATE_CLOSED)
    )
    return result.rowcount == 1


def load_period(connection: Connection, period_id: str) -> tuple[PeriodSettlement, str] | None:
    """The stored settlement and its state (CLOSING or CLOSED)."""
    row = get_period_row(connection, period_id)
    if row is None:
        return None
    line_rows = connection.execute(
        select(statement_lines)
        .where(statement_lines.c.period_id == period_id)
        .order_by(statement_lines.c.partner_id, statement_lines.c.line_number)
    ).all()
    lines_by_partner: dict[str, list[StatementLine]] = {}
    for line in line_rows:
        lines_by_partner.setdefault(line.partner_id, []).append(
            StatementLine(
                kind=LineKind(line.kind),
                currency_code=line.currency_code,
                counterparty_currency_code=line.counterparty_currency_code,
                counterparty_id=line.counterparty_id,
                quantity=line.quantity,
                unit_price=Decimal(line.unit_price),
                amount_cents=line.amount_cents,
                agreement_id=line.agreement_id,
                prior_period_adjustment=bool(line.prior_period_adjustment),
                expired_quantity=line.expired_quantity,
                reinstated_quantity=line.reinstated_quantity,
                breakage_owner=BreakageOwner(line.breakage_owner) if line.breakage_owner else None,
                tier_bonus_issued_quantity=line.tier_bonus_issued_quantity,
                tier_bonus_reversed_quantity=line.tier_bonus_reversed_quantity,
                tier_bonus_funder=TierBonusFunder(line.tier_bonus_funder) if line.tier_bonus_funder else None,
                original_period_id=line.original_period_id,
                adjustment_id=line.adjustment_id,
                adjustment_reason=line.adjustment_reason,
            )
        )
    statement_rows = connection.execute(
        select(statements).where(statements.c.period_id == period_id).order_by(statements.c.partner_id)
    ).all()
    loaded = []
    for s in statement_rows:
        statement = Statement(s.partner_id, tuple(lines_by_partner.get(s.partner_id, ())), s.settlement_transfer_id)
        if statement.net_cents != s.net_cents:
            raise RuntimeError(f"stored statement {period_id}/{s.partner_id} does not add up to its net")
        loaded.append(statement)
    rf_rows = connection.execute(
        select(roll_forwards).where(roll_forwards.c.period_id == period_id).order_by(roll_forwards.c.currency_code)
    ).all()
    settlement = PeriodSettlement(
        period_id=row.period_id,
        start_us=row.start_us,
        end_us=row.end_us,
        closed=row.state == PERIOD_STATE_CLOSED,
        statements=tuple(loaded),
        roll_forwards=tuple(
            RollForward(currency_code=r.currency_code, **{name: getattr(r, name) for name in _ROLL_FORWARD_FIELDS})
            for r in rf_rows
        ),
        last_commit_sequence=row.last_commit_sequence,
        close_time_us=row.close_time_us,
        documents=document_store.load_documents(connection, period_id),
    )
    return settlement, row.state


def list_period_rows(connection: Connection, before_end_us: int | None, limit: int) -> Sequence:
    query = select(periods).where(periods.c.state == PERIOD_STATE_CLOSED)
    if before_end_us is not None:
        query = query.where(periods.c.end_us < before_end_us)
    return connection.execute(query.order_by(periods.c.end_us.desc()).limit(limit)).all()


def operator_net_of(connection: Connection, period_id: str) -> int:
    rows = connection.execute(select(statements.c.net_cents).where(statements.c.period_id == period_id))
    return sum(r.net_cents for r in rows)


# ---------------------------------------------------------------- reconciliations


def get_reconciliation_row(connection: Connection, reconciliation_id: str):
    return connection.execute(
        select(reconciliations).where(reconciliations.c.reconciliation_id == reconciliation_id)
    ).one_or_none()


def insert_reconciliation(
    connection: Connection,
    reconciliation_id: str,
    partner_id: str,
    period_id: str,
    file_sha256: str,
    result: ReconciliationResult,
    now_us: int,
) -> None:
    connection.execute(
        reconciliations.insert().values(
            reconciliation_id=reconciliation_id,
            partner_id=partner_id,
            period_id=period_id,
            file_sha256=file_sha256,
            create_time_us=now_us,
        )
    )
    if result.rows:
        connection.execute(
            reconciliation_rows.insert(),
            [
                {
                    "reconciliation_id": reconciliation_id,
                    "row_number": number,
                    "status": r.status.value,
                    "file_line_number": r.line_number,
                    "receipt_id": r.receipt_id,
                    "store_id": r.store_id,
                    "terminal_id": r.terminal_id,
                    "type": r.type,
                    "partner_points": r.partner_points,
                    "ledger_points": r.ledger_points,
                    "time": r.time,
                    "currency_code": r.currency_code,
                }
                for number, r in enumerate(result.rows, start=1)
            ],
        )


def load_reconciliation_rows(connection: Connection, reconciliation_id: str) -> ReconciliationResult:
    rows = connection.execute(
        select(reconciliation_rows)
        .where(reconciliation_rows.c.reconciliation_id == reconciliation_id)
        .order_by(reconciliation_rows.c.row_number)
    ).all()
    results = tuple(
        ReconciledRow(
            MatchStatus(r.status),
            r.file_line_number,
            r.receipt_id,
            r.store_id,
            r.terminal_id,
            r.type,
            r.partner_points,
            r.ledger_points,
            r.time,
            r.currency_code,
        )
        for r in rows
    )
    counts = {status: 0 for status in MatchStatus}
    for r in results:
        counts[r.status] += 1
    return ReconciliationResult(results, counts)


# The document tables (migration 0006) and the corrections' tables (adjustments, reviews of
# reconciliation rows; 0007) live in their own modules on this metadata; imported last because
# they import this module's metadata, so that whoever reads `metadata` sees them.
from services.settlement import correction_store, document_store  # noqa: E402, F401
