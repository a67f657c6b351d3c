"""Domain objects to protobuf messages (the only place that knows both shapes)."""

from __future__ import annotations

from coalition.ledger.v1 import ledger_pb2
from services.common.timeconv import timestamp_from_micros
from services.ledger import liability, lot_store, lots, notices
from services.ledger.model import Account, Balance, Outcome, Transfer


def currency_message(row) -> ledger_pb2.Currency:
    return ledger_pb2.Currency(
        code=row.code, scale=row.scale, owner_id=row.owner_id, create_time=timestamp_from_micros(row.created_at_us)
    )


def account_message(account: Account) -> ledger_pb2.Account:
    return ledger_pb2.Account(
        id=account.id,
        currency_code=account.currency_code,
        normal_side=int(account.normal_side),
        no_overdraft=account.no_overdraft,
        owner_id=account.owner_id,
        kind=account.kind,
        create_time=timestamp_from_micros(account.created_at_us),
    )


def balance_message(account: Account, balance: Balance, as_of_us: int) -> ledger_pb2.Balance:
    side = account.normal_side
    return ledger_pb2.Balance(
        account_id=account.id,
        debits_posted=balance.debits_posted,
        credits_posted=balance.credits_posted,
        debits_pending=balance.debits_pending,
        credits_pending=balance.credits_pending,
        posted=balance.posted(side),
        pending=balance.pending(side),
        available=balance.available(side),
        as_of_time=timestamp_from_micros(as_of_us),
    )


def transfer_message(transfer: Transfer) -> ledger_pb2.Transfer:
    return ledger_pb2.Transfer(
        id=transfer.id,
        debit_account_id=transfer.debit_account_id,
        credit_account_id=transfer.credit_account_id,
        amount=transfer.amount,
        currency_code=transfer.currency_code,
        kind=int(transfer.kind),
        pending_id=transfer.pending_id,
        timeout_seconds=transfer.timeout_seconds,
        reverses_transfer_id=transfer.reverses_transfer_id,
        code=transfer.code,
        metadata=ledger_pb2.TransferMetadata(
            partner_id=transfer.partner_id,
            store_id=transfer.store_id,
            terminal_id=transfer.terminal_id,
            receipt_id=transfer.receipt_id,
            member_id=transfer.member_id,
            tier_bonus_points=transfer.tier_bonus_points,
        ),
        commit_time=timestamp_from_micros(transfer.committed_at_us),
        commit_sequence=transfer.sequence,
        hold_state=int(transfer.hold_state),
        expire_time=None if transfer.expires_at_us is None else timestamp_from_micros(transfer.expires_at_us),
    )


def transfer_result(index: int, outcome: Outcome) -> ledger_pb2.CreateTransferResult:
    if outcome.failure is not None:
        return ledger_pb2.CreateTransferResult(
            index=index,
            status=int(outcome.status),
            failure_reason=int(outcome.failure),
            failure_field=outcome.failure_field,
            failure_message=outcome.failure_message,
        )
    # Built in one constructor call: a batch answers up to 8,189 of these.
    return ledger_pb2.CreateTransferResult(
        index=index, status=int(outcome.status), transfer=transfer_message(outcome.transfer)
    )


def expiry_policy_message(policy: lots.ExpiryPolicy) -> ledger_pb2.ExpiryPolicy:
    return ledger_pb2.ExpiryPolicy(
        currency_code=policy.currency_code,
        effective_time=timestamp_from_micros(policy.effective_from_us),
        kind=int(policy.kind),
        months=policy.months,
        sweep_month=policy.sweep_month,
        sweep_day=policy.sweep_day,
        notice_days=policy.notice_days,
        create_time=timestamp_from_micros(policy.created_at_us),
    )


def lot_message(lot: lots.Lot, last_activity_expiry_us: int | None) -> ledger_pb2.Lot:
    message = ledger_pb2.Lot(
        lot_id=lot.lot_id,
        credit_time=timestamp_from_micros(lot.credited_at_us),
        amount=lot.amount,
        open_amount=lot.open_amount,
        policy_kind=int(lot.policy_kind),
    )
    expires = lot.expires_at_us if lot.policy_kind is lots.PolicyKind.FIXED else last_activity_expiry_us
    if expires is not None and lot.policy_kind is not lots.PolicyKind.NONE:
        message.expire_time.CopyFrom(timestamp_from_micros(expires))
    return message


def breakage_summary_message(lines: list[liability.BreakageLine], last_sequence: int):
    return ledger_pb2.GetBreakageSummaryResponse(
        lines=[
            ledger_pb2.BreakageLine(
                currency_code=line.currency_code,
                issuer_id=line.issuer_id,
                expired=line.expired,
                reinstated=line.reinstated,
            )
            for line in lines
        ],
        last_commit_sequence=last_sequence,
    )


_EXPIRY_BUCKET_KINDS = {
    lot_store.EXPIRY_KEY_NEVER: ledger_pb2.EXPIRY_BUCKET_KIND_NEVER,
    lot_store.EXPIRY_KEY_EXEMPT: ledger_pb2.EXPIRY_BUCKET_KIND_EXEMPT,
}


def outstanding_summary_message(summary: liability.OutstandingSummary):
    response = ledger_pb2.GetOutstandingSummaryResponse(
        as_of_time=timestamp_from_micros(summary.as_of_us), commit_sequence=summary.commit_sequence
    )
    bounds = lots.age_bucket_bounds()
    for outstanding in summary.currencies:
        response.currencies.add(
            currency_code=outstanding.currency_code,
            open_lots_total=outstanding.open_lots_total,
            wallet_balance_total=outstanding.wallet_balance_total,
            age_buckets=[
                ledger_pb2.AgeBucket(age_months_min=low, age_months_max=high, amount=amount)
                for (low, high), amount in zip(bounds, outstanding.age_amounts, strict=True)
            ],
            expiry_buckets=[
                ledger_pb2.ExpiryBucket(
                    kind=_EXPIRY_BUCKET_KINDS.get(bucket.key, ledger_pb2.EXPIRY_BUCKET_KIND_MONTH),
                    month=bucket.month,
                    amount=bucket.amount,
                    inactivity_amount=bucket.inactivity_amount,
                )
                for bucket in outstanding.expiry_buckets()
            ],
        )
    return response


def expiry_notice_message(notice: notices.ExpiryNotice) -> ledger_pb2.ExpiryNotice:
    return ledger_pb2.ExpiryNotice(
        notice_sequence=notice.notice_sequence,
        account_id=notice.account_id,
        owner_id=notice.owner_id,
        currency_code=notice.currency_code,
        lot_id=notice.lot_id,
        amount=notice.amount,
        expire_time=timestamp_from_micros(notice.expires_at_us),
        notice_time=timestamp_from_micros(notice.noticed_at_us),
        expiry_round=notice.expiry_round,
    )
