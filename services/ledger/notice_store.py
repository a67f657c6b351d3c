"""The expiry notices table and its queries (WatchExpiryNotices).

A notice row is written once per (wallet, lot, expiry round, due date), by the expiry pass,
inside its transfer batch: after the wallets' balance rows and the clock row are locked. So two
ledger processes never write the same notice (the second waits for the first's locks, then sees
its row; the unique key stops anything else), and notice sequences are taken in commit order
with no gap (a follower never skips a smaller number that commits later).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Connection,
    Integer,
    String,
    Table,
    UniqueConstraint,
    and_,
    exists,
    func,
    insert,
    select,
)

from services.common.sql import pairs_in
from services.ledger.lot_store import expiry_policies, lots, wallet_activity
from services.ledger.lots import NOTICE_DAYS_DEFAULT, US_PER_DAY, PolicyKind
from services.ledger.notices import ExpiryNotice
from services.ledger.store import ID, metadata

expiry_notices = Table(
    "expiry_notices",
    metadata,
    Column("notice_sequence", BigInteger, primary_key=True, autoincrement=False),
    Column("account_id", ID, nullable=False),
    Column("lot_id", ID, nullable=False),
    Column("expiry_round", Integer, nullable=False),
    Column("due_at_us", BigInteger, nullable=False),  # the lot's expiry date the notice is for
    Column("owner_id", String(128), nullable=False),
    Column("currency_code", String(16), nullable=False),
    Column("amount", BigInteger, nullable=False),  # open minor units when noticed
    Column("expires_at_us", BigInteger, nullable=False),  # no earlier than due, nor notice + notice period
    Column("noticed_at_us", BigInteger, nullable=False),
    UniqueConstraint("account_id", "lot_id", "expiry_round", "due_at_us", name="uq_expiry_notices_lot"),
    CheckConstraint("amount > 0", name="ck_expiry_notices_amount"),
    CheckConstraint("expires_at_us >= due_at_us", name="ck_expiry_notices_not_before_due"),
)


def _notice(row) -> ExpiryNotice:
    return ExpiryNotice(
        notice_sequence=row.notice_sequence,
        account_id=row.account_id,
        lot_id=row.lot_id,
        expiry_round=row.expiry_round,
        due_at_us=row.due_at_us,
        owner_id=row.owner_id,
        currency_code=row.currency_code,
        amount=row.amount,
        expires_at_us=row.expires_at_us,
        noticed_at_us=row.noticed_at_us,
    )


def notices_of_lots(connection: Connection, keys: Iterable[tuple[str, str]]) -> dict[tuple, ExpiryNotice]:
    """The notices of these (wallet, lot) pairs, by (wallet, lot, round, due date)."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    rows = connection.execute(
        select(expiry_notices).where(pairs_in(expiry_notices.c.account_id, expiry_notices.c.lot_id, wanted))
    )
    return {(r.account_id, r.lot_id, r.expiry_round, r.due_at_us): _notice(r) for r in rows}


def insert_notices(connection: Connection, notices: Sequence[ExpiryNotice]) -> list[ExpiryNotice]:
    """Write `notices` with the next sequences; the caller holds the clock row (see the module doc)."""
    if not notices:
        return []
    last = connection.execute(select(func.coalesce(func.max(expiry_notices.c.notice_sequence), 0))).scalar_one()
    numbered = [notice.numbered(int(last) + offset) for offset, notice in enumerate(notices, start=1)]
    connection.execute(
        insert(expiry_notices),
        [
            {
                "notice_sequence": n.notice_sequence,
                "account_id": n.account_id,
                "lot_id": n.lot_id,
                "expiry_round": n.expiry_round,
                "due_at_us": n.due_at_us,
                "owner_id": n.owner_id,
                "currency_code": n.currency_code,
                "amount": n.amount,
                "expires_at_us": n.expires_at_us,
                "noticed_at_us": n.noticed_at_us,
            }
            for n in numbered
        ],
    )
    return numbered


def notices_after(connection: Connection, after_sequence: int, limit: int) -> list[ExpiryNotice]:
    rows = connection.execute(
        select(expiry_notices)
        .where(expiry_notices.c.notice_sequence > after_sequence)
        .order_by(expiry_notices.c.notice_sequence)
        .limit(limit)
    )
    return [_notice(row) for row in rows]


def notice_candidates(connection: Connection, now_us: int, after_account: str, limit: int) -> list[str]:
    """Wallets after `after_account`, in id order, with an open lot whose notice period may have
    begun by `now_us` and that has no notice for its current round and expiry date yet.

    A FIXED lot's notice names its expiry date (or a later one, when an ended exemption moved
    it); an INACTIVITY lot's must be newer than the wallet's last activity, which set its date.
    Months are floored at 28 days here, as for due lots; the exact date is decided in Python.
    FIXED lots are found through their expiry index: only those due within the longest notice
    period any policy gives are looked at."""
    longest = connection.execute(select(func.max(expiry_policies.c.notice_days))).scalar()
    horizon_us = now_us + max(int(longest or 0), NOTICE_DAYS_DEFAULT) * US_PER_DAY
    notice_us = lots.c.notice_days * US_PER_DAY
    same_round = and_(
        expiry_notices.c.account_id == lots.c.account_id,
        expiry_notices.c.lot_id == lots.c.lot_id,
        expiry_notices.c.expiry_round == lots.c.expiry_round,
    )
    fixed = select(lots.c.account_id).where(
        and_(
            lots.c.open_amount > 0,
            lots.c.account_id > after_account,
            lots.c.expires_at_us <= horizon_us,
            lots.c.expires_at_us - notice_us <= now_us,
            ~exists().where(and_(same_round, expiry_notices.c.due_at_us >= lots.c.expires_at_us)),
        )
    )
    quiet_since = func.coalesce(wallet_activity.c.last_activity_us, lots.c.credited_at_us)
    quiet = (
        select(lots.c.account_id)
        .outerjoin(wallet_activity, wallet_activity.c.account_id == lots.c.account_id)
        .where(
            and_(
                lots.c.open_amount > 0,
                lots.c.policy_kind == int(PolicyKind.INACTIVITY),
                lots.c.account_id > after_account,
                quiet_since + lots.c.months * 28 * US_PER_DAY - notice_us <= now_us,
                ~exists().where(and_(same_round, expiry_notices.c.noticed_at_us >= quiet_since)),
            )
        )
    )
    union = fixed.union(quiet).subquery()
    rows = connection.execute(select(union.c.account_id).order_by(union.c.account_id).limit(limit))
    return [row[0] for row in rows]
