"""Earn use cases: proforma pricing, earning at the till, and offline batches."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import Connection, Row
from sqlalchemy import exc as sa_exc

from services.common import logs
from services.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, ServiceError
from services.partners import earn_posting, earn_pricing, model, recording, tier_book
from services.partners.access import Caller, check_point_of_sale, require_active, require_partner
from services.partners.app import App
from services.partners.members import MemberRef, resolve_member
from services.partners.store import earns as earn_store
from services.partners.store import rules as rule_store


@dataclass(frozen=True, slots=True)
class EarnCommand:
    request_id: str
    store_id: str
    terminal_id: str
    receipt_id: str
    member: MemberRef
    lines: list[earn_pricing.BasketLine]
    occur_time_us: int | None = None  # offline earns only


@dataclass(frozen=True, slots=True)
class EarnRecord:
    earn: Row
    lines: list[Row] | None  # None: not read yet (a new earn, inside its batch)


def _rule_at(connection: Connection, app: App, partner_id: str, at_us: int) -> earn_pricing.EarnRule:
    rules = app.facts.earn_rules.get_or_load(partner_id, lambda: rule_store.earn_rules_of(connection, partner_id))
    rule = model.select_version(rules, at_us)
    if rule is None:
        raise FailedPrecondition(
            "NO_EARN_RULE", "the partner has no earn rule in effect at this time; ask the operator"
        )
    return rule


async def quote_earn(
    app: App,
    caller: Caller,
    store_id: str,
    terminal_id: str,
    member: MemberRef | None,
    lines: list[earn_pricing.BasketLine],
) -> earn_pricing.EarnPricing:
    require_partner(caller)
    earn_pricing.check_basket(lines)
    now = app.clock()

    def work(connection: Connection) -> earn_pricing.EarnPricing:
        check_point_of_sale(connection, app.facts, caller, store_id, terminal_id)
        member_id = None if member is None else resolve_member(connection, app, member).member_id
        rule = _rule_at(connection, app, caller.partner_id, now)
        # Priced as an earn now would be: at the member's tier now (without a member: none).
        tier = earn_pricing.NO_TIER
        if member_id is not None:
            tier = tier_book.tier_for_quote(connection, app, member_id, rule.currency_code, now)
        return earn_pricing.price_basket(rule, lines, now, tier)

    return await app.read(work)


def _check_occur_time(occur_us: int, now: int) -> None:
    if occur_us > now + model.OFFLINE_FUTURE_SKEW_SECONDS_MAX * model.MICROS_PER_SECOND:
        raise InvalidArgument("OCCUR_TIME_IN_FUTURE", "occur_time is in the future; check the till's clock")
    if occur_us < now - model.OFFLINE_AGE_SECONDS_MAX * model.MICROS_PER_SECOND:
        raise InvalidArgument("OCCUR_TIME_TOO_OLD", "offline earns must be uploaded within 30 days")


@dataclass(frozen=True, slots=True)
class _Earning:
    """One earn call, checked and dated, waiting to be merged with its neighbours."""

    caller: Caller
    command: EarnCommand
    now: int
    at: int


async def earn(app: App, caller: Caller, command: EarnCommand) -> EarnRecord:
    """Record the priced earn first, then post it: a retry (even after a crash or a client
    timeout) re-sends the same ledger transfer, which the ledger applies at most once.

    Concurrent earns are merged (`_earn_batch`): one partners transaction records them all, one
    ledger call posts them, one transaction marks the outcome. Each keeps its own answer."""
    require_partner(caller)
    require_active(caller)
    model.check_request_id(command.request_id)
    model.check_local_id(command.receipt_id, "receipt_id")
    earn_pricing.check_basket(command.lines)
    now = app.clock()
    at = now if command.occur_time_us is None else command.occur_time_us
    if command.occur_time_us is not None:
        _check_occur_time(at, now)
    merger = app.merger("earn", lambda items: _earn_batch(app, items), EARN_BATCH_MAX, EARNS_QUEUED_MAX)
    record = await merger.submit(_Earning(caller, command, now, at))
    # On the request's own log line (the batch runs in another task, under another request's context).
    earned = record.earn
    logs.bind(earn_id=earned.earn_id, points=earned.points, currency=earned.currency_code)
    return record


# Earns merged into one transaction and one ledger call at most, and waiting at most.
EARN_BATCH_MAX = 256
EARNS_QUEUED_MAX = 10_000


async def _earn_batch(app: App, items: list[_Earning]) -> list[EarnRecord | BaseException]:
    # Earns an earlier batch posted are marked posted by this batch's transaction (deferred_marks.py).
    marks = app.posted_earns.take()
    try:
        recorded = await _record_batch(app, items, marks)
    except BaseException:
        app.posted_earns.give_back(marks)
        raise
    for index, outcome in enumerate(recorded):
        if isinstance(outcome, _Conflict):  # e.g. the same request_id committed meanwhile by another process
            recorded[index] = await _record_alone(app, items[index])
    earns = [outcome for outcome in recorded if isinstance(outcome, EarnRecord)]
    pending = {record.earn.earn_id: record.earn for record in earns if record.earn.state == "pending"}
    try:
        failures = await earn_posting.post_earns(app, list(pending.values()))
        unposted: BaseException | None = None
    except Exception as error:  # the ledger unreachable: these earns stay pending for a retry
        failures, unposted = {}, error
    posted = [] if unposted else [earn_id for earn_id in pending if earn_id not in failures]
    app.posted_earns.add(posted)
    if failures:  # rare, and written at once: a refused earn frees its receipt for a new request id
        await app.write(lambda connection: earn_posting.record_failures(connection, failures))
    # Only retries of earns recorded before are read back (for their lines' returned marks).
    to_read = {record.earn.earn_id for record in earns if record.lines is None}
    to_read -= set(failures) | (set() if unposted is None else set(pending))
    rows: dict[str, Row] = {}
    lines: dict[str, list[Row]] = {}
    if to_read:
        rows, lines = await app.read(lambda connection: earn_posting.read_back(connection, to_read))
    return [_answer(outcome, failures, unposted, pending, rows, lines) for outcome in recorded]


# After a batch whose optimistic insert met an earn recorded before (a retry), this many batches
# read first: retries come in bursts (a till's timeout, a network blip), and each optimistic
# attempt that meets one costs its batch a rolled-back transaction.
READ_FIRST_BATCHES_AFTER_CONFLICT = 16


async def _record_batch(app: App, items: list[_Earning], marks: list[str]) -> list[EarnRecord | BaseException]:
    """One transaction records the batch and carries the marks; each earn in its own savepoint
    only when another process recorded one of them meanwhile.

    Most batches are new requests only, so the first attempt does not read for earns recorded
    before: it inserts, and the unique keys on request id and receipt (which the read would
    have consulted) refuse the batch if one was. Then it runs again with the read. That saves
    every batch a round trip; Earn throughput moved within run-to-run noise (interleaved
    bench/profile_pos.py runs, 1 partners + 1 ledger: 1,264-1,313 against 1,157-1,277 calls/s)."""

    def optimistic(connection: Connection) -> list[EarnRecord | BaseException]:
        return _record_all(connection, app, items, posted_marks=marks, read_first=False)

    def merged(connection: Connection) -> list[EarnRecord | BaseException]:
        return _record_all(connection, app, items, posted_marks=marks)

    def each(connection: Connection) -> list[EarnRecord | BaseException]:
        earn_store.mark_earns_posted(connection, marks)
        return [_record_merged(connection, app, item) for item in items]

    if app.earn_batches_reading_first > 0:
        app.earn_batches_reading_first -= 1
    else:
        try:
            return await app.write(optimistic)
        except (sa_exc.IntegrityError, _ReadFirst):
            app.earn_batches_reading_first = READ_FIRST_BATCHES_AFTER_CONFLICT
    try:
        return await app.write(merged)
    except sa_exc.IntegrityError:
        return await app.write(each)


def _answer(
    outcome: EarnRecord | BaseException,
    failures: dict[str, FailedPrecondition],
    unposted: BaseException | None,
    pending: dict[str, Row],
    rows: dict[str, Row],
    lines: dict[str, list[Row]],
) -> EarnRecord | BaseException:
    if not isinstance(outcome, EarnRecord):
        return outcome
    earn_id = outcome.earn.earn_id
    if outcome.earn.state == "failed":
        return earn_posting.refused(earn_id, outcome.earn.failure_reason)
    if earn_id in failures:
        return failures[earn_id]
    if unposted is not None and earn_id in pending:
        return unposted
    if earn_id in rows:
        return EarnRecord(rows[earn_id], lines[earn_id])
    return outcome


class _ReadFirst(Exception):
    """An earn of a batch recorded without the read was refused: it may be a retry of an earn
    recorded before (whose answer is that earn, whatever a new one would meet now: a rule
    ended since, a receipt the batch itself used), so the batch runs again, reading."""


class _Conflict(Exception):
    """An item met a unique-key conflict inside the merged transaction; it is recorded on its own."""


def _record_merged(connection: Connection, app: App, item: _Earning) -> EarnRecord | BaseException:
    """One item of the merged transaction, in its own savepoint: its refusal leaves no trace."""
    try:
        with connection.begin_nested():
            return _record(connection, app, item)
    except ServiceError as error:
        return error
    except model.DomainError as error:
        return recording.as_service_error(error)
    except sa_exc.IntegrityError:
        return _Conflict()


async def _record_alone(app: App, item: _Earning) -> EarnRecord | BaseException:
    try:
        return await app.write(lambda connection: _record(connection, app, item), retry_unique_violation=True)
    except ServiceError as error:
        return error
    except model.DomainError as error:
        return recording.as_service_error(error)


@dataclass(slots=True)
class _NewEarn:
    """An earn decided in this batch, inserted with the batch."""

    values: dict
    lines: list[dict]

    @property
    def fingerprint(self) -> str:
        return self.values["fingerprint"]

    @property
    def request_id(self) -> str:
        return self.values["request_id"]


@dataclass(slots=True)
class _Known:
    """Earns already recorded under the batch's request ids and receipts, and the batch's own."""

    by_request: dict[tuple[str, str], Row | _NewEarn]
    by_receipt: dict[tuple[str, str], Row | _NewEarn]
    tiers: tier_book.TierBook  # the batch's members' tiers, read once when the first earn needs one

    @classmethod
    def load(
        cls, connection: Connection, app: App, items: list[_Earning], posted: Collection[str] = (), read: bool = True
    ) -> _Known:
        """With `read` off, no earn is taken as recorded before: only the batch's own are known."""
        calls = [(item.caller.partner_id, item.command.member, item.at) for item in items]
        tiers = tier_book.TierBook(connection, app, lambda: tier_book.batch_hint(app, calls))
        if not read:
            return cls({}, {}, tiers)
        requests = {(item.caller.partner_id, item.command.request_id) for item in items}
        receipts = {(item.caller.partner_id, item.command.receipt_id) for item in items}
        # A refused earn uses up nothing: its receipt may be earned again under a new request id.
        by_request, by_receipt = earn_store.earns_by_requests_or_receipts(connection, requests, receipts, posted)
        return cls(by_request, by_receipt, tiers)


def _record(connection: Connection, app: App, item: _Earning) -> EarnRecord:
    """One earn recorded on its own (a retry after a unique-key conflict in its batch)."""
    return _record_all(connection, app, [item], raise_refusals=True)[0]


def _record_all(
    connection: Connection,
    app: App,
    items: list[_Earning],
    raise_refusals: bool = False,
    posted_marks: list[str] | None = None,
    read_first: bool = True,
) -> list[EarnRecord | BaseException]:
    """Record a batch of earns with one read and one write, whatever its size; the write also
    carries `posted_marks`. Each earn is the one recorded before under its request id (a
    retry), which comes back with `lines=None` (read once the batch is posted), or a new one,
    priced, with its lines. An earn's refusal is its answer and writes nothing; earns later in
    the batch see the ones before them. Without `read_first`, every earn is taken as new: an
    earn recorded before makes the insert fail (IntegrityError), and any refusal raises
    _ReadFirst before the insert; either way the caller runs the batch again, reading."""
    marks = list(posted_marks or ())
    # The marks are written after this read (with the new earns, one round trip): an earn
    # among them reads as posted, as it is once they are.
    known = _Known.load(connection, app, items, set(marks), read=read_first)

    new_lines: dict[str, list[Row]] = {}

    def insert(new: list[_NewEarn]) -> list[Row]:
        known.tiers.flush(max(item.now for item in items))
        rows, lines = earn_store.insert_earns(
            connection, [earn.values for earn in new], [line for earn in new for line in earn.lines], marks
        )
        marks.clear()
        # The lines come back from the insert, so answering a new earn needs no read afterwards.
        for line in lines:
            new_lines.setdefault(line.earn_id, []).append(line)
        return rows

    def decide(item: _Earning) -> Row | _NewEarn:
        try:
            return _decide(connection, app, item, known)
        except (ServiceError, model.DomainError) as error:
            if read_first:
                raise
            raise _ReadFirst() from error

    decided = recording.record_batch(items, decide, _is_new, insert, raise_refusals)
    earn_store.mark_earns_posted(connection, marks)  # no new earn to carry them
    return [
        decision if isinstance(decision, BaseException) else EarnRecord(decision, new_lines.get(decision.earn_id))
        for decision in decided
    ]


def _is_new(decision: object) -> bool:
    return isinstance(decision, _NewEarn)


def _decide(connection: Connection, app: App, item: _Earning, known: _Known) -> Row | _NewEarn:
    caller, command = item.caller, item.command
    partner_id = caller.partner_id
    member = recording.till_member(connection, app, caller, command.store_id, command.terminal_id, command.member)
    digest = model.fingerprint(
        store=command.store_id,
        terminal=command.terminal_id,
        receipt=command.receipt_id,
        member=member.member_id,
        lines=[(line.line_number, line.sku, line.category, line.quantity, line.amount) for line in command.lines],
        occur=command.occur_time_us,
    )
    existing = known.by_request.get((partner_id, command.request_id))
    if existing is None:
        same_receipt = known.by_receipt.get((partner_id, command.receipt_id))
        if same_receipt is not None and same_receipt.request_id != command.request_id:
            raise AlreadyExists(
                "RECEIPT_ALREADY_EARNED",
                "this receipt already earned points under another request_id",
                receipt_id=command.receipt_id,
            )
        existing = same_receipt  # this very request, committed meanwhile (a retry racing its first send)
    if existing is not None:
        recording.same_request(existing.fingerprint, digest, command.request_id, "earn")
        return existing
    rule = _rule_at(connection, app, partner_id, item.at)
    # The tier is the member's now (server time, offline earns too), before this earn counts.
    tier = known.tiers.tier_for(member.member_id, rule.currency_code, item.now)
    pricing = earn_pricing.price_basket(rule, command.lines, item.at, tier)
    tier_month = known.tiers.add_earn(member.member_id, rule.currency_code, item.now, pricing.base_points)
    earn_id = model.earn_transfer_id(partner_id, command.request_id)
    decided = _NewEarn(
        dict(
            earn_id=earn_id,
            partner_id=partner_id,
            request_id=command.request_id,
            fingerprint=digest,
            receipt_id=command.receipt_id,
            store_id=command.store_id,
            terminal_id=command.terminal_id,
            member_id=member.member_id,
            currency_code=pricing.currency_code,
            points=pricing.points,
            exact_points=str(pricing.exact_points),
            bonus_points=pricing.bonus_points,
            promotion_applied=pricing.promotion_applied,
            capped=pricing.capped,
            rule_version=pricing.rule_version,
            tier_name=pricing.tier.name,
            tier_multiplier=str(pricing.tier.multiplier),
            tier_bonus_points=pricing.tier_bonus_points,
            tier_month=tier_month,
            state="pending" if pricing.points > 0 else "posted",
            failure_reason=None,
            recovery_attempts=0,
            next_recovery_us=0,
            occur_time_us=item.at,
            create_time_us=item.now,
        ),
        [
            dict(
                earn_id=earn_id,
                line_number=line.line_number,
                sku=line.sku,
                category=line.category,
                quantity=line.quantity,
                amount=line.amount,
                points=priced.points,
                exact_points=str(priced.exact_points),
                excluded=priced.excluded,
                tier_bonus_points=priced.tier_bonus_points,
                return_id=None,
            )
            for line, priced in zip(command.lines, pricing.lines, strict=True)
        ],
    )
    known.by_request[(partner_id, command.request_id)] = decided
    known.by_receipt[(partner_id, command.receipt_id)] = decided
    return decided


@dataclass(frozen=True, slots=True)
class OfflineResult:
    request_id: str
    record: EarnRecord | None
    error: ServiceError | None


async def upload_offline_batch(app: App, caller: Caller, commands: list[EarnCommand]) -> list[OfflineResult]:
    """Each earn is idempotent on its own request_id, so replaying a batch changes nothing."""
    require_partner(caller)
    if not 1 <= len(commands) <= model.OFFLINE_BATCH_MAX:
        raise InvalidArgument("INVALID_BATCH_SIZE", f"a batch has 1..{model.OFFLINE_BATCH_MAX} earns")
    # Submitted together, the earns merge into as few transactions and ledger calls as they fit.
    outcomes = await asyncio.gather(*(earn(app, caller, command) for command in commands), return_exceptions=True)
    results = []
    for command, outcome in zip(commands, outcomes, strict=True):
        if isinstance(outcome, model.DomainError):
            outcome = recording.as_service_error(outcome)
        if isinstance(outcome, ServiceError):
            if outcome.code.name in ("UNAVAILABLE", "ABORTED"):
                raise outcome  # the whole upload is retryable; items already done are idempotent
            results.append(OfflineResult(command.request_id, None, outcome))
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            results.append(OfflineResult(command.request_id, outcome, None))
    return results
