"""Member use cases: enrolment, cards and aliases, look-up, wallets, balances and activity."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import structlog
from sqlalchemy import Connection, Row

from coalition.ledger.v1 import ledger_pb2
from services.common.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied
from services.common.ledger_client import CREDIT, AccountSpec, LedgerRefused
from services.partners import model
from services.partners.access import Caller
from services.partners.app import App
from services.partners.facts import Facts
from services.partners.store import members as member_store

_log = structlog.get_logger("partners")


@dataclass(frozen=True, slots=True)
class AliasInput:
    kind: str  # "card", "phone" or "email"
    value: str


@dataclass(frozen=True, slots=True)
class MemberRef:
    """How a request names a member: the id, or one of their aliases."""

    member_id: str = ""
    alias: AliasInput | None = None


def _alias_row_values(app: App, alias: AliasInput, member_id: str, now: int) -> dict:
    return dict(
        alias_hash=model.alias_hash(app.alias_secret, alias.kind, alias.value),
        kind=alias.kind,
        member_id=member_id,
        create_time_us=now,
    )


def _attach(connection: Connection, values: dict) -> None:
    existing = member_store.member_by_alias(connection, values["alias_hash"])
    if existing is None:
        member_store.insert_alias(connection, **values)
    elif existing.member_id != values["member_id"]:
        raise AlreadyExists("ALIAS_IN_USE", "this card or alias belongs to another member", kind=values["kind"])


async def enroll(app: App, caller: Caller, request_id: str, aliases: list[AliasInput]) -> tuple[Row, int]:
    model.check_request_id(request_id)
    if len(aliases) > model.ALIASES_PER_ENROLMENT_MAX:
        raise InvalidArgument("TOO_MANY_ALIASES", f"at most {model.ALIASES_PER_ENROLMENT_MAX} aliases")
    now = app.clock()
    member_id = f"m-{secrets.token_hex(10)}"
    alias_values = [_alias_row_values(app, alias, member_id, now) for alias in aliases]  # validates first
    # Keyed hashes only: the digest reveals no phone number or e-mail either.
    digest = model.fingerprint(aliases=sorted(values["alias_hash"] for values in alias_values))

    def work(connection: Connection) -> tuple[Row, int]:
        existing = member_store.member_by_enrolment(connection, caller.partner_id, request_id)
        if existing is not None:
            if existing.enroll_fingerprint is not None and existing.enroll_fingerprint != digest:
                raise AlreadyExists(
                    "ID_REUSED_WITH_DIFFERENT_CONTENT",
                    "this request_id enrolled a member with other cards or aliases; use a new request_id",
                    request_id=request_id,
                )
            return existing, member_store.alias_count(connection, existing.member_id)
        member_store.insert_member(
            connection,
            member_id=member_id,
            enroll_caller_id=caller.partner_id,
            enroll_request_id=request_id,
            enroll_fingerprint=digest,
            create_time_us=now,
        )
        for values in alias_values:
            _attach(connection, values)
        return member_store.get_member(connection, member_id), member_store.alias_count(connection, member_id)

    row, count = await app.write(work, retry_unique_violation=True)
    if row.member_id == member_id:
        _log.info("member_enrolled", member_id=member_id, alias_count=count)
    return row, count


async def attach_alias(app: App, member_id: str, alias: AliasInput) -> tuple[Row, int]:
    now = app.clock()
    values = _alias_row_values(app, alias, member_id, now)

    def work(connection: Connection) -> tuple[Row, int]:
        member = member_store.get_member(connection, member_id)
        if member is None:
            raise NotFound("MEMBER_NOT_FOUND", "no member with this id", member_id=member_id)
        _attach(connection, values)
        return member, member_store.alias_count(connection, member_id)

    return await app.write(work, retry_unique_violation=True)


def resolve_member(connection: Connection, app: App, ref: MemberRef) -> Row:
    """The member a request names. NOT_FOUND (MEMBER_NOT_FOUND) for an unknown id or alias."""
    # Members and aliases are only ever inserted, so what was found once stays true (app.facts).
    facts = app.facts
    if ref.alias is not None:
        alias_hash = model.alias_hash(app.alias_secret, ref.alias.kind, ref.alias.value)
        member_id = facts.members_by_alias.get_or_load(alias_hash, lambda: _member_of_alias(connection, alias_hash))
        member = None if member_id is None else _member(connection, facts, member_id)
    elif ref.member_id:
        model.check_local_id(ref.member_id, "member.member_id")
        member = _member(connection, facts, ref.member_id)
    else:
        raise InvalidArgument("MEMBER_REQUIRED", "name the member by member_id or alias", field="member")
    if member is None:
        raise NotFound("MEMBER_NOT_FOUND", "no member with this id or alias")
    return member


def known_member_id(app: App, ref: MemberRef) -> str | None:
    """The member a request names, if this process has already found it; None otherwise."""
    if ref.alias is not None:
        return app.facts.members_by_alias.get(model.alias_hash(app.alias_secret, ref.alias.kind, ref.alias.value))
    member = app.facts.members_by_id.get(ref.member_id) if ref.member_id else None
    return None if member is None else member.member_id


def _member_of_alias(connection: Connection, alias_hash: str) -> str | None:
    found = member_store.member_by_alias(connection, alias_hash)
    return None if found is None else found.member_id


def _member(connection: Connection, facts: Facts, member_id: str) -> Row | None:
    return facts.members_by_id.get_or_load(member_id, lambda: member_store.get_member(connection, member_id))


async def lookup(app: App, ref: MemberRef) -> tuple[Row, int]:
    def work(connection: Connection) -> tuple[Row, int]:
        member = resolve_member(connection, app, ref)
        return member, member_store.alias_count(connection, member.member_id)

    return await app.read(work)


async def ensure_wallet(app: App, member_id: str, currency: str) -> str:
    """The member's wallet in the currency, created on first use (ledger first, then our note of it).

    Must run before any transfer that names the wallet: the ledger remembers a failed
    transfer id forever, so a transfer tried before its wallet existed could never succeed.
    """
    account_id = model.wallet_account_id(currency, member_id)
    if account_id in app.known_wallets:
        return account_id
    known = await app.read(lambda connection: member_store.has_wallet(connection, member_id, currency))
    if known:
        _remember(app, account_id)
        return account_id
    await app.ledger.ensure_accounts(
        [AccountSpec(account_id, currency, CREDIT, member_id, "member_wallet", no_overdraft=True)]
    )
    now = app.clock()

    def note(connection: Connection) -> None:
        if not member_store.has_wallet(connection, member_id, currency):
            member_store.insert_wallet(connection, member_id=member_id, currency_code=currency, create_time_us=now)

    await app.write(note, retry_unique_violation=True)
    _remember(app, account_id)
    return account_id


KNOWN_WALLETS_MAX = 200_000


def _remember(app: App, account_id: str) -> None:
    if len(app.known_wallets) >= KNOWN_WALLETS_MAX:
        app.known_wallets.clear()  # a bounded cache; forgetting only costs one read
    app.known_wallets.add(account_id)


@dataclass(frozen=True, slots=True)
class WalletBalance:
    currency_code: str
    posted: int
    pending: int
    available: int


async def balances(app: App, caller: Caller, ref: MemberRef) -> tuple[str, list[WalletBalance]]:
    """The operator sees every wallet; a partner sees PTS and its own programme currency only
    (a balance in another partner's programme currency is that partner's data)."""

    def work(connection: Connection) -> tuple[str, list[str]]:
        member = resolve_member(connection, app, ref)
        return member.member_id, member_store.wallet_currencies(connection, member.member_id)

    visible = None if caller.is_admin else sorted({model.COMMON_CURRENCY, caller.programme_currency} - {""})
    member_id = known_member_id(app, ref)
    if (
        visible is not None
        and member_id
        and all(model.wallet_account_id(c, member_id) in app.known_wallets for c in visible)
    ):
        currencies = visible  # wallets are never deleted: known to exist, no read needed
    else:
        member_id, currencies = await app.read(work)
        if visible is not None:
            currencies = [code for code in currencies if code in visible]
    if not currencies:
        return member_id, []
    ledger_balances = await app.ledger.get_balances([model.wallet_account_id(code, member_id) for code in currencies])
    return member_id, [
        WalletBalance(code, balance.posted, balance.pending, balance.available)
        for code, balance in zip(currencies, ledger_balances, strict=True)
    ]


async def expiring(
    app: App, caller: Caller, ref: MemberRef, currency_code: str
) -> tuple[str, ledger_pb2.ListLotsResponse | None]:
    """What of the member's points in `currency_code` expires per month (None: no wallet in it)."""
    model.check_currency_code(currency_code, "currency_code")
    if not caller.is_admin and currency_code not in (model.COMMON_CURRENCY, caller.programme_currency):
        raise PermissionDenied(
            "OTHER_PARTNER_CURRENCY",
            f"a partner may read {model.COMMON_CURRENCY} and its own programme currency only",
            currency_code=currency_code,
        )
    member_id = known_member_id(app, ref) or (await app.read(lambda c: resolve_member(c, app, ref))).member_id
    try:
        return member_id, await app.ledger.list_lots(model.wallet_account_id(currency_code, member_id))
    except LedgerRefused as error:
        if error.ledger_code == "NOT_FOUND":
            return member_id, None
        raise


_ACTIVITY_KINDS = {
    ledger_pb2.TRANSFER_CODE_EARN: "earn",
    ledger_pb2.TRANSFER_CODE_REDEEM: "redeem",
    ledger_pb2.TRANSFER_CODE_REVERSAL: "reversal",
    ledger_pb2.TRANSFER_CODE_CONVERSION: "conversion",
    ledger_pb2.TRANSFER_CODE_EXPIRY: "expiry",
    ledger_pb2.TRANSFER_CODE_ADJUSTMENT: "adjustment",
}


@dataclass(frozen=True, slots=True)
class ActivityItem:
    commit_time_us: int
    kind: str
    currency_code: str
    posted_change: int
    pending_change: int
    partner_id: str
    store_id: str
    receipt_id: str


async def activity(
    app: App, caller: Caller, ref: MemberRef, currency: str, page_size: int
) -> tuple[str, list[ActivityItem]]:
    """Newest first. A partner sees only movements it caused (another partner's are its data)."""
    if not 0 <= page_size <= model.ACTIVITY_PAGE_SIZE_MAX:
        raise InvalidArgument("INVALID_PAGE_SIZE", f"page_size must be 0..{model.ACTIVITY_PAGE_SIZE_MAX}")
    limit = page_size or model.ACTIVITY_PAGE_SIZE_DEFAULT

    def work(connection: Connection) -> tuple[str, list[str]]:
        member = resolve_member(connection, app, ref)
        return member.member_id, member_store.wallet_currencies(connection, member.member_id)

    member_id, currencies = await app.read(work)
    if currency:
        currencies = [code for code in currencies if code == currency]
    items: list[ActivityItem] = []
    for code in currencies:
        # Fetch more than needed so filtering by partner still fills a page.
        entries = await app.ledger.list_entries(model.wallet_account_id(code, member_id), min(1000, limit * 4))
        for entry in entries:
            transfer = entry.transfer
            if not caller.is_admin and transfer.metadata.partner_id != caller.partner_id:
                continue
            sign = 1 if entry.side == ledger_pb2.ACCOUNT_SIDE_CREDIT else -1
            items.append(
                ActivityItem(
                    commit_time_us=transfer.commit_time.seconds * model.MICROS_PER_SECOND
                    + transfer.commit_time.nanos // 1000,
                    kind=_ACTIVITY_KINDS.get(transfer.code, ""),
                    currency_code=code,
                    posted_change=sign * entry.posted_amount,
                    pending_change=entry.pending_change,
                    partner_id=transfer.metadata.partner_id,
                    store_id=transfer.metadata.store_id,
                    receipt_id=transfer.metadata.receipt_id,
                )
            )
    items.sort(key=lambda item: item.commit_time_us, reverse=True)
    return member_id, items[:limit]
