"""Tables and queries of expiry: policy versions, lots, their draws, wallets' last activity.

Lots change only inside a transfer batch that holds the wallet's balance row lock, so reading
them after the locks (as the batch does) sees exactly what the balance does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Connection,
    Index,
    Integer,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal,
    or_,
    select,
    true,
    update,
)

from services.common.sql import OneTrip, json_update, json_upsert, pairs_in, upsert_many
from services.ledger.lots import Draw, ExpiryPolicy, Lot, PolicyKind
from services.ledger.model import Side
from services.ledger.store import (
    ID,
    account_balances,
    accounts,
    entries,
    index_expression,
    insert_rows,
    metadata,
    transfers,
)

expiry_policies = Table(
    "expiry_policies",
    metadata,
    Column("currency_code", String(16), nullable=False),
    Column("effective_from_us", BigInteger, nullable=False),
    Column("kind", SmallInteger, nullable=False),
    Column("months", Integer, nullable=False),
    Column("sweep_month", SmallInteger, nullable=False),
    Column("sweep_day", SmallInteger, nullable=False),
    Column("notice_days", Integer, nullable=False),
    Column("created_at_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("currency_code", "effective_from_us"),
)

lots = Table(
    "lots",
    metadata,
    Column("account_id", ID, nullable=False),
    Column("lot_id", ID, nullable=False),
    Column("credited_at_us", BigInteger, nullable=False),
    Column("expires_at_us", BigInteger, nullable=True),
    Column("amount", BigInteger, nullable=False),
    Column("open_amount", BigInteger, nullable=False),
    Column("policy_kind", SmallInteger, nullable=False),
    Column("months", Integer, nullable=False),
    Column("notice_days", Integer, nullable=False),
    Column("issuer_id", String(128), nullable=False),
    Column("expiry_round", Integer, nullable=False),
    PrimaryKeyConstraint("account_id", "lot_id"),
    CheckConstraint("open_amount >= 0 AND open_amount <= amount", name="ck_lots_open_amount"),
    Index("ix_lots_due", "expires_at_us", postgresql_where="open_amount > 0", sqlite_where="open_amount > 0"),
    # A wallet's open lots in the order debits draw them (lots.Lot.order_key; NULL, never, sorts
    # last), so a debit reads the few lots it draws from, not every lot the wallet still holds.
    Index(
        "ix_lots_draw_order",
        "account_id",
        "expires_at_us",
        "credited_at_us",
        postgresql_where="open_amount > 0",
        sqlite_where="open_amount > 0",
    ),
)

lot_draws = Table(
    "lot_draws",
    metadata,
    Column("transfer_id", ID, nullable=False),
    Column("account_id", ID, nullable=False),
    Column("lot_id", ID, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("restores_transfer_id", ID, nullable=False),
    PrimaryKeyConstraint("transfer_id", "account_id", "lot_id"),
    Index("ix_lot_draws_restores", "restores_transfer_id"),
)

expiry_exemptions = Table(
    "expiry_exemptions",
    metadata,
    Column("owner_id", String(128), primary_key=True),
    Column("exempt", Boolean, nullable=False),
    Column("changed_at_us", BigInteger, nullable=False),  # exempt since, or (exempt false) ended at
)

wallet_activity = Table(
    "wallet_activity",
    metadata,
    Column("account_id", ID, primary_key=True),
    Column("last_activity_us", BigInteger, nullable=False),
)


def _policy(row) -> ExpiryPolicy:
    return ExpiryPolicy(
        currency_code=row.currency_code,
        effective_from_us=row.effective_from_us,
        kind=PolicyKind(row.kind),
        months=row.months,
        sweep_month=row.sweep_month,
        sweep_day=row.sweep_day,
        notice_days=row.notice_days,
        created_at_us=row.created_at_us,
    )


# Read by every batch that moves points of a tracked wallet: built once.
_POLICIES_OF = (
    select(expiry_policies)
    .where(expiry_policies.c.currency_code.in_(bindparam("codes", expanding=True)))
    .order_by(expiry_policies.c.currency_code, expiry_policies.c.effective_from_us)
)


def policies_of(connection: Connection, currency_codes: Iterable[str]) -> dict[str, list[ExpiryPolicy]]:
    codes = sorted(set(currency_codes))
    found: dict[str, list[ExpiryPolicy]] = {}
    if not codes:
        return found
    for row in connection.execute(_POLICIES_OF, {"codes": codes}):
        found.setdefault(row.currency_code, []).append(_policy(row))
    return found


def get_policy(connection: Connection, currency_code: str, effective_from_us: int) -> ExpiryPolicy | None:
    row = connection.execute(
        select(expiry_policies).where(
            and_(
                expiry_policies.c.currency_code == currency_code,
                expiry_policies.c.effective_from_us == effective_from_us,
            )
        )
    ).first()
    return None if row is None else _policy(row)


def insert_policy(connection: Connection, policy: ExpiryPolicy) -> None:
    connection.execute(
        insert(expiry_policies).values(
            currency_code=policy.currency_code,
            effective_from_us=policy.effective_from_us,
            kind=int(policy.kind),
            months=policy.months,
            sweep_month=policy.sweep_month,
            sweep_day=policy.sweep_day,
            notice_days=policy.notice_days,
            created_at_us=policy.created_at_us,
        )
    )


def _lot(row) -> Lot:
    return Lot(
        account_id=row.account_id,
        lot_id=row.lot_id,
        credited_at_us=row.credited_at_us,
        expires_at_us=row.expires_at_us,
        amount=row.amount,
        open_amount=row.open_amount,
        policy_kind=PolicyKind(row.policy_kind),
        months=row.months,
        notice_days=row.notice_days,
        issuer_id=row.issuer_id,
        expiry_round=row.expiry_round,
    )


def open_lots(connection: Connection, account_ids: Iterable[str]) -> dict[tuple[str, str], Lot]:
    ids = sorted(set(account_ids))
    if not ids:
        return {}
    rows = connection.execute(_OPEN_LOTS, {"ids": ids})
    return {(row.account_id, row.lot_id): _lot(row) for row in rows}


_OPEN_LOTS = select(lots).where(and_(lots.c.account_id.in_(bindparam("ids", expanding=True)), lots.c.open_amount > 0))

# Lots read per debited wallet first; a wallet whose first lots do not cover its debits is read whole.
DRAW_LOTS_FIRST = 16
_COLUMNS = ", ".join(column.name for column in lots.c)
# Each wallet's first open lots in draw order, through ix_lots_draw_order (ascending puts NULL,
# never expiring, last, as Lot.order_key does; lot_id in code point order, as Python compares).
_FIRST_LOTS_SQL = (
    f"SELECT l.* FROM unnest(%(ids)s::varchar[]) AS w(account_id) CROSS JOIN LATERAL"
    f" (SELECT {_COLUMNS} FROM lots WHERE lots.account_id = w.account_id AND lots.open_amount > 0"
    ' ORDER BY lots.expires_at_us, lots.credited_at_us, lots.lot_id COLLATE "C" LIMIT %(first)s) AS l'
)


def lots_to_draw(connection: Connection, needs: dict[str, int]) -> dict[tuple[str, str], Lot]:
    """For each wallet (account id -> the most the batch can draw from it: the sum of its debits),
    its open lots in draw order up to the first at which they cover that amount, or all of them.

    A wallet holds a lot per credit, and keeps the ones no debit reached: reading them all made
    every redemption cost more the longer a member had been earning. No draw of the batch can
    reach past these lots: before it could, it would have drawn all of them, more than the sum
    of the wallet's debits (credits in the batch only open lots or give back to drawn ones)."""
    if not needs:
        return {}
    if connection.dialect.name != "postgresql":  # no LATERAL: every open lot (the same draws)
        return open_lots(connection, needs)
    ids = sorted(needs)
    found: dict[str, list[Lot]] = {account_id: [] for account_id in ids}
    for row in connection.exec_driver_sql(_FIRST_LOTS_SQL, {"ids": ids, "first": DRAW_LOTS_FIRST}):
        found[row.account_id].append(_lot(row))
    chosen: dict[tuple[str, str], Lot] = {}
    short = []
    for account_id, first in found.items():
        first.sort(key=Lot.order_key)
        covered = 0
        for lot in first:
            chosen[(lot.account_id, lot.lot_id)] = lot
            covered += lot.open_amount
            if covered >= needs[account_id]:
                break
        else:
            if len(first) == DRAW_LOTS_FIRST:  # more lots than read, and these fall short
                short.append(account_id)
    return {**chosen, **open_lots(connection, short)}


def lots_by_key(connection: Connection, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Lot]:
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    rows = connection.execute(select(lots).where(pairs_in(lots.c.account_id, lots.c.lot_id, wanted)))
    found = {(row.account_id, row.lot_id): _lot(row) for row in rows}
    return {key: found[key] for key in wanted if key in found}


def draws_of(connection: Connection, transfer_ids: Iterable[str]) -> dict[str, list[Draw]]:
    """The draws of these transfers, and the restores made by reversals of them, in the order made."""
    ids = sorted(set(transfer_ids))
    found: dict[str, list[Draw]] = {}
    if not ids:
        return found
    query = select(lot_draws).where(or_(lot_draws.c.transfer_id.in_(ids), lot_draws.c.restores_transfer_id.in_(ids)))
    for row in connection.execute(query):
        item = Draw(row.transfer_id, row.account_id, row.lot_id, row.amount, row.restores_transfer_id)
        owner = row.restores_transfer_id if row.restores_transfer_id in ids else row.transfer_id
        found.setdefault(owner, []).append(item)
    for items in found.values():  # draws before the restores made of them
        items.sort(key=lambda item: item.amount < 0)
    return found


def last_activity(connection: Connection, account_ids: Iterable[str]) -> dict[str, int]:
    ids = sorted(set(account_ids))
    if not ids:
        return {}
    rows = connection.execute(select(wallet_activity).where(wallet_activity.c.account_id.in_(ids)))
    return {row.account_id: row.last_activity_us for row in rows}


def write_changes(
    connection: Connection,
    trip: OneTrip | None,
    new_lots: Sequence[Lot],
    changed: Iterable[Lot],
    new_draws: Sequence[Draw],
    active_wallets: dict[str, int],
) -> None:
    insert_rows(
        connection,
        trip,
        lots,
        [
            {
                "account_id": lot.account_id,
                "lot_id": lot.lot_id,
                "credited_at_us": lot.credited_at_us,
                "expires_at_us": lot.expires_at_us,
                "amount": lot.amount,
                "open_amount": lot.open_amount,
                "policy_kind": int(lot.policy_kind),
                "months": lot.months,
                "notice_days": lot.notice_days,
                "issuer_id": lot.issuer_id,
                "expiry_round": lot.expiry_round,
            }
            for lot in new_lots
        ],
    )
    changed = list(changed)
    if changed and trip is not None:
        trip.add(*json_update(lots, ("account_id", "lot_id"), [_changes(lot) for lot in changed]))
    elif changed:
        statement = (
            update(lots)
            .where(and_(lots.c.account_id == _bind("b_account"), lots.c.lot_id == _bind("b_lot")))
            .values(
                open_amount=_bind("b_open"),
                expiry_round=_bind("b_round"),
                expires_at_us=_bind("b_expires"),
                policy_kind=_bind("b_kind"),
                months=_bind("b_months"),
                notice_days=_bind("b_notice"),
                credited_at_us=_bind("b_credited"),
            )
        )
        connection.execute(
            statement,
            [
                {
                    "b_account": lot.account_id,
                    "b_lot": lot.lot_id,
                    "b_open": lot.open_amount,
                    "b_round": lot.expiry_round,
                    "b_expires": lot.expires_at_us,
                    "b_kind": int(lot.policy_kind),
                    "b_months": lot.months,
                    "b_notice": lot.notice_days,
                    "b_credited": lot.credited_at_us,
                }
                for lot in changed
            ],
        )
    insert_rows(
        connection,
        trip,
        lot_draws,
        [
            {
                "transfer_id": item.transfer_id,
                "account_id": item.account_id,
                "lot_id": item.lot_id,
                "amount": item.amount,
                "restores_transfer_id": item.restores_transfer_id,
            }
            for item in new_draws
        ],
    )
    if active_wallets:
        set_last_activity(connection, active_wallets, trip)


def set_last_activity(connection: Connection, active_wallets: dict[str, int], trip: OneTrip | None = None) -> None:
    """Each wallet's last qualifying activity, in one upsert (no read to tell new rows from old)."""
    rows = [{"account_id": account_id, "last_activity_us": at} for account_id, at in sorted(active_wallets.items())]
    if trip is not None:
        trip.add(*json_upsert(wallet_activity, ("account_id",), rows))
    else:
        upsert_many(connection, wallet_activity, ("account_id",), rows)


def _changes(lot: Lot) -> dict:
    """A changed lot's row: what a draw, a restore or an expiry round may change, by its key."""
    return {
        "account_id": lot.account_id,
        "lot_id": lot.lot_id,
        "open_amount": lot.open_amount,
        "expiry_round": lot.expiry_round,
        "expires_at_us": lot.expires_at_us,
        "policy_kind": int(lot.policy_kind),
        "months": lot.months,
        "notice_days": lot.notice_days,
        "credited_at_us": lot.credited_at_us,
    }


def _bind(name: str):
    return bindparam(name)


def due_candidates(connection: Connection, as_of_us: int, after_account: str, limit: int) -> list[str]:
    """Wallets after `after_account`, in id order, with a FIXED lot due or an INACTIVITY lot whose
    wallet (or, without activity, the lot) has been quiet long enough that it may be due.

    In id order, page by page: wallets that turn out not due, deferred or exempt never keep the
    others from their turn."""
    fixed = select(lots.c.account_id).where(
        and_(lots.c.open_amount > 0, lots.c.expires_at_us <= as_of_us, lots.c.account_id > after_account)
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
                # Months are calendar months; 28 days each is a floor, the exact date is checked in Python.
                quiet_since + lots.c.months * 28 * 86_400_000_000 <= as_of_us,
            )
        )
    )
    union = fixed.union(quiet).subquery()
    rows = connection.execute(select(union.c.account_id).order_by(union.c.account_id).limit(limit))
    return [row[0] for row in rows]


def breakage_accounts(connection: Connection, currency_codes: Iterable[str]) -> dict[str, str]:
    """Per currency, the operator's breakage account (the first by id, if several)."""
    codes = sorted(set(currency_codes))
    if not codes:
        return {}
    rows = connection.execute(
        select(accounts.c.currency_code, accounts.c.id)
        .where(and_(accounts.c.kind == "operator_breakage", accounts.c.currency_code.in_(codes)))
        .order_by(accounts.c.currency_code, accounts.c.id)
    )
    found: dict[str, str] = {}
    for code, account_id in rows:
        found.setdefault(code, account_id)
    return found


def expiring_candidates(
    connection: Connection, currency_code: str, horizon_us: int, after_account: str, limit: int
) -> list[str]:
    """Member wallets of a currency that may have points due by `horizon_us`, by id after `after_account`."""
    wallet = and_(
        accounts.c.id == lots.c.account_id,
        accounts.c.currency_code == currency_code,
        lots.c.open_amount > 0,
        lots.c.account_id > after_account,
    )
    fixed = select(lots.c.account_id).where(and_(wallet, lots.c.expires_at_us <= horizon_us))
    quiet_since = func.coalesce(wallet_activity.c.last_activity_us, lots.c.credited_at_us)
    quiet = (
        select(lots.c.account_id)
        .outerjoin(wallet_activity, wallet_activity.c.account_id == lots.c.account_id)
        .where(
            and_(
                wallet,
                lots.c.policy_kind == int(PolicyKind.INACTIVITY),
                quiet_since + lots.c.months * 28 * 86_400_000_000 <= horizon_us,
            )
        )
    )
    union = fixed.union(quiet).subquery()
    rows = connection.execute(select(union.c.account_id).order_by(union.c.account_id).limit(limit))
    return [row[0] for row in rows]


def exemptions(connection: Connection, owner_ids: Iterable[str]) -> tuple[set[str], dict[str, int]]:
    """(owners exempt now, owners whose exemption ended -> when it ended)."""
    ids = sorted(set(owner_ids))
    exempt: set[str] = set()
    ended: dict[str, int] = {}
    if not ids:
        return exempt, ended
    for row in connection.execute(select(expiry_exemptions).where(expiry_exemptions.c.owner_id.in_(ids))):
        if row.exempt:
            exempt.add(row.owner_id)
        else:
            ended[row.owner_id] = row.changed_at_us
    return exempt, ended


def set_exemption(connection: Connection, owner_id: str, exempt: bool, now_us: int) -> None:
    current, ended = exemptions(connection, [owner_id])
    if (owner_id in current) == exempt:
        return  # already so: the time it changed stays
    values = {"exempt": exempt, "changed_at_us": now_us}
    if owner_id in current or owner_id in ended:
        connection.execute(update(expiry_exemptions).where(expiry_exemptions.c.owner_id == owner_id).values(**values))
    elif exempt:
        connection.execute(insert(expiry_exemptions).values(owner_id=owner_id, **values))


# ---------------------------------------------------------------- finance: breakage and outstanding points

_EXPIRY_CODE = 5  # ledger_pb2.TRANSFER_CODE_EXPIRY
_REVERSAL_CODE = 3  # ledger_pb2.TRANSFER_CODE_REVERSAL
BREAKAGE_KIND = "operator_breakage"


def breakage_by_issuer(
    connection: Connection, start_us: int, end_us: int
) -> tuple[dict[tuple[str, str], list[int]], int]:
    """{(currency, issuer): [expired, reinstated]} of breakage accounts in [start, end), and the
    highest sequence counted. An expiry counts for the issuer it names; a reinstatement (a REVERSAL
    of an EXPIRY) for the issuer its original names."""
    # Breakage accounts first (a few per currency): their entries are read through the entries'
    # primary key, never by scanning the window's whole traffic.
    in_window = and_(
        entries.c.account_id.in_(select(accounts.c.id).where(accounts.c.kind == BREAKAGE_KIND)),
        entries.c.committed_at_us >= start_us,
        entries.c.committed_at_us < end_us,
        entries.c.posted_amount > 0,
    )
    base = entries.join(accounts, accounts.c.id == entries.c.account_id).join(
        transfers, transfers.c.sequence == entries.c.transfer_sequence
    )
    expired = (
        select(
            accounts.c.currency_code,
            transfers.c.partner_id,
            func.sum(entries.c.posted_amount),
            func.max(entries.c.transfer_sequence),
        )
        .select_from(base)
        .where(in_window, entries.c.code == _EXPIRY_CODE, entries.c.side == int(Side.CREDIT))
        .group_by(accounts.c.currency_code, transfers.c.partner_id)
    )
    original = transfers.alias("original")
    reinstated = (
        select(
            accounts.c.currency_code,
            original.c.partner_id,
            func.sum(entries.c.posted_amount),
            func.max(entries.c.transfer_sequence),
        )
        .select_from(base.join(original, original.c.id == transfers.c.reverses_transfer_id))
        .where(
            in_window,
            entries.c.code == _REVERSAL_CODE,
            entries.c.side == int(Side.DEBIT),
            original.c.code == _EXPIRY_CODE,
        )
        .group_by(accounts.c.currency_code, original.c.partner_id)
    )
    found: dict[tuple[str, str], list[int]] = {}
    last_sequence = 0
    for column, query in ((0, expired), (1, reinstated)):
        for currency_code, issuer_id, amount, sequence in connection.execute(query):
            found.setdefault((currency_code, issuer_id), [0, 0])[column] += int(amount)
            last_sequence = max(last_sequence, int(sequence))
    return found, last_sequence


def sequence_at(connection: Connection, as_of_us: int, last_sequence: int) -> int:
    """The highest commit sequence committed at or before `as_of_us` (commit times never decrease
    with the sequence): one before the first transfer of the first commit time after it."""
    next_time = select(func.min(entries.c.committed_at_us)).where(entries.c.committed_at_us > as_of_us)
    first_after = connection.execute(
        select(func.min(entries.c.transfer_sequence)).where(entries.c.committed_at_us == next_time.scalar_subquery())
    ).scalar()
    return last_sequence if first_after is None else int(first_after) - 1


# Every member wallet, as settlement's audit counts them: a wallet without lots shows as a difference.
_MEMBER_WALLET = accounts.c.kind == "member_wallet"


def wallet_totals_at(connection: Connection, as_of_us: int, after_sequence: int, currency_code: str) -> dict[str, int]:
    """Per currency, the member wallets' posted balances at as_of: now, less what moved since."""
    wallet = _MEMBER_WALLET if not currency_code else and_(_MEMBER_WALLET, accounts.c.currency_code == currency_code)
    now = connection.execute(
        select(
            accounts.c.currency_code,
            func.sum(account_balances.c.credits_posted - account_balances.c.debits_posted),
        )
        .join(account_balances, account_balances.c.account_id == accounts.c.id)
        .where(wallet)
        .group_by(accounts.c.currency_code)
    )
    totals = {code: int(amount or 0) for code, amount in now}
    signed = case((entries.c.side == int(Side.CREDIT), entries.c.posted_amount), else_=-entries.c.posted_amount)
    later = connection.execute(
        select(accounts.c.currency_code, func.sum(signed))
        .join(accounts, accounts.c.id == entries.c.account_id)
        .where(wallet, entries.c.committed_at_us > as_of_us, entries.c.transfer_sequence > after_sequence)
        .group_by(accounts.c.currency_code)
    )
    for code, moved in later:
        totals[code] = totals.get(code, 0) - int(moved or 0)
    return totals


# Expiry keys of a lot that does not expire in a month (a month's key is its index, >= 0).
EXPIRY_KEY_NEVER = -1
EXPIRY_KEY_EXEMPT = -2


def _open_lots_at(as_of_sequence: int, currency_code: str):
    """Each member-wallet lot credited by then with its open amount then and what decides its expiry."""
    later = (
        select(lot_draws.c.account_id, lot_draws.c.lot_id, func.sum(lot_draws.c.amount).label("drawn_later"))
        .join(transfers, transfers.c.id == lot_draws.c.transfer_id)
        .where(transfers.c.sequence > as_of_sequence)
        .group_by(lot_draws.c.account_id, lot_draws.c.lot_id)
        .subquery("drawn_later")
    )
    credit = transfers.alias("credit")
    open_amount = (lots.c.open_amount + func.coalesce(later.c.drawn_later, 0)).label("open_amount")
    query = (
        select(
            accounts.c.currency_code,
            credit.c.committed_at_us.label("credited_at_us"),
            open_amount,
            lots.c.policy_kind,
            lots.c.expires_at_us,
            lots.c.months,
            func.coalesce(wallet_activity.c.last_activity_us, lots.c.credited_at_us).label("quiet_since_us"),
            func.coalesce(expiry_exemptions.c.exempt, False).label("exempt"),
        )
        .select_from(
            lots.join(accounts, accounts.c.id == lots.c.account_id)
            .join(credit, credit.c.id == lots.c.lot_id)
            .outerjoin(later, and_(later.c.account_id == lots.c.account_id, later.c.lot_id == lots.c.lot_id))
            .outerjoin(wallet_activity, wallet_activity.c.account_id == lots.c.account_id)
            .outerjoin(expiry_exemptions, expiry_exemptions.c.owner_id == accounts.c.owner_id)
        )
        .where(credit.c.sequence <= as_of_sequence, lots.c.open_amount + func.coalesce(later.c.drawn_later, 0) > 0)
    )
    if currency_code:
        query = query.where(accounts.c.currency_code == currency_code)
    return query.subquery("open_lots")


def expiry_span(connection: Connection, as_of_sequence: int, currency_code: str) -> tuple[int, int] | None:
    """Earliest and latest instant whose month decides an open lot's expiry month (None: none)."""
    lot = _open_lots_at(as_of_sequence, currency_code)
    fixed = lot.c.policy_kind == int(PolicyKind.FIXED)
    inactivity = lot.c.policy_kind == int(PolicyKind.INACTIVITY)
    row = connection.execute(
        select(
            func.min(case((fixed, lot.c.expires_at_us - 1), (inactivity, lot.c.quiet_since_us))),
            func.max(case((fixed, lot.c.expires_at_us - 1), (inactivity, lot.c.quiet_since_us))),
        )
    ).one()
    return None if row[0] is None else (int(row[0]), int(row[1]))


def outstanding_groups(
    connection: Connection, as_of_sequence: int, currency_code: str, age_edges_us: list[int], month_starts: list[int]
) -> list[tuple[str, int, int, bool, int]]:
    """(currency, age bucket, expiry key, INACTIVITY?, open amount) summed by the database.

    Age bucket i: credited at or after age_edges_us[i] (the first edge the credit reaches), else
    the last. Expiry key: the month index in month_starts of a FIXED lot's last day (expiry - 1
    µs), or of an INACTIVITY lot's quiet start plus its months; EXPIRY_KEY_NEVER or _EXEMPT."""
    lot = _open_lots_at(as_of_sequence, currency_code)
    age = case(
        *((lot.c.credited_at_us >= literal(edge, BigInteger), index) for index, edge in enumerate(age_edges_us)),
        else_=len(age_edges_us),
    )
    if len(month_starts) > 1:
        fixed_month = index_expression(lot.c.expires_at_us - 1, month_starts)
        quiet_month = index_expression(lot.c.quiet_since_us, month_starts) + lot.c.months
    else:  # no FIXED or INACTIVITY lot is open: the keys below are never taken
        fixed_month = quiet_month = literal(0, BigInteger)
    expiry = case(
        (lot.c.exempt == true(), EXPIRY_KEY_EXEMPT),
        (lot.c.policy_kind == int(PolicyKind.FIXED), fixed_month),
        (lot.c.policy_kind == int(PolicyKind.INACTIVITY), quiet_month),
        else_=EXPIRY_KEY_NEVER,
    )
    keyed = select(
        lot.c.currency_code,
        age.label("age_bucket"),
        expiry.label("expiry_key"),
        (lot.c.policy_kind == int(PolicyKind.INACTIVITY)).label("inactivity"),
        lot.c.open_amount,
    ).subquery("keyed")
    keys = (keyed.c.currency_code, keyed.c.age_bucket, keyed.c.expiry_key, keyed.c.inactivity)
    rows = connection.execute(select(*keys, func.sum(keyed.c.open_amount)).group_by(*keys).order_by(*keys))
    return [(code, int(bucket), int(key), bool(inactive), int(amount)) for code, bucket, key, inactive, amount in rows]
