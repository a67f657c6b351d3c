"""Use cases on periods: preview a statement, close a period, read closed periods.

The rule for which period a transfer belongs to (documented in settlement.proto):
- A transfer belongs to the period containing its ledger commit time, [start, end).
- A period can be closed only when the ledger's clock is `close_delay_seconds` past its end,
  and only right after the previous closed period (no gaps, no overlaps, closed in order).
- The close records the highest commit_sequence it covered: at least the ledger's commit_sequence
  read (with its trial balance, one snapshot) before any of its activity reads. Should a transfer still commit
  with a time inside an already closed window (a ledger transaction in flight across the
  close), it has a higher sequence: the next close finds it by streaming the ledger from the
  previous close's sequence and prices it as a prior-period adjustment (at the agreement
  valid at its commit time); its points move this period's liability roll-forward, which opens
  where the previous closed period closed. The ledger's commit times are non-decreasing in sequence, so the
  stream stops at the first transfer committed at or after the new period's start.
- Closed statements are never recomputed: closing again returns the stored figures, and the
  EUR transfers carry deterministic ids, so a retried close posts nothing twice.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import structlog
from sqlalchemy import exc as sa_exc

from coalition.ledger.v1 import ledger_pb2
from services.common.errors import Aborted, AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from services.common.ledger_client import LedgerRefused
from services.common.metrics import timed_use_case
from services.common.timeconv import micros_from_timestamp
from services.settlement import (
    correction_store,
    corrections,
    model,
    reversal_pricing,
    scheme,
    statement_documents,
    store,
)
from services.settlement.context import SettlementContext
from services.settlement.model import (
    Activity,
    AgreementBook,
    PeriodSettlement,
    SettlementRuleError,
    Statement,
)
from services.settlement.scheme import ClosedSpan, PeriodWarning

_log = structlog.get_logger("settlement")

PERIOD_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
MONTH_PATTERN = re.compile(r"^(\d{4})-(\d{2})$")
TRANSFER_BATCH_MAX = 8_189
TRANSFER_ID_LENGTH_MAX = 128
OPERATOR_SETTLEMENT_ACCOUNT_ID = "operator_settlement:EUR"
LATE_TRANSFERS_MAX = 100_000
POSTED_KINDS = ("POSTED", "POST_PENDING")
FREEZE_ATTEMPTS_MAX = 3
LOOKUP_IDS_MAX = 1_000  # transfer ids per ledger GetTransfers call


def rule_error(error: SettlementRuleError) -> FailedPrecondition:
    return FailedPrecondition(error.reason, error.message, **error.metadata)


def resolve_period(
    context: SettlementContext, period_id: str, start_us: int | None, end_us: int | None
) -> tuple[str, int, int]:
    """A period id alone that reads YYYY-MM is that calendar month in the coalition's time zone."""
    if not PERIOD_ID_PATTERN.fullmatch(period_id or ""):
        raise InvalidArgument(
            "INVALID_PERIOD_ID",
            "period_id must be 1..64 characters of A-Z a-z 0-9 and ._:-",
            period_id=period_id,
        )
    if start_us is None and end_us is None:
        month = MONTH_PATTERN.fullmatch(period_id)
        if month is None:
            raise InvalidArgument(
                "INVALID_PERIOD",
                f"period {period_id} is not YYYY-MM; give start_time and end_time for a custom period",
                period_id=period_id,
            )
        year, number = int(month.group(1)), int(month.group(2))
        if not 1 <= number <= 12 or not 1970 <= year <= 9998:
            raise InvalidArgument("INVALID_PERIOD", f"{period_id} is not a valid month", period_id=period_id)
        start = datetime(year, number, 1, tzinfo=context.time_zone)
        end = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=context.time_zone)
        return period_id, int(start.timestamp()) * 1_000_000, int(end.timestamp()) * 1_000_000
    if start_us is None or end_us is None or end_us <= start_us:
        raise InvalidArgument(
            "INVALID_PERIOD",
            "give both start_time and end_time, with end_time after start_time",
            period_id=period_id,
        )
    return period_id, start_us, end_us


# ---------------------------------------------------------------- computing


async def _settlement_accounts(context: SettlementContext) -> dict[str, ledger_pb2.Account]:
    """Every non-wallet points account: partner issuance and redemption, and all the operator's."""
    accounts: dict[str, ledger_pb2.Account] = {}
    for kind in (model.KIND_PARTNER_ISSUANCE, model.KIND_PARTNER_REDEMPTION):
        for account in await context.ledger.list_accounts(kind=kind):
            accounts[account.id] = account
    for account in await context.ledger.list_accounts(owner_id=model.OPERATOR_ID):
        accounts[account.id] = account
    return {
        account_id: account
        for account_id, account in accounts.items()
        if account.currency_code != model.MONEY_CURRENCY_CODE and account.kind != model.KIND_MEMBER_WALLET
    }


def _activity_of_transfer(transfer, accounts: dict[str, ledger_pb2.Account]) -> list[Activity]:
    lines = []
    for account_id, debits, credits in (
        (transfer.debit_account_id, transfer.amount, 0),
        (transfer.credit_account_id, 0, transfer.amount),
    ):
        account = accounts.get(account_id)
        if account is not None:
            lines.append(
                Activity(
                    account_id,
                    transfer.code,
                    transfer.currency_code,
                    debits,
                    credits,
                    account.owner_id,
                    account.kind,
                    transfer.tier_bonus_points,
                )
            )
    return lines


async def compute_settlement(
    context: SettlementContext,
    period_id: str,
    start_us: int,
    end_us: int,
    after_sequence: int | None,
    missing_prices: list[tuple[str, str]] | None = None,
) -> PeriodSettlement:
    """Statements, netting and roll-forward for [start, end) as the ledger stands now. Writes nothing.

    `after_sequence` is the previous closed period's last covered sequence: transfers after it
    committed before `start_us` are prior-period adjustments. None when there is no such period.
    `missing_prices` (a preview): activity without a price is left out and its (partner, currency)
    noted there; None (a close): a missing price refuses the period (PRICE_MISSING).
    """
    owners = await context.ledger.currency_owners()
    accounts = await _settlement_accounts(context)
    book = AgreementBook(await context.read(store.all_agreements))
    closed = [
        reversal_pricing.ClosedWindow(row.period_id, row.start_us, row.end_us)
        for row in await context.read(correction_store.period_windows)
        if row.end_us <= start_us
    ]
    original_bounds = reversal_pricing.original_time_bounds(book, closed, end_us)
    account_ids = sorted(accounts)
    priced: list[model.PricedMovement] = []
    window_lines: list[Activity] = []
    late_lines: list[Activity] = []
    # Everything committed up to this sequence is visible to the reads below, so the close covers
    # it even when none of it is settlement activity (a quiet first period must not store 0 and
    # make the next close re-stream all history as prior-period adjustments).
    covered_sequence = (await context.ledger.trial_balance()).commit_sequence
    last_sequence = max(after_sequence or 0, covered_sequence)
    try:
        for window_start, window_end in model.sub_windows(start_us, end_us, book):
            lines, sequence = await context.ledger.activity(window_start, window_end, account_ids, original_bounds)
            lines = reversal_pricing.with_original_periods(lines, closed)
            breakage, breakage_sequence = await context.ledger.breakage(window_start, window_end)
            last_sequence = max(last_sequence, sequence, breakage_sequence)
            window_lines.extend(lines)
            movements = model.movements_from_activity(lines, owners) + model.breakage_movements(breakage)
            priced.extend(scheme.price_or_leave_out(movements, book, window_start, owners, False, missing_prices))
        if after_sequence is not None:
            late_sequence, late_priced, late_lines = await _late_arrivals(
                context, after_sequence, start_us, accounts, book, owners, closed, missing_prices
            )
            last_sequence = max(last_sequence, late_sequence)
            priced.extend(late_priced)
        # Adjustments posted since the last close appear on this period's statements (its own lines).
        pending = await context.read(correction_store.pending_adjustments)
        statements = tuple(corrections.with_adjustments(model.build_statements(priced), pending))
    except SettlementRuleError as error:
        raise rule_error(error) from error
    opening_lines = (
        (await context.ledger.activity_without_tier_bonus(0, start_us, account_ids))[0] if start_us > 0 else []
    )
    # The previous close did not see the late transfers: the liability it closed with is today's
    # opening without them, and they move the liability in this period (as they are billed in it),
    # so this period opens where the previous one closed and still closes at the wallets' sum.
    opening = model.wallet_net_change(opening_lines)
    for code, change in model.wallet_net_change(late_lines).items():
        opening[code] = opening.get(code, 0) - change
    flow_lines = window_lines + late_lines
    points_currencies = sorted(code for code in owners if code != model.MONEY_CURRENCY_CODE)
    roll_forwards = tuple(model.roll_forward(code, opening.get(code, 0), flow_lines) for code in points_currencies)
    return PeriodSettlement(
        period_id=period_id,
        start_us=start_us,
        end_us=end_us,
        closed=False,
        statements=statements,
        roll_forwards=roll_forwards,
        last_commit_sequence=last_sequence,
    )


async def _late_arrivals(context, after_sequence, start_us, accounts, book, owners, closed, missing_prices):
    trial = await context.ledger.trial_balance()
    priced: list[model.PricedMovement] = []
    late_lines: list[Activity] = []
    reinstatements: list = []
    reversals: list = []  # (transfer, its activity lines): priced once their originals are known
    last_sequence = after_sequence
    count = 0
    async for transfer in context.ledger.transfers_after(after_sequence, trial.commit_sequence):
        if transfer.commit_time_us >= start_us:
            break
        last_sequence = transfer.commit_sequence
        count += 1
        if count > LATE_TRANSFERS_MAX:
            raise FailedPrecondition(
                "TOO_MANY_LATE_TRANSFERS",
                f"more than {LATE_TRANSFERS_MAX} transfers arrived after the last close",
            )
        if transfer.kind not in POSTED_KINDS:
            continue
        lines = _activity_of_transfer(transfer, accounts)
        late_lines.extend(lines)
        if transfer.code == model.CODE_REVERSAL and transfer.reverses_transfer_id:
            reversals.append((transfer, lines))
            if not _out_of_breakage(transfer, accounts):
                continue
            lines = []
        movements = model.movements_from_activity(lines, owners)
        if _to_breakage(transfer, accounts):
            expired = model.BreakageActivity(transfer.currency_code, transfer.partner_id, transfer.amount, 0)
            movements += model.breakage_movements([expired])
        elif _out_of_breakage(transfer, accounts):
            reinstatements.append(transfer)
        priced.extend(scheme.price_or_leave_out(movements, book, transfer.commit_time_us, owners, True, missing_prices))
    priced.extend(await _late_reinstatements(context, reinstatements, book, owners, missing_prices))
    priced.extend(await _late_reversals(context, reversals, book, owners, closed, missing_prices))
    if count:
        _log.info("prior_period_transfers_found", count=count, last_commit_sequence=last_sequence)
    return last_sequence, priced, late_lines


def _to_breakage(transfer, accounts: dict[str, ledger_pb2.Account]) -> bool:
    """An EXPIRY transfer crediting breakage (its metadata names the issuer of the expired points)."""
    return (
        transfer.code == model.CODE_EXPIRY
        and _kind(accounts, transfer.credit_account_id) == model.KIND_OPERATOR_BREAKAGE
    )


def _out_of_breakage(transfer, accounts: dict[str, ledger_pb2.Account]) -> bool:
    """A REVERSAL debiting breakage: a reinstatement if it reverses an EXPIRY (its original names the issuer)."""
    return (
        transfer.code == model.CODE_REVERSAL
        and _kind(accounts, transfer.debit_account_id) == model.KIND_OPERATOR_BREAKAGE
    )


def _kind(accounts: dict[str, ledger_pb2.Account], account_id: str) -> str:
    account = accounts.get(account_id)
    return account.kind if account is not None else ""


async def _originals(context, reversals) -> dict[str, ledger_pb2.Transfer]:
    """The transfers these late reversals reverse, by id."""
    originals: dict[str, ledger_pb2.Transfer] = {}
    ids = sorted({t.reverses_transfer_id for t in reversals})
    for index in range(0, len(ids), LOOKUP_IDS_MAX):
        for original in await context.ledger.get_transfers(ids[index : index + LOOKUP_IDS_MAX]):
            originals[original.id] = original
    return originals


async def _late_reversals(context, reversals, book, owners, closed, missing_prices) -> list[model.PricedMovement]:
    """Late earn and redemption reversals, priced at their originals' price (reversal_pricing)."""
    originals = await _originals(context, [transfer for transfer, _ in reversals])
    priced: list[model.PricedMovement] = []
    for transfer, lines in reversals:
        original = originals.get(transfer.reverses_transfer_id)
        if original is not None:
            original_us = micros_from_timestamp(original.commit_time)
            period_id = reversal_pricing.closed_period_at(closed, original_us)
            lines = [replace(line, original_time_us=original_us, original_period_id=period_id) for line in lines]
        movements = model.movements_from_activity(lines, owners)
        priced.extend(scheme.price_or_leave_out(movements, book, transfer.commit_time_us, owners, True, missing_prices))
    return priced


async def _late_reinstatements(context, reinstatements, book, owners, missing_prices) -> list[model.PricedMovement]:
    """Late reversals out of breakage that reinstate an EXPIRY, priced at their own commit time."""
    originals = await _originals(context, reinstatements)
    priced: list[model.PricedMovement] = []
    for transfer in reinstatements:
        original = originals.get(transfer.reverses_transfer_id)
        if original is None or original.code != ledger_pb2.TRANSFER_CODE_EXPIRY:
            continue  # a reversal of something else credited to breakage (an adjustment): no partner's breakage
        activity = model.BreakageActivity(transfer.currency_code, original.metadata.partner_id, 0, transfer.amount)
        movements = model.breakage_movements([activity])
        priced.extend(scheme.price_or_leave_out(movements, book, transfer.commit_time_us, owners, True, missing_prices))
    return priced


# ---------------------------------------------------------------- use cases


async def _previous_closed(context: SettlementContext, start_us: int):
    last = await context.read(store.last_period_row)
    if last is not None and last.end_us == start_us:
        return last
    return None


@dataclass(frozen=True, slots=True)
class Preview:
    settlement: PeriodSettlement
    warnings: tuple[PeriodWarning, ...] = ()


async def preview_statement(
    context: SettlementContext, period_id: str, start_us: int | None, end_us: int | None
) -> Preview:
    """The figures of a window as they stand now; of its part after the last closed period when
    it overlaps closed periods (scheme.py), with warnings for what they leave out. An id alone
    names a stored period (a custom one included) before it names a calendar month."""
    if start_us is None and end_us is None and PERIOD_ID_PATTERN.fullmatch(period_id or ""):
        stored = await context.read(lambda c: store.load_period(c, period_id))
        if stored is not None:
            return Preview(stored[0])
    period_id, start_us, end_us = resolve_period(context, period_id, start_us, end_us)
    stored = await context.read(lambda c: store.load_period(c, period_id))
    if stored is not None and stored[0].start_us == start_us and stored[0].end_us == end_us:
        return Preview(stored[0])
    span = await context.read(store.closed_span)
    shown = scheme.open_part(span, start_us, end_us)
    warnings: list[PeriodWarning] = []
    if span is not None and shown != (start_us, end_us):
        warnings.append(scheme.overlap_warning(span, period_id, start_us, end_us, context.time_zone))
    if shown is None:
        settlement = PeriodSettlement(period_id, end_us, end_us, False, (), (), 0)
    else:
        previous = await _previous_closed(context, shown[0])
        after = previous.last_commit_sequence if previous is not None else None
        missing: list[tuple[str, str]] = []
        computed = await compute_settlement(context, period_id, shown[0], end_us, after, missing)
        settlement = await statement_documents.attach_drafts(context, computed, context.now_us())
        warnings.extend(scheme.price_missing_warnings(missing))
    boundary = (span.first_start_us, span.first_period_id) if span is not None else (settlement.start_us, "")
    warnings.extend(await unbilled_before(context, *boundary))
    return Preview(settlement, tuple(warnings))


async def unbilled_before(context: SettlementContext, first_start_us: int, first_period_id: str) -> list:
    """Warnings for the points activity before the first period, which no period bills."""
    if first_start_us <= 0:
        return []
    accounts = await _settlement_accounts(context)
    lines, _ = await context.ledger.activity_without_tier_bonus(0, first_start_us, sorted(accounts))
    if not lines:
        return []
    try:
        movements = model.movements_from_activity(lines, await context.ledger.currency_owners())
    except SettlementRuleError:
        return []  # the period's own figures report the broken account or currency
    return scheme.unbilled_warnings(movements, first_start_us, first_period_id, context.time_zone)


async def close_warnings(context: SettlementContext, settlement: PeriodSettlement) -> list:
    """A close of the first period (or a validation of it) warns about what it leaves unbilled before it."""
    span = await context.read(store.closed_span)
    if span is not None and span.first_period_id != settlement.period_id:
        return []
    return await unbilled_before(context, settlement.start_us, "")


def settlement_transfer_id(period_id: str, partner_id: str) -> str:
    transfer_id = f"settlement:{period_id}:{partner_id}"
    if len(transfer_id) > TRANSFER_ID_LENGTH_MAX:
        raise FailedPrecondition(
            "TRANSFER_ID_TOO_LONG",
            f"settlement transfer id {transfer_id!r} exceeds {TRANSFER_ID_LENGTH_MAX} characters;"
            " use a shorter period id",
        )
    return transfer_id


@timed_use_case("close_seconds")
async def close_period(
    context: SettlementContext,
    period_id: str,
    start_us: int | None,
    end_us: int | None,
    validate_only: bool = False,
) -> tuple[PeriodSettlement, bool]:
    """Close a period; (figures, closed_now). `validate_only`: every check and the figures a close
    would freeze, nothing stored or posted."""
    period_id, start_us, end_us = resolve_period(context, period_id, start_us, end_us)
    stored = await context.read(lambda c: store.load_period(c, period_id))
    if stored is not None:
        settlement, state = stored
        if (settlement.start_us, settlement.end_us) != (start_us, end_us):
            raise AlreadyExists(
                "PERIOD_ID_REUSED",
                f"period {period_id} was closed with a different window; choose another period id",
                period_id=period_id,
            )
        if state == store.PERIOD_STATE_CLOSED or validate_only:
            return settlement, False
        return await _post_and_mark_closed(context, settlement)
    last = await context.read(store.last_period_row)
    if last is not None and last.end_us != start_us:
        raise _not_contiguous(context, await context.read(store.closed_span), period_id, start_us, end_us)
    if last is not None and last.state != store.PERIOD_STATE_CLOSED:
        raise FailedPrecondition(
            "PREVIOUS_PERIOD_NOT_CLOSED",
            f"closing {last.period_id} was interrupted; close {last.period_id} again to finish it first",
            previous_period_id=last.period_id,
        )
    ledger_now_us = await _ledger_clock_us(context)
    if ledger_now_us < end_us + context.close_delay_seconds * 1_000_000:
        raise FailedPrecondition(
            "PERIOD_NOT_ENDED",
            f"period {period_id} can be closed {context.close_delay_seconds} s after it ends (ledger clock);"
            " preview it until then",
            period_id=period_id,
            end_us=end_us,
            ledger_now_us=ledger_now_us,
        )
    after_sequence = last.last_commit_sequence if last is not None else None
    if validate_only:
        computed = await compute_settlement(context, period_id, start_us, end_us, after_sequence)
        _check_invariants(computed)
        return await statement_documents.attach_drafts(context, computed, context.now_us()), False
    await _ensure_operator_settlement_account(context)
    lost_race: sa_exc.IntegrityError | None = None
    for attempt in range(1, FREEZE_ATTEMPTS_MAX + 1):
        # The versions the figures may use, read before computing them: if one is recorded in
        # between, the freeze (under the lock SetPriceAgreement takes) sees another set and recomputes.
        basis = await context.read(lambda c: store.agreement_ids_starting_before(c, end_us))
        computed = await compute_settlement(context, period_id, start_us, end_us, after_sequence)
        _check_invariants(computed)
        statements = tuple(
            replace(s, settlement_transfer_id=settlement_transfer_id(period_id, s.partner_id) if s.net_cents else "")
            for s in computed.statements
        )
        close_us = context.now_us()
        frozen = await statement_documents.attach_drafts(context, replace(computed, statements=statements), close_us)
        try:
            if await context.write(lambda c, frozen=frozen, basis=basis, now=close_us: _freeze(c, frozen, basis, now)):
                break
        except sa_exc.IntegrityError as error:
            lost_race = error  # Another close of the same period won the race; continue from what it stored.
            break
        _log.info("agreements_changed_during_close", period_id=period_id, attempt=attempt)
    else:
        raise Aborted(
            "AGREEMENTS_CHANGED",
            f"price agreements kept changing while {period_id} was being closed; close it again",
            period_id=period_id,
        )
    # Post exactly what was stored (the same figures a retried close would read back).
    stored = await context.read(lambda c: store.load_period(c, period_id))
    if stored is None:
        if lost_race is not None:
            raise lost_race
        raise RuntimeError(f"period {period_id} was frozen but cannot be read back")
    if stored[1] == store.PERIOD_STATE_CLOSED:
        return stored[0], False
    frozen = stored[0]
    _log.info("period_frozen", period_id=period_id, statements=len(frozen.statements))
    return await _post_and_mark_closed(context, frozen)


def _not_contiguous(
    context: SettlementContext, span: ClosedSpan, period_id: str, start_us: int, end_us: int
) -> FailedPrecondition:
    """PERIOD_NOT_CONTIGUOUS naming the window that can be closed instead (scheme.next_window)."""
    zone = context.time_zone
    expected = scheme.iso(span.last_end_us, zone)
    hint = scheme.next_window(span, period_id, start_us, end_us, zone)
    metadata: dict[str, object] = {
        "expected_start_us": span.last_end_us,
        "expected_start_time": expected,
        "last_period_id": span.last_period_id,
        "period_id": period_id,
    }
    message = f"periods are closed in order without gaps: the next period must start at {expected}, where"
    message += f" {span.last_period_id} ended"
    if hint is None:
        message += f"; {period_id} lies wholly inside the closed periods: it is settled already"
    else:
        metadata |= {
            "suggested_period_id": hint.period_id,
            "suggested_start_time": scheme.iso(hint.start_us, zone),
            "suggested_end_time": scheme.iso(hint.end_us, zone),
        }
        first = "the gap before it" if hint.end_us == start_us else "the rest of the window"
        message += f"; close {first} as period {hint.period_id} from {scheme.iso(hint.start_us, zone)}"
        message += f" to {scheme.iso(hint.end_us, zone)}"
    return FailedPrecondition("PERIOD_NOT_CONTIGUOUS", message, **metadata)


def _freeze(connection, frozen: PeriodSettlement, basis: frozenset[str], now_us: int) -> bool:
    """Store the figures unless a price agreement that could change them was recorded since `basis`,
    or the pending adjustments are no longer the ones the figures carry (PostAdjustment takes the
    same lock); mark the adjustments carried as settled by this period."""
    store.lock_agreements_and_periods(connection)
    if store.agreement_ids_starting_before(connection, frozen.end_us) != basis:
        return False
    carried = sorted(
        line.adjustment_id
        for statement in frozen.statements
        for line in statement.lines
        if line.kind is model.LineKind.ADJUSTMENT
    )
    if sorted(a.adjustment_id for a in correction_store.pending_adjustments(connection)) != carried:
        return False
    store.insert_closing_period(connection, frozen, now_us)
    statement_documents.number_and_store(connection, frozen)
    correction_store.settle_adjustments(connection, carried, frozen.period_id)
    return True


def _check_invariants(settlement: PeriodSettlement) -> None:
    if not settlement.netting.balanced:
        raise FailedPrecondition(
            "NETTING_NOT_BALANCED",
            "partner nets do not add up to the operator's net; the period was not closed",
            operator_net_cents=settlement.netting.operator_net_cents,
            operator_net_from_lines_cents=settlement.netting.operator_net_from_lines_cents,
        )
    for rf in settlement.roll_forwards:
        if not rf.identity_holds():
            raise FailedPrecondition(
                "ROLL_FORWARD_BROKEN",
                f"the {rf.currency_code} roll-forward does not add up; the period was not closed",
            )


# Accounts whose balance read gives the ledger's clock without a write: the operator's settlement
# account (made by the first close), else the PTS breakage account partners makes at its start.
_CLOCK_ACCOUNT_IDS = (OPERATOR_SETTLEMENT_ACCOUNT_ID, "breakage:PTS")


async def _ledger_clock_us(context: SettlementContext) -> int:
    """The ledger's clock, read without writing: a close it refuses (not ended) changes nothing."""
    for account_id in _CLOCK_ACCOUNT_IDS:
        try:
            return await context.ledger.clock_us(account_id)
        except LedgerRefused as refused:
            if refused.metadata.get("ledger_code") != "NOT_FOUND":
                raise
    await _ensure_operator_settlement_account(context)  # a ledger with neither: nothing to settle yet
    return await context.ledger.clock_us(OPERATOR_SETTLEMENT_ACCOUNT_ID)


async def _ensure_operator_settlement_account(context: SettlementContext) -> None:
    await context.ledger.create_accounts(
        [
            ledger_pb2.Account(
                id=OPERATOR_SETTLEMENT_ACCOUNT_ID,
                currency_code=model.MONEY_CURRENCY_CODE,
                normal_side=ledger_pb2.ACCOUNT_SIDE_CREDIT,
                owner_id=model.OPERATOR_ID,
                kind=model.KIND_OPERATOR_SETTLEMENT,
            )
        ]
    )


def _partner_account_id(partner_id: str) -> str:
    return f"settlement:{model.MONEY_CURRENCY_CODE}:{partner_id}"


def settlement_transfers(settlement: PeriodSettlement) -> list[ledger_pb2.TransferInput]:
    """Partner pays: debit its settlement account (positive = owes); is paid: the other way round."""
    transfers = []
    for statement in settlement.statements:
        if statement.net_cents == 0:
            continue
        # What is paid is the document's gross (net + tax, same sign); periods closed before
        # documents existed post their net.
        document = settlement.document(statement.partner_id)
        amount = abs(document.gross_cents) if document is not None else abs(statement.net_cents)
        partner_account = _partner_account_id(statement.partner_id)
        debit, credit = (
            (partner_account, OPERATOR_SETTLEMENT_ACCOUNT_ID)
            if statement.net_cents > 0
            else (OPERATOR_SETTLEMENT_ACCOUNT_ID, partner_account)
        )
        transfers.append(
            ledger_pb2.TransferInput(
                id=statement.settlement_transfer_id,
                debit_account_id=debit,
                credit_account_id=credit,
                amount=amount,
                currency_code=model.MONEY_CURRENCY_CODE,
                kind=ledger_pb2.TRANSFER_KIND_POSTED,
                code=ledger_pb2.TRANSFER_CODE_SETTLEMENT,
                metadata=ledger_pb2.TransferMetadata(partner_id=statement.partner_id),
            )
        )
    return transfers


async def _post_and_mark_closed(
    context: SettlementContext, settlement: PeriodSettlement
) -> tuple[PeriodSettlement, bool]:
    """Post the frozen nets and mark the period closed; (settlement, closed_now).

    Concurrent closes may all post (the transfer ids are deterministic, so the ledger applies
    them once), but only the one whose CLOSING -> CLOSED update changed the row is told closed_now."""
    partners = [s.partner_id for s in settlement.statements if s.net_cents]
    await _ensure_operator_settlement_account(context)
    accounts = [
        ledger_pb2.Account(
            id=_partner_account_id(partner_id),
            currency_code=model.MONEY_CURRENCY_CODE,
            normal_side=ledger_pb2.ACCOUNT_SIDE_DEBIT,
            owner_id=partner_id,
            kind=model.KIND_PARTNER_SETTLEMENT,
        )
        for partner_id in partners
    ]
    for index in range(0, len(accounts), TRANSFER_BATCH_MAX):
        await context.ledger.create_accounts(accounts[index : index + TRANSFER_BATCH_MAX])
    transfers = settlement_transfers(settlement)
    for index in range(0, len(transfers), TRANSFER_BATCH_MAX):
        await context.ledger.create_transfers_or_refuse(transfers[index : index + TRANSFER_BATCH_MAX])
    closed_now = await context.write(lambda c: store.mark_closed(c, settlement.period_id))
    if not closed_now:
        return replace(settlement, closed=True), False
    _log.info(
        "period_closed",
        period_id=settlement.period_id,
        operator_net_cents=settlement.netting.operator_net_cents,
        settlement_transfers=len(transfers),
    )
    return replace(settlement, closed=True), True


async def get_period(context: SettlementContext, period_id: str) -> PeriodSettlement:
    stored = await context.read(lambda c: store.load_period(c, period_id))
    if stored is None:
        raise NotFound("PERIOD_NOT_FOUND", f"period {period_id} has not been closed; preview it instead")
    return stored[0]


async def list_periods(context: SettlementContext, before_end_us: int | None, limit: int) -> Sequence:
    def work(connection):
        rows = store.list_period_rows(connection, before_end_us, limit)
        return [(row, store.operator_net_of(connection, row.period_id)) for row in rows]

    return await context.read(work)


def statements_of(settlement: PeriodSettlement, partner_id: str) -> tuple[Statement, ...]:
    if not partner_id:
        return settlement.statements
    return tuple(s for s in settlement.statements if s.partner_id == partner_id)
