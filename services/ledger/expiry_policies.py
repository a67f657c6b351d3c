"""Use cases: record a currency's expiry policy version, list them, read a wallet's lots."""

from __future__ import annotations

from dataclasses import dataclass, replace
from zoneinfo import ZoneInfo

from services.common.db import Database
from services.common.errors import AlreadyExists, InvalidArgument, NotFound
from services.common.page_token import decode_page_token, encode_page_token
from services.ledger import lot_store, lots, store


def set_policy(database: Database, policy: lots.ExpiryPolicy, effective_given: bool) -> tuple[lots.ExpiryPolicy, bool]:
    """Record `policy` (effective now when not given); (the recorded version, created)."""

    def work(connection):
        if store.get_currency(connection, policy.currency_code) is None:
            raise NotFound(
                "CURRENCY_NOT_FOUND", f"currency {policy.currency_code} is not registered", code=policy.currency_code
            )
        # In commit order with the batches (store.lock_clock): every batch that credits after
        # `now` waits for this policy and then reads it, and none that read the policies before
        # it commits credits at or after its effective time.
        store.lock_clock(connection, shared=True)
        now_us = store.clock_after_last_commit_us(connection)
        version = policy if effective_given else replace(policy, effective_from_us=now_us)
        existing = lot_store.get_policy(connection, version.currency_code, version.effective_from_us)
        if existing is not None:
            if replace(existing, created_at_us=0) != replace(version, created_at_us=0):
                raise AlreadyExists(
                    "POLICY_EXISTS_WITH_DIFFERENT_CONTENT",
                    f"{version.currency_code} already has a different policy from this effective_time",
                    field="policy.effective_time",
                )
            return existing, False
        if version.effective_from_us < now_us:
            raise InvalidArgument(
                "EFFECTIVE_TIME_IN_PAST",
                "effective_time is in the past: a policy applies to points credited from its effective_time on; "
                "leave it unset for now",
                field="policy.effective_time",
            )
        recorded = replace(version, created_at_us=now_us)
        lot_store.insert_policy(connection, recorded)
        return recorded, True

    return database.write(work, retry_unique_violation=True)


def list_policies(database: Database, currency_code: str) -> list[lots.ExpiryPolicy]:
    return database.read(lambda connection: lot_store.policies_of(connection, [currency_code])).get(currency_code, [])


@dataclass(frozen=True, slots=True)
class WalletLots:
    lots: list[lots.Lot]
    expiring: list[tuple[str, int]]
    inactivity_expires_us: int | None
    now_us: int
    exempt: bool


def wallet_lots(database: Database, account_id: str, zone: ZoneInfo) -> WalletLots:
    def work(connection):
        account = store.get_accounts(connection, [account_id]).get(account_id)
        if account is None:
            raise NotFound("ACCOUNT_NOT_FOUND", f"account {account_id!r} does not exist", account_id=account_id)
        now_us = store.clock_now_us(connection)
        found = sorted(lot_store.open_lots(connection, [account_id]).values(), key=lots.Lot.order_key)
        last = lot_store.last_activity(connection, [account_id]).get(account_id)
        inactive = [lot for lot in found if lot.policy_kind is lots.PolicyKind.INACTIVITY]
        deadline = min(
            (lots.inactivity_expiry_us(lot, last or lot.credited_at_us, zone) for lot in inactive), default=None
        )
        exempt, ended = lot_store.exemptions(connection, [account.owner_id])
        if exempt:  # nothing of theirs expires
            return WalletLots(found, lots.expiring_by_month([], None, now_us, zone), None, now_us, True)
        by_month = lots.expiring_by_month(found, last, now_us, zone, ended.get(account.owner_id))
        return WalletLots(found, by_month, deadline, now_us, False)

    return database.read(work)


@dataclass(frozen=True, slots=True)
class ExpiringWallet:
    account_id: str
    owner_id: str
    amount: int
    first_expires_us: int


def expiring_soon(
    database: Database, currency_code: str, within_days: int, page_size: int, page_token: str, zone: ZoneInfo
) -> tuple[list[ExpiringWallet], str]:
    (after,) = decode_page_token(page_token, str) or ("",)

    def work(connection):
        horizon = store.clock_now_us(connection) + within_days * lots.US_PER_DAY
        candidates = lot_store.expiring_candidates(connection, currency_code, horizon, after, page_size + 1)
        more = len(candidates) > page_size
        candidates = candidates[:page_size]
        open_lots = lot_store.open_lots(connection, candidates)
        activity = lot_store.last_activity(connection, candidates)
        owners = store.get_accounts(connection, candidates)
        exempt, ended = lot_store.exemptions(connection, {a.owner_id for a in owners.values()})
        found = []
        for account_id in candidates:
            owner = owners[account_id].owner_id
            if owner in exempt:  # nothing of theirs expires: nobody to remind
                continue
            due = [
                (expires, lot.open_amount)
                for (owner, _), lot in open_lots.items()
                if owner == account_id
                and (expires := lots.lot_expiry_us(lot, activity.get(account_id), zone, ended.get(owner))) is not None
                and expires <= horizon
            ]
            if due:
                found.append(
                    ExpiringWallet(
                        account_id, owners[account_id].owner_id, sum(a for _, a in due), min(e for e, _ in due)
                    )
                )
        return found, encode_page_token(candidates[-1]) if more else ""

    return database.read(work)


def set_exemption(database: Database, owner_id: str, exempt: bool) -> bool:
    def work(connection):
        lot_store.set_exemption(connection, owner_id, exempt, store.clock_now_us(connection))
        return exempt

    return database.write(work, retry_unique_violation=True)
