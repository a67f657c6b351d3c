"""Return use case: reverse the earned points of returned lines and refund points spent on
the receipt, in one linked ledger chain.

If the member already spent some earned points, only what is available is taken back and
the shortfall is reported (the partner still pays for the points it issued). The amount is
decided from a balance read, so a concurrent spend can make the chain fail; the return is
then decided again under a new attempt number (the ledger keeps failed ids forever).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import structlog
from sqlalchemy import Connection, Row

from services.common.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound
from services.common.ledger_client import (
    Failure,
    LedgerRefused,
    TransferInput,
    TransferMetadata,
    failure_name,
    ledger_pb2,
)
from services.partners import earn_posting, model, recording, tier_book
from services.partners.access import Caller, check_point_of_sale, require_partner
from services.partners.app import App
from services.partners.store import earns as earn_store
from services.partners.store import redemptions as redemption_store
from services.partners.store import returns as return_store

_log = structlog.get_logger("partners")
RETURN_ATTEMPTS_MAX = 3


@dataclass(frozen=True, slots=True)
class ReturnCommand:
    request_id: str
    store_id: str
    terminal_id: str
    receipt_id: str
    line_numbers: list[int]
    redeemed_refund_amount: int


def _record(app: App, caller: Caller, command: ReturnCommand, now: int):
    partner_id = caller.partner_id
    return_id = f"return:{partner_id}:{command.request_id}"

    def work(connection: Connection) -> Row:
        check_point_of_sale(connection, app.facts, caller, command.store_id, command.terminal_id)
        digest = model.fingerprint(
            store=command.store_id,
            terminal=command.terminal_id,
            receipt=command.receipt_id,
            lines=sorted(command.line_numbers),
            refund=command.redeemed_refund_amount,
        )

        def same_request(existing: Row) -> Row:
            recording.same_request(existing.fingerprint, digest, command.request_id, "return")
            return existing

        # Lock the receipt before reading anything about it: concurrent returns of the same
        # receipt (under other request_ids) wait here and then see the lines and refunds this
        # one reserves, instead of each reading them as unreturned (READ COMMITTED).
        earn, receipt_redemptions = return_store.lock_receipt(connection, partner_id, command.receipt_id)
        existing = return_store.return_by_request(connection, partner_id, command.request_id)
        if existing is not None:
            return same_request(existing)
        redemptions = [row for row in receipt_redemptions if row.state == "captured"]
        if earn is None and not redemptions:
            raise NotFound("RECEIPT_NOT_FOUND", "no earn or redemption on this receipt", receipt_id=command.receipt_id)
        due = 0
        completes = False
        unsettled = False
        if command.line_numbers:
            if earn is None:
                raise NotFound("RECEIPT_NOT_FOUND", "no earn on this receipt", receipt_id=command.receipt_id)
            if earn.state == "failed":
                raise FailedPrecondition(
                    "EARN_FAILED",
                    "the earn of this receipt failed in the ledger; no points were issued to return",
                    receipt_id=command.receipt_id,
                )
            # An earn still pending here is settled with the ledger only once the return is
            # otherwise accepted (below), so a refused return never causes that write.
            unsettled = earn.state != "posted"
            lines = {line.line_number: line for line in earn_store.earn_lines_of(connection, earn.earn_id)}
            for number in command.line_numbers:
                line = lines.get(number)
                if line is None:
                    raise InvalidArgument("UNKNOWN_LINE", "the receipt has no such line", line_number=number)
                if line.return_id == return_id:
                    # This very request committed meanwhile (a retry racing its first send).
                    return same_request(return_store.return_by_request(connection, partner_id, command.request_id))
                if line.return_id is not None:
                    raise FailedPrecondition(
                        "LINE_ALREADY_RETURNED", "the line was returned before", line_number=number
                    )
            due = sum(lines[number].points for number in command.line_numbers)
            completes = all(
                line.return_id is not None or number in command.line_numbers for number, line in lines.items()
            )
            if not return_store.reserve_lines(connection, earn.earn_id, command.line_numbers, return_id):
                # Cannot happen under the receipt lock; refuse rather than reverse a line twice.
                raise Aborted("RETURN_CONFLICT", "a concurrent return claimed these lines; retry the same request_id")
        remaining = [(row, row.captured_amount - row.refunded_amount) for row in redemptions]
        remaining = [(row, amount) for row, amount in remaining if amount > 0]
        refund_total = command.redeemed_refund_amount
        currencies = sorted({row.currency_code for row, _ in remaining})
        if refund_total > 0 and len(currencies) > 1:
            # The amount has no currency: points of different currencies are not one unit.
            raise FailedPrecondition(
                "REFUND_CURRENCY_AMBIGUOUS",
                "points of several currencies were spent on this receipt; return every line with"
                " redeemed_refund_amount 0 to refund each in its own currency",
                currencies=",".join(currencies),
            )
        refundable = sum(amount for _, amount in remaining)
        if refund_total == 0 and completes:
            refund_total = refundable
        if refund_total > refundable:
            raise FailedPrecondition(
                "REFUND_EXCEEDS_REDEEMED", "more than the points spent on this receipt", refundable=refundable
            )
        refunds = []
        left = refund_total
        for row, amount in remaining:
            share = min(amount, left)
            if share > 0:
                refunds.append([row.redemption_id, share, row.currency_code])
                if not return_store.reserve_refund(connection, row.redemption_id, share):
                    raise Aborted("RETURN_CONFLICT", "a concurrent return refunded these points; retry")
                left -= share
        if unsettled:
            raise _EarnUnsettled(earn)  # rolls back what this unit reserved
        member_id = earn.member_id if earn is not None else redemptions[0].member_id
        currency = earn.currency_code if earn is not None else redemptions[0].currency_code
        bonus, qualifying, activities = (
            tier_book.return_shares(earn, lines, command.line_numbers, completes) if command.line_numbers else (0, 0, 0)
        )
        tier_book.change_for_return(connection, app, member_id, currency, now, -qualifying, -activities)
        return_store.insert_return(
            connection,
            return_id=return_id,
            partner_id=partner_id,
            store_id=command.store_id,
            terminal_id=command.terminal_id,
            request_id=command.request_id,
            fingerprint=digest,
            receipt_id=command.receipt_id,
            member_id=member_id,
            earn_id=earn.earn_id if earn is not None else None,
            currency_code=currency,
            earned_points_due=due,
            earned_points_reversed=0,
            tier_bonus_points_due=bonus,
            qualifying_points_due=qualifying,
            qualifying_activities_due=activities,
            refunds=json.dumps(refunds),
            refund_currency_code=refunds[0][2] if refunds else "",
            attempt=1,
            state="new",
            create_time_us=now,
        )
        return return_store.return_by_request(connection, partner_id, command.request_id)

    return work


async def return_items(app: App, caller: Caller, command: ReturnCommand) -> Row:
    require_partner(caller)
    model.check_request_id(command.request_id)
    model.check_local_id(command.receipt_id, "receipt_id")
    if len(command.line_numbers) > model.BASKET_LINES_MAX or len(set(command.line_numbers)) != len(
        command.line_numbers
    ):
        raise InvalidArgument("INVALID_LINES", "line_numbers must be distinct, at most 200")
    if not 0 <= command.redeemed_refund_amount <= model.REDEMPTION_AMOUNT_MAX:
        raise InvalidArgument("INVALID_AMOUNT", "redeemed_refund_amount out of range")
    if not command.line_numbers and command.redeemed_refund_amount == 0:
        raise InvalidArgument("NOTHING_TO_RETURN", "give line_numbers and/or redeemed_refund_amount")
    record = _record(app, caller, command, app.clock())
    try:
        row = await app.write(record, retry_unique_violation=True)
    except _EarnUnsettled as unsettled:
        # The earn's outcome is not recorded here (the ledger's answer was lost, or its caller
        # gave up): settle it with the ledger as a retry of the earn would, then decide again.
        await earn_posting.recover_earn(app, unsettled.earn)
        try:
            row = await app.write(record, retry_unique_violation=True)
        except _EarnUnsettled:
            raise FailedPrecondition(
                "EARN_NOT_COMPLETE", "the earn of this receipt is not complete; retry the earn first"
            ) from None
    return await _complete(app, row)


class _EarnUnsettled(Exception):
    """The receipt's earn is recorded, but what the ledger answered for it is not recorded yet."""

    def __init__(self, earn: Row) -> None:
        super().__init__(earn.earn_id)
        self.earn = earn


async def _complete(app: App, row: Row) -> Row:
    """Take a recorded return to posted or failed. The client's call and its retries, and the
    server's recovery pass, all come here, so every one of them sends the same transfer ids."""
    for _ in range(RETURN_ATTEMPTS_MAX):
        if row.state == "posted":
            return row
        if row.state == "failed":
            raise _refused(row.failure_reason)
        if row.state == "new":
            row = await _decide(app, row)
        row = await _submit(app, row)
    raise Aborted("RETURN_CONFLICT", "the member's balance kept changing; retry with the same request_id")


def refund_entries(row: Row) -> list[tuple[str, int, str]]:
    """(redemption_id, points, currency) of each refund of a return. Returns recorded before
    the currency was kept per entry had one refund currency for all."""
    return [
        (entry[0], entry[1], entry[2] if len(entry) > 2 else row.refund_currency_code)
        for entry in json.loads(row.refunds)
    ]


def refund_totals(row: Row) -> dict[str, int]:
    """Points refunded by a return, per currency (never summed across currencies)."""
    totals: dict[str, int] = {}
    for _, amount, currency in refund_entries(row):
        totals[currency] = totals.get(currency, 0) + amount
    return totals


def _refunded_redemptions(app: App, row: Row):
    return app.read(
        lambda connection: {rid: redemption_store.get_redemption(connection, rid) for rid, _, _ in refund_entries(row)}
    )


def _refused(reason: str | None) -> FailedPrecondition:
    return FailedPrecondition("LEDGER_REFUSED", "the ledger refused the return", failure=reason or "")


def _release(app: App, row: Row, reason: str):
    """The ledger refused the chain, so nothing moved: give back what the return reserved (its
    lines and the refundable points of its redemptions), so a later return may claim them, and
    the qualifying totals it took."""

    def work(connection: Connection) -> None:
        current = return_store.return_by_request(connection, row.partner_id, row.request_id)
        if current.state == "failed":
            return
        for redemption_id, amount, _ in refund_entries(current):
            return_store.release_refund(connection, redemption_id, amount)
        if current.earn_id is not None:
            return_store.release_lines(connection, current.earn_id, current.return_id)
        tier_book.change_for_return(
            connection,
            app,
            current.member_id,
            current.currency_code,
            current.create_time_us,
            current.qualifying_points_due,
            current.qualifying_activities_due,
        )
        return_store.update_return(connection, current.return_id, state="failed", failure_reason=reason)

    return work


async def _decide(app: App, row: Row) -> Row:
    """Fix how much of the due can be taken back now: what is available, plus any refund of
    the same currency credited earlier in the same chain."""
    reversed_points = 0
    if row.earned_points_due > 0:
        wallet = model.wallet_account_id(row.currency_code, row.member_id)
        (balance,) = await app.ledger.get_balances([wallet])
        # Only refunds credited to this same wallet (same member, same currency) earlier in
        # the chain can pay for the reversal.
        redemptions = await _refunded_redemptions(app, row)
        refunded_same_currency = sum(
            amount
            for redemption_id, amount, _ in refund_entries(row)
            if redemptions[redemption_id].member_id == row.member_id
            and redemptions[redemption_id].currency_code == row.currency_code
        )
        reversed_points = max(0, min(row.earned_points_due, balance.available + refunded_same_currency))

    def work(connection: Connection) -> Row:
        current = return_store.return_by_request(connection, row.partner_id, row.request_id)
        if current.state == "new" and current.attempt == row.attempt:
            return_store.update_return(
                connection, row.return_id, earned_points_reversed=reversed_points, state="pending"
            )
        return return_store.return_by_request(connection, row.partner_id, row.request_id)

    return await app.write(work)


async def _submit(app: App, row: Row) -> Row:
    transfers: list[TransferInput] = []
    refunds = refund_entries(row)
    if refunds:
        redemptions = await _refunded_redemptions(app, row)
        for index, (redemption_id, amount, _) in enumerate(refunds):
            redemption = redemptions[redemption_id]
            # A refund goes back to whoever's points paid: the redemption's member, who may
            # not be the member who earned on the receipt.
            transfers.append(
                TransferInput(
                    id=model.return_transfer_id(row.partner_id, row.request_id, row.attempt, f"refund{index}"),
                    debit_account_id=model.redemption_account_id(redemption.currency_code, row.partner_id),
                    credit_account_id=model.wallet_account_id(redemption.currency_code, redemption.member_id),
                    amount=amount,
                    currency_code=redemption.currency_code,
                    kind=ledger_pb2.TRANSFER_KIND_POSTED,
                    reverses_transfer_id=redemption.capture_transfer_id,
                    code=ledger_pb2.TRANSFER_CODE_REVERSAL,
                    metadata=TransferMetadata(
                        partner_id=row.partner_id,
                        store_id=row.store_id,
                        terminal_id=row.terminal_id,
                        receipt_id=row.receipt_id,
                        member_id=redemption.member_id,
                    ),
                )
            )
    if row.earned_points_reversed > 0:
        transfers.append(
            TransferInput(
                id=model.return_transfer_id(row.partner_id, row.request_id, row.attempt, "earn"),
                debit_account_id=model.wallet_account_id(row.currency_code, row.member_id),
                credit_account_id=model.issuance_account_id(row.currency_code, row.partner_id),
                amount=row.earned_points_reversed,
                currency_code=row.currency_code,
                kind=ledger_pb2.TRANSFER_KIND_POSTED,
                reverses_transfer_id=row.earn_id,
                code=ledger_pb2.TRANSFER_CODE_REVERSAL,
                metadata=TransferMetadata(
                    partner_id=row.partner_id,
                    store_id=row.store_id,
                    terminal_id=row.terminal_id,
                    receipt_id=row.receipt_id,
                    member_id=row.member_id,
                    tier_bonus_points=tier_book.reversed_bonus(
                        row.tier_bonus_points_due, row.earned_points_reversed, row.earned_points_due
                    ),
                ),
            )
        )
    for transfer in transfers[:-1]:
        transfer.linked = True
    if transfers:
        try:
            results = await app.ledger.create_transfers(transfers)
        except LedgerRefused as error:
            if not error.invalid_argument:
                raise
            # The ledger refused the chain's content as a whole: nothing moved, and the same
            # chain is refused again, so the return fails and releases what it reserved.
            await app.write(_release(app, row, recording.LEDGER_INVALID_ARGUMENT))
            _log.error(
                "return_refused", return_id=row.return_id, failure=recording.LEDGER_INVALID_ARGUMENT, message=str(error)
            )
            raise _refused(recording.LEDGER_INVALID_ARGUMENT) from None
        failed = [result for result in results if result.status == ledger_pb2.ITEM_STATUS_FAILED]
        root = [result for result in failed if result.failure_reason != Failure.FAILURE_REASON_LINKED_EVENT_FAILED]
        if root:
            if root[0].failure_reason == Failure.FAILURE_REASON_INSUFFICIENT_FUNDS:
                # The member spent points between our balance read and the chain: decide again.
                await app.write(lambda connection: return_store.retry_return(connection, row.return_id, row.attempt))
                return await app.read(
                    lambda connection: return_store.return_by_request(connection, row.partner_id, row.request_id)
                )
            reason = failure_name(root[0])
            await app.write(_release(app, row, reason))
            _log.error("return_refused", return_id=row.return_id, failure=reason)
            raise _refused(reason)
    await app.write(lambda connection: return_store.update_return(connection, row.return_id, state="posted"))
    _log.info(
        "items_returned",
        return_id=row.return_id,
        reversed_points=row.earned_points_reversed,
        shortfall_points=row.earned_points_due - row.earned_points_reversed,
    )
    return await app.read(lambda connection: return_store.return_by_request(connection, row.partner_id, row.request_id))


async def recover_return(app: App, row: Row) -> str | None:
    """The recovery pass's step for a return recorded (lines and refunds reserved) but never
    posted. Same path and ids as the client's retry, so the two race harmlessly; a refusal
    releases what the return reserved. Returns the return's state, or None when it must be
    decided again later; UNAVAILABLE propagates (the ledger is away)."""
    try:
        done = await _complete(app, row)
    except FailedPrecondition as error:
        if error.reason != "LEDGER_REFUSED":
            raise
        return "failed"  # released, marked failed and logged as return_refused
    except Aborted:
        return None  # the member's balance kept moving; a later pass decides again
    return done.state
