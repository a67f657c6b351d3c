"""The ledger, as settlement sees it: the common client (services/common/ledger_client.py: one
channel set-up, deadlines, one status policy) plus settlement's reads translated to its domain types.

Settlement never reads the ledger's tables. Aggregation happens in the ledger's database
(GetActivitySummary); only late arrivals and reconciliation rows are read transfer by transfer.
"""

from __future__ import annotations

from collections.abc import Sequence

from coalition.ledger.v1 import ledger_pb2
from services.common import ledger_client as common
from services.common.timeconv import micros_from_timestamp
from services.common.tls import Transport
from services.settlement.model import Activity, TransactionRow

LEDGER_CALL_DEADLINE_SECONDS = 10.0
CODE_NAMES = common.CODE_NAMES
LedgerTransfer = common.LedgerTransfer


class LedgerClient(common.LedgerClient):
    def __init__(
        self, address: str, transport: Transport, deadline_seconds: float = LEDGER_CALL_DEADLINE_SECONDS
    ) -> None:
        super().__init__(address, transport, deadline_seconds)

    async def activity(self, start_us: int, end_us: int, account_ids: Sequence[str]) -> tuple[list[Activity], int]:
        """Posted debits/credits per account and code committed in [start, end); and the last sequence."""
        lines: list[Activity] = []
        last_sequence = 0
        for response in await self.activity_summary(start_us, end_us, account_ids):
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
                )
                for line in response.lines
            )
        return lines, last_sequence

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
