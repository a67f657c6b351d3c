"""The ledger, as settlement sees it: a few gRPC calls, each with a deadline, translated to domain types.

Settlement never reads the ledger's tables. Aggregation happens in the ledger's database
(GetActivitySummary); only late arrivals and reconciliation rows are read transfer by transfer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import grpc

from coalition.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from services.common.errors import FailedPrecondition, Unavailable
from services.common.timeconv import micros_from_timestamp, timestamp_from_micros
from services.settlement.model import Activity, TransactionRow

LEDGER_CALL_DEADLINE_SECONDS = 10.0
LEDGER_AGGREGATE_DEADLINE_SECONDS = 120.0  # a month of 1,000,000 transfers is aggregated in one call
LEDGER_WATCH_DEADLINE_SECONDS = 60.0
ACCOUNT_IDS_PER_CALL_MAX = 1_000
PAGE_SIZE = 1_000
PAGES_MAX = 100_000
LEDGER_MESSAGE_BYTES_MAX = 64 * 1024 * 1024

CODE_NAMES = {value: name.removeprefix("TRANSFER_CODE_") for name, value in ledger_pb2.TransferCode.items()}


@dataclass(frozen=True, slots=True)
class LedgerTransfer:
    id: str
    debit_account_id: str
    credit_account_id: str
    amount: int
    currency_code: str
    kind: str
    code: str
    commit_sequence: int
    commit_time_us: int


class LedgerClient:
    def __init__(self, address: str) -> None:
        self.address = address
        self._channel = grpc.aio.insecure_channel(
            address,
            options=[
                ("grpc.max_receive_message_length", LEDGER_MESSAGE_BYTES_MAX),
                ("grpc.max_send_message_length", LEDGER_MESSAGE_BYTES_MAX),
            ],
        )
        self._stub = ledger_pb2_grpc.LedgerServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, method, request, timeout: float = LEDGER_CALL_DEADLINE_SECONDS):
        try:
            return await method(request, timeout=timeout)
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise Unavailable(
                    "LEDGER_UNAVAILABLE",
                    f"the ledger at {self.address} did not answer ({error.code().name}); retry later",
                ) from error
            raise

    async def currency_owners(self) -> dict[str, str]:
        response = await self._call(self._stub.ListCurrencies, ledger_pb2.ListCurrenciesRequest())
        return {c.code: c.owner_id for c in response.currencies}

    async def list_accounts(self, owner_id: str = "", kind: str = "") -> list[ledger_pb2.Account]:
        accounts: list[ledger_pb2.Account] = []
        token = ""
        for _ in range(PAGES_MAX):
            response = await self._call(
                self._stub.ListAccounts,
                ledger_pb2.ListAccountsRequest(owner_id=owner_id, kind=kind, page_size=PAGE_SIZE, page_token=token),
            )
            accounts.extend(response.accounts)
            token = response.next_page_token
            if not token:
                return accounts
        raise FailedPrecondition("TOO_MANY_ACCOUNTS", f"more than {PAGES_MAX} pages of accounts")

    async def activity(self, start_us: int, end_us: int, account_ids: Sequence[str]) -> tuple[list[Activity], int]:
        """Posted debits/credits per account and code committed in [start, end); and the last sequence."""
        lines: list[Activity] = []
        last_sequence = 0
        ids = sorted(set(account_ids))
        for index in range(0, len(ids), ACCOUNT_IDS_PER_CALL_MAX):
            response = await self._call(
                self._stub.GetActivitySummary,
                ledger_pb2.GetActivitySummaryRequest(
                    start_time=timestamp_from_micros(start_us),
                    end_time=timestamp_from_micros(end_us),
                    account_ids=ids[index : index + ACCOUNT_IDS_PER_CALL_MAX],
                ),
                timeout=LEDGER_AGGREGATE_DEADLINE_SECONDS,
            )
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

    async def trial_balance(self) -> ledger_pb2.GetTrialBalanceResponse:
        return await self._call(self._stub.GetTrialBalance, ledger_pb2.GetTrialBalanceRequest())

    async def balances(self, account_ids: Sequence[str]) -> list[ledger_pb2.Balance]:
        return await self.balances_as_of(account_ids, None)

    async def balances_as_of(self, account_ids: Sequence[str], as_of_us: int | None) -> list[ledger_pb2.Balance]:
        result: list[ledger_pb2.Balance] = []
        for index in range(0, len(account_ids), ACCOUNT_IDS_PER_CALL_MAX):
            request = ledger_pb2.GetBalancesRequest(
                account_ids=list(account_ids[index : index + ACCOUNT_IDS_PER_CALL_MAX])
            )
            if as_of_us is not None:
                request.as_of_time.CopyFrom(timestamp_from_micros(as_of_us))
            response = await self._call(self._stub.GetBalances, request)
            result.extend(response.balances)
        return result

    async def clock_us(self, any_account_id: str) -> int:
        """The ledger's clock: the as-of time of a balance read (commit times come from this clock)."""
        (balance,) = await self.balances([any_account_id])
        return micros_from_timestamp(balance.as_of_time)

    async def create_accounts(self, accounts: Sequence[ledger_pb2.Account]) -> None:
        response = await self._call(
            self._stub.CreateAccounts, ledger_pb2.CreateAccountsRequest(accounts=list(accounts))
        )
        for result in response.results:
            if result.status == ledger_pb2.ITEM_STATUS_FAILED:
                raise FailedPrecondition(
                    "LEDGER_ACCOUNT_REFUSED",
                    f"the ledger refused account {accounts[result.index].id}:"
                    f" {ledger_pb2.FailureReason.Name(result.failure_reason)} {result.failure_field}",
                    account_id=accounts[result.index].id,
                )

    async def create_transfers(self, transfers: Sequence[ledger_pb2.TransferInput]) -> list[ledger_pb2.Transfer]:
        response = await self._call(
            self._stub.CreateTransfers, ledger_pb2.CreateTransfersRequest(transfers=list(transfers))
        )
        created = []
        for result in response.results:
            if result.status == ledger_pb2.ITEM_STATUS_FAILED:
                raise FailedPrecondition(
                    "LEDGER_TRANSFER_REFUSED",
                    f"the ledger refused settlement transfer {transfers[result.index].id}:"
                    f" {ledger_pb2.FailureReason.Name(result.failure_reason)} {result.failure_field}"
                    f" {result.failure_message}",
                    transfer_id=transfers[result.index].id,
                )
            created.append(result.transfer)
        return created

    async def transfers_after(self, after_sequence: int, through_sequence: int) -> AsyncIterator[LedgerTransfer]:
        """Transfers with after_sequence < commit_sequence <= through_sequence, in commit order."""
        if through_sequence <= after_sequence:
            return
        call = self._stub.WatchTransfers(
            ledger_pb2.WatchTransfersRequest(after_commit_sequence=after_sequence),
            timeout=LEDGER_WATCH_DEADLINE_SECONDS,
        )
        try:
            async for message in call:
                for t in message.transfers:
                    if t.commit_sequence > through_sequence:
                        return
                    yield LedgerTransfer(
                        id=t.id,
                        debit_account_id=t.debit_account_id,
                        credit_account_id=t.credit_account_id,
                        amount=t.amount,
                        currency_code=t.currency_code,
                        kind=ledger_pb2.TransferKind.Name(t.kind).removeprefix("TRANSFER_KIND_"),
                        code=CODE_NAMES.get(t.code, "UNSPECIFIED"),
                        commit_sequence=t.commit_sequence,
                        commit_time_us=micros_from_timestamp(t.commit_time),
                    )
                    if t.commit_sequence == through_sequence:
                        return
        except grpc.aio.AioRpcError as error:
            raise Unavailable(
                "LEDGER_UNAVAILABLE", f"watching the ledger failed ({error.code().name}); retry later"
            ) from error
        finally:
            call.cancel()

    async def entries(self, account_id: str, start_us: int, end_us: int) -> list[ledger_pb2.Entry]:
        entries: list[ledger_pb2.Entry] = []
        token = ""
        for _ in range(PAGES_MAX):
            response = await self._call(
                self._stub.ListAccountEntries,
                ledger_pb2.ListAccountEntriesRequest(
                    account_id=account_id,
                    start_time=timestamp_from_micros(start_us),
                    end_time=timestamp_from_micros(end_us),
                    page_size=PAGE_SIZE,
                    page_token=token,
                ),
            )
            entries.extend(response.entries)
            token = response.next_page_token
            if not token:
                return entries
        raise FailedPrecondition("TOO_MANY_ENTRIES", f"more than {PAGES_MAX} pages of entries")


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
            )
        )
    rows.reverse()  # the ledger lists newest first; report oldest first
    return rows
