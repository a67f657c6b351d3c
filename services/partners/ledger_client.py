"""The partners service's client of the ledger: every call has a deadline, transport
failures become UNAVAILABLE (the caller retries with the same request id, which is safe
because every ledger id we send is derived from it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc
import structlog

from coalition.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from services.common.errors import AlreadyExists, Unavailable

_log = structlog.get_logger("ledger_client")

LEDGER_DEADLINE_SECONDS_DEFAULT = 3.0
KNOWN_ACCOUNTS_MAX = 100_000
_RETRYABLE_CODES = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
}

DEBIT = ledger_pb2.ACCOUNT_SIDE_DEBIT
CREDIT = ledger_pb2.ACCOUNT_SIDE_CREDIT
Status = ledger_pb2.ItemStatus
Failure = ledger_pb2.FailureReason
TransferInput = ledger_pb2.TransferInput
TransferMetadata = ledger_pb2.TransferMetadata


class LedgerRefused(RuntimeError):
    """The ledger refused something that our own checks should have prevented (a bug, INTERNAL).
    `code` is the ledger's status code name when it refused a whole call (e.g. INVALID_ARGUMENT)."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code

    @property
    def invalid_argument(self) -> bool:
        """The ledger refused the call's content: the same call is refused again, forever."""
        return self.code == "INVALID_ARGUMENT"


@dataclass(frozen=True, slots=True)
class AccountSpec:
    account_id: str
    currency_code: str
    normal_side: int
    owner_id: str
    kind: str
    no_overdraft: bool = False


class LedgerClient:
    def __init__(self, address: str, deadline_seconds: float = LEDGER_DEADLINE_SECONDS_DEFAULT) -> None:
        self.address = address
        self.deadline_seconds = deadline_seconds
        self._channel = grpc.aio.insecure_channel(address)
        self._stub = ledger_pb2_grpc.LedgerServiceStub(self._channel)
        # Accounts are never deleted, so once seen they need no second CreateAccounts.
        self._known_accounts: set[str] = set()

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, method, request, name: str):
        try:
            return await method(request, timeout=self.deadline_seconds)
        except grpc.aio.AioRpcError as error:
            if error.code() in _RETRYABLE_CODES:
                _log.warning("ledger_unavailable", method=name, code=error.code().name)
                raise Unavailable(
                    "LEDGER_UNAVAILABLE",
                    "the ledger did not answer in time; retry with the same request_id",
                    ledger_method=name,
                ) from error
            raise LedgerRefused(
                f"ledger {name} failed: {error.code().name} {error.details()}", code=error.code().name
            ) from error

    async def register_currency(self, code: str, scale: int, owner_id: str) -> None:
        currency = ledger_pb2.Currency(code=code, scale=scale, owner_id=owner_id)
        request = ledger_pb2.RegisterCurrencyRequest(currency=currency)
        try:
            await self._call(self._stub.RegisterCurrency, request, "RegisterCurrency")
        except LedgerRefused as error:
            cause = error.__cause__
            if isinstance(cause, grpc.aio.AioRpcError) and cause.code() == grpc.StatusCode.ALREADY_EXISTS:
                raise AlreadyExists(
                    "CURRENCY_IN_USE", f"{code} is registered with another owner or scale", currency=code
                ) from error
            raise

    async def ensure_accounts(self, specs: Sequence[AccountSpec]) -> None:
        """Create the accounts that may not exist yet; existing identical ones are fine."""
        missing = [spec for spec in specs if spec.account_id not in self._known_accounts]
        if not missing:
            return
        request = ledger_pb2.CreateAccountsRequest(
            accounts=[
                ledger_pb2.Account(
                    id=spec.account_id,
                    currency_code=spec.currency_code,
                    normal_side=spec.normal_side,
                    no_overdraft=spec.no_overdraft,
                    owner_id=spec.owner_id,
                    kind=spec.kind,
                )
                for spec in missing
            ]
        )
        response = await self._call(self._stub.CreateAccounts, request, "CreateAccounts")
        for spec, result in zip(missing, response.results, strict=True):
            if result.status == Status.ITEM_STATUS_FAILED:
                raise LedgerRefused(
                    f"account {spec.account_id} refused: {Failure.Name(result.failure_reason)} {result.failure_field}"
                )
        if len(self._known_accounts) < KNOWN_ACCOUNTS_MAX:
            self._known_accounts.update(spec.account_id for spec in missing)

    async def create_transfers(
        self, transfers: Sequence[ledger_pb2.TransferInput]
    ) -> list[ledger_pb2.CreateTransferResult]:
        request = ledger_pb2.CreateTransfersRequest(transfers=list(transfers))
        response = await self._call(self._stub.CreateTransfers, request, "CreateTransfers")
        if len(response.results) != len(transfers):
            raise LedgerRefused("CreateTransfers returned a different number of results")
        return list(response.results)

    async def get_transfers(self, transfer_ids: Sequence[str]) -> list[ledger_pb2.Transfer]:
        request = ledger_pb2.GetTransfersRequest(ids=list(transfer_ids))
        response = await self._call(self._stub.GetTransfers, request, "GetTransfers")
        return list(response.transfers)

    async def get_balances(self, account_ids: Sequence[str]) -> list[ledger_pb2.Balance]:
        request = ledger_pb2.GetBalancesRequest(account_ids=list(account_ids))
        response = await self._call(self._stub.GetBalances, request, "GetBalances")
        return list(response.balances)

    async def list_entries(self, account_id: str, page_size: int) -> list[ledger_pb2.Entry]:
        request = ledger_pb2.ListAccountEntriesRequest(account_id=account_id, page_size=page_size)
        response = await self._call(self._stub.ListAccountEntries, request, "ListAccountEntries")
        return list(response.entries)


def succeeded(result: ledger_pb2.CreateTransferResult) -> bool:
    return result.status in (Status.ITEM_STATUS_CREATED, Status.ITEM_STATUS_ALREADY_EXISTS)


def failure_name(result: ledger_pb2.CreateTransferResult) -> str:
    return Failure.Name(result.failure_reason).removeprefix("FAILURE_REASON_")
