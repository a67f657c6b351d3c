"""The ledger, as settlement sees it: the common client (services/common/ledger_client.py: one
channel set-up, deadlines, one status policy) plus settlement's reads translated to its domain types.

Settlement never reads the ledger's tables. Aggregation happens in the ledger's database
(GetActivitySummary); only late arrivals and reconciliation rows are read transfer by transfer.
"""

from __future__ import annotations

from collections.abc import Sequence

from coalition.ledger.v1 import ledger_pb2
from services.common import ledger_client as common
from services.common.timeconv import micros_from_timestamp, timestamp_from_micros
from services.common.tls import Transport
from services.settlement.documents import StoreActivity
from services.settlement.model import Activity, BreakageActivity, TransactionRow

LEDGER_CALL_DEADLINE_SECONDS = 10.0
CODE_NAMES = common.CODE_NAMES
LedgerTransfer = common.LedgerTransfer


class LedgerClient(common.LedgerClient):
    def __init__(
        self,
        address: str,
        transport: Transport,
        deadline_seconds: float = LEDGER_CALL_DEADLINE_SECONDS,
        tracer_provider=None,
    ) -> None:
        super().__init__(address, transport, deadline_seconds, tracer_provider=tracer_provider)

    async def activity(
        self, start_us: int, end_us: int, account_ids: Sequence[str], original_time_bounds: Sequence[int] = ()
    ) -> tuple[list[Activity], int]:
        """Posted debits/credits and their tier bonus share per account and code committed in
        [start, end) (what a period's statements price); and the last sequence. With ascending
        `original_time_bounds`, reversal lines are split by the window of the bounds their originals
        committed in, and carry that window's start as original_time_us (None before the first)."""
        return await self._activity(start_us, end_us, account_ids, True, original_time_bounds)

    async def activity_without_tier_bonus(
        self, start_us: int, end_us: int, account_ids: Sequence[str]
    ) -> tuple[list[Activity], int]:
        """As activity, with every tier_bonus_points 0: for reads of the whole history (opening
        liability, audit) that only count points, without the look-up of each earn's transfer."""
        return await self._activity(start_us, end_us, account_ids, tier_bonus=False)

    async def _activity(
        self,
        start_us: int,
        end_us: int,
        account_ids: Sequence[str],
        tier_bonus: bool,
        original_time_bounds: Sequence[int] = (),
    ) -> tuple[list[Activity], int]:
        lines: list[Activity] = []
        last_sequence = 0
        bounds = list(original_time_bounds)
        responses = await self.activity_summary(start_us, end_us, account_ids, tier_bonus, bounds)
        for response in responses:
            last_sequence = max(last_sequence, response.last_commit_sequence)
            lines.extend(
                Activity(
                    account_id=line.account_id,
                    code=CODE_NAMES.get(line.code, "UNSPECIFIED"),
                    currency_code=line.currency_code,
                    debits=line.debits_posted,
                    credits=line.credits_posted,
                    owner_id=line.owner_id,
                    kind=line.kind,
                    tier_bonus_points=line.tier_bonus_points,
                    original_time_us=(
                        bounds[line.reversal_original_window - 1]
                        if 0 < line.reversal_original_window <= len(bounds)
                        else None
                    ),
                )
                for line in response.lines
            )
        return lines, last_sequence

    async def store_activity(self, start_us: int, end_us: int, account_ids: Sequence[str]) -> list[StoreActivity]:
        """Posted activity per account, code and store in [start, end), with transfer counts
        (grouped by the ledger: one aggregate per chunk of account ids)."""
        return [
            StoreActivity(
                owner_id=line.owner_id,
                kind=line.kind,
                code=CODE_NAMES.get(line.code, "UNSPECIFIED"),
                currency_code=line.currency_code,
                store_id=line.store_id,
                debits=line.debits_posted,
                credits=line.credits_posted,
                transfer_count=line.transfer_count,
            )
            for response in await self.activity_summary(start_us, end_us, account_ids, by_store=True)
            for line in response.lines
        ]

    async def breakage(self, start_us: int, end_us: int) -> tuple[list[BreakageActivity], int]:
        """Points expired and reinstated in [start, end) per currency and issuer; and the last sequence."""
        request = ledger_pb2.GetBreakageSummaryRequest(
            start_time=timestamp_from_micros(start_us), end_time=timestamp_from_micros(end_us)
        )
        response = await self._call("GetBreakageSummary", request, common.LEDGER_AGGREGATE_DEADLINE_SECONDS)
        lines = [
            BreakageActivity(line.currency_code, line.issuer_id, line.expired, line.reinstated)
            for line in response.lines
        ]
        return lines, response.last_commit_sequence

    async def outstanding(self, as_of_us: int | None, currency_code: str) -> ledger_pb2.GetOutstandingSummaryResponse:
        """Open lots by age and expiry month per currency, and the wallets' total (grouped by the ledger)."""
        request = ledger_pb2.GetOutstandingSummaryRequest(currency_code=currency_code)
        if as_of_us is not None:
            request.as_of_time.CopyFrom(timestamp_from_micros(as_of_us))
        return await self._call("GetOutstandingSummary", request, common.LEDGER_AGGREGATE_DEADLINE_SECONDS)

    async def balances_as_of(self, account_ids: Sequence[str], as_of_us: int | None) -> list[ledger_pb2.Balance]:
        return await self.get_balances(account_ids, as_of_us)

    async def clock_us(self, any_account_id: str) -> int:
        """The ledger's clock: the as-of time of a balance read (commit times come from this clock)."""
        (balance,) = await self.get_balances([any_account_id])
        return micros_from_timestamp(balance.as_of_time)


def reconciliation_rows_from_entries(entries: Sequence[ledger_pb2.Entry], account_kind: str) -> list[TransactionRow]:
    """Ledger side of a reconciliation: posted EARN/REVERSAL on issuance, REDEEM/REVERSAL on redemption."""
    rows = []
    for entry in entries:
        if entry.posted_amount <= 0:
            continue
        t = entry.transfer
        code = CODE_NAMES.get(t.code, "")
        debit = entry.side == ledger_pb2.ACCOUNT_SIDE_DEBIT
        if account_kind == "partner_issuance":
            kind = {("EARN", True): "EARN", ("REVERSAL", False): "EARN_REVERSAL"}.get((code, debit))
        else:
            kind = {("REDEEM", False): "REDEEM", ("REVERSAL", True): "REDEMPTION_REVERSAL"}.get((code, debit))
        if kind is None:
            continue
        commit_time = t.commit_time.ToDatetime().isoformat() + "Z"
        rows.append(
            TransactionRow(
                t.metadata.receipt_id or t.id,
                t.metadata.store_id,
                t.metadata.terminal_id,
                commit_time,
                kind,
                entry.posted_amount,
                currency_code=t.currency_code,
            )
        )
    rows.reverse()  # the ledger lists newest first; report oldest first
    return rows
