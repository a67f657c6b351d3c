"""The one client of the ledger, used by partners and settlement: one channel set-up, a deadline
on every call, one status policy.

Status policy (what a ledger answer becomes in the calling service):
- UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED (the ledger is overloaded), ABORTED and
  CANCELLED: `Unavailable("LEDGER_UNAVAILABLE")`. The caller retries with the same request id,
  which is safe because every ledger id we send is derived from it.
- INVALID_ARGUMENT: `LedgerRefused` with status INVALID_ARGUMENT and the ledger's own reason
  (the same call is refused again, forever; `invalid_argument` is True).
- FAILED_PRECONDITION, NOT_FOUND, ALREADY_EXISTS, OUT_OF_RANGE: `LedgerRefused` with status
  FAILED_PRECONDITION and the ledger's reason.
- Anything else (INTERNAL, UNKNOWN, an authentication problem): `LedgerRefused` with status
  INTERNAL and reason LEDGER_FAILED; that is the ledger's fault or ours, never the caller's.
A per-item refusal inside a successful CreateAccounts/CreateTransfers answer is data: the
helpers below that treat it as an error say so.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import grpc
import structlog
from google.rpc import error_details_pb2, status_pb2

from coalition.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from services.common import tracing
from services.common.coalescer import Coalescer, outcome
from services.common.errors import AlreadyExists, FailedPrecondition, ServiceError, Unavailable
from services.common.timeconv import micros_from_timestamp, timestamp_from_micros
from services.common.tls import Transport

_log = structlog.get_logger("ledger_client")

# Deadlines: every outbound call has one.
LEDGER_CALL_DEADLINE_SECONDS_DEFAULT = 3.0
LEDGER_AGGREGATE_DEADLINE_SECONDS = 120.0  # a month of 1,000,000 transfers is aggregated in one call
LEDGER_WATCH_DEADLINE_SECONDS = 60.0
# Limits of what one call sends or reads.
ACCOUNT_IDS_PER_CALL_MAX = 1_000
PAGE_SIZE = 1_000
PAGES_MAX = 100_000
LEDGER_MESSAGE_BYTES_MAX = 64 * 1024 * 1024
KNOWN_ACCOUNTS_MAX = 100_000
# The ledger speaks plaintext gRPC on its (private) address today; TLS would be set here, once.
CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", LEDGER_MESSAGE_BYTES_MAX),
    ("grpc.max_send_message_length", LEDGER_MESSAGE_BYTES_MAX),
)

_UNAVAILABLE_CODES = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.CANCELLED,
}
_PRECONDITION_CODES = {
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.OUT_OF_RANGE,
}
_STATUS_DETAILS_KEY = "grpc-status-details-bin"

DEBIT = ledger_pb2.ACCOUNT_SIDE_DEBIT
CREDIT = ledger_pb2.ACCOUNT_SIDE_CREDIT
Status = ledger_pb2.ItemStatus
Failure = ledger_pb2.FailureReason
TransferInput = ledger_pb2.TransferInput
TransferMetadata = ledger_pb2.TransferMetadata
CODE_NAMES = {value: name.removeprefix("TRANSFER_CODE_") for name, value in ledger_pb2.TransferCode.items()}


class LedgerRefused(ServiceError):
    """The ledger refused a call (or an item of it). `ledger_code` is the ledger's status code
    name when it refused the whole call (e.g. INVALID_ARGUMENT), empty for an item refusal."""

    def __init__(self, message: str, code: str = "", reason: str = "", **metadata: object) -> None:
        if code == "INVALID_ARGUMENT":
            status = grpc.StatusCode.INVALID_ARGUMENT
        elif code == "" or code in {c.name for c in _PRECONDITION_CODES}:
            status = grpc.StatusCode.FAILED_PRECONDITION
        else:
            status = grpc.StatusCode.INTERNAL
        super().__init__(
            reason or ("LEDGER_FAILED" if status == grpc.StatusCode.INTERNAL else "LEDGER_REFUSED"), message, **metadata
        )
        self.code = status
        self.ledger_code = code

    @property
    def invalid_argument(self) -> bool:
        """The ledger refused the call's content: the same call is refused again, forever."""
        return self.ledger_code == "INVALID_ARGUMENT"


def _error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo | None:
    for key, value in error.trailing_metadata() or ():
        if key != _STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status()
        try:
            status.ParseFromString(value)
        except Exception:  # a malformed detail from the ledger leaves the reason generic
            return None
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                return info
    return None


def ledger_error(error: grpc.aio.AioRpcError, method: str) -> ServiceError:
    """The status policy: what a failed ledger call becomes (see the module docstring)."""
    code = error.code()
    if code in _UNAVAILABLE_CODES:
        _log.warning("ledger_unavailable", ledger_method=method, code=code.name)
        return Unavailable(
            "LEDGER_UNAVAILABLE",
            f"the ledger did not answer {method} ({code.name}); retry later with the same ids",
            ledger_method=method,
            ledger_code=code.name,
        )
    info = _error_info(error)
    refused = LedgerRefused(
        f"the ledger refused {method}: {code.name} {error.details() or ''}".rstrip(),
        code=code.name,
        reason=info.reason if info is not None and code != grpc.StatusCode.INTERNAL else "",
    )
    if info is not None:
        refused.metadata.update({str(key): str(value) for key, value in info.metadata.items()})
    refused.metadata.update(ledger_method=method, ledger_code=code.name)
    return refused


@dataclass(frozen=True, slots=True)
class AccountSpec:
    account_id: str
    currency_code: str
    normal_side: int
    owner_id: str
    kind: str
    no_overdraft: bool = False


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
    partner_id: str = ""  # metadata.partner_id
    reverses_transfer_id: str = ""
    tier_bonus_points: int = 0  # metadata.tier_bonus_points (minor units of currency_code)


# Transfers of concurrent calls sent in one CreateTransfers at most (the ledger takes 8,189),
# and calls waiting to be sent at most (then UNAVAILABLE: retry with the same ids).
MERGED_TRANSFERS_MAX = 1_024
MERGED_TRANSFERS_QUEUED_MAX = 20_000
# One merged CreateTransfers call in flight at a time: the transfers that arrive while it runs
# go in the next. With two, AuthorizeRedemption+CaptureRedemption at 64 in flight (1 partners +
# 1 ledger, bench/profile_pos.py, 2 interleaved pairs of runs) made smaller ledger calls: 520-538
# against 551-571 pairs/s with one, and 0.51-0.55 against 0.43-0.44 ms of ledger CPU per pair.
MERGED_TRANSFER_CALLS_IN_FLIGHT_MAX = 1


# Under load, a merged GetBalances waits this long for more reads before it is sent (a read after
# a lone read never waits). A ledger read costs partners and the ledger about the same whatever it carries,
# and at 64 in flight reads arrived a few per millisecond, so each call carried about 6 of them.
# GetMemberBalance on 1 partners + 1 ledger (bench/profile_pos.py, interleaved 15 s runs):
# 2,362-2,440 calls/s with none, 2,880-3,089 with 1 ms, 3,103-3,358 with 2 ms; partners CPU per
# call 0.36-0.37 -> 0.30-0.32 ms. Merged writes did not gain from it: Authorize+Capture pairs
# went 730-756 -> 688-697 with 1 ms on the hold and resolution merges, and Earn did not change.
BALANCE_READS_LINGER_SECONDS = 0.002


class LedgerClient:
    def __init__(
        self,
        address: str,
        transport: Transport,
        deadline_seconds: float = LEDGER_CALL_DEADLINE_SECONDS_DEFAULT,
        merge_transfers: bool = False,
        tracer_provider=None,
    ) -> None:
        """With a `tracer_provider` (tracing on, services/common/tracing.py) every call is a client
        span whose W3C trace context goes to the ledger in the call's metadata."""
        self.address = address
        self.deadline_seconds = deadline_seconds
        batches_tracer = tracing.batch_tracer(tracer_provider)  # None: tracing off
        self._transfer_calls = (
            Coalescer(
                "ledger CreateTransfers",
                self._create_transfers_merged,
                MERGED_TRANSFERS_MAX,
                MERGED_TRANSFERS_QUEUED_MAX,
                MERGED_TRANSFER_CALLS_IN_FLIGHT_MAX,
                size=len,
                tracer=batches_tracer,
            )
            if merge_transfers
            else None
        )
        # Balance reads of many tills share one GetBalances call (and one ledger read) the same way.
        self._balance_calls = (
            Coalescer(
                "ledger GetBalances",
                self._get_balances_merged,
                ACCOUNT_IDS_PER_CALL_MAX,
                MERGED_TRANSFERS_QUEUED_MAX,
                # One read at a time: a read is quick, so a second in flight only splits the
                # waiting reads into more, smaller ledger calls (GetMemberBalance measured
                # 780 -> 900 calls/s with one, and 0.6 -> 0.4 ms of ledger CPU per call).
                batches_in_flight_max=1,
                size=len,
                tracer=batches_tracer,
                linger_seconds=BALANCE_READS_LINGER_SECONDS,
            )
            if merge_transfers
            else None
        )
        self._channel = transport.aio_channel(
            address, CHANNEL_OPTIONS, interceptors=tracing.client_interceptors(tracer_provider) or None
        )
        self._stub = ledger_pb2_grpc.LedgerServiceStub(self._channel)
        # Accounts are never deleted, so once seen they need no second CreateAccounts.
        self._known_accounts: set[str] = set()

    @property
    def merged_call_sizes(self) -> Counter[int]:
        """How many ledger CreateTransfers calls carried each number of merged callers' calls."""
        return self._transfer_calls.batch_sizes if self._transfer_calls is not None else Counter()

    @property
    def merged_balance_read_sizes(self) -> Counter[int]:
        """How many ledger GetBalances calls carried each number of merged callers' reads."""
        return self._balance_calls.batch_sizes if self._balance_calls is not None else Counter()

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, name: str, request, timeout: float | None = None):
        method = getattr(self._stub, name)
        try:
            return await method(request, timeout=timeout or self.deadline_seconds)
        except grpc.aio.AioRpcError as error:
            raise ledger_error(error, name) from error

    # ------------------------------------------------------------ currencies and accounts

    async def register_currency(self, code: str, scale: int, owner_id: str) -> None:
        currency = ledger_pb2.Currency(code=code, scale=scale, owner_id=owner_id)
        try:
            await self._call("RegisterCurrency", ledger_pb2.RegisterCurrencyRequest(currency=currency))
        except LedgerRefused as error:
            if error.ledger_code == grpc.StatusCode.ALREADY_EXISTS.name:
                raise AlreadyExists(
                    "CURRENCY_IN_USE", f"{code} is registered with another owner or scale", currency=code
                ) from error
            raise

    async def currency_owners(self) -> dict[str, str]:
        response = await self._call("ListCurrencies", ledger_pb2.ListCurrenciesRequest())
        return {c.code: c.owner_id for c in response.currencies}

    async def list_accounts(self, owner_id: str = "", kind: str = "") -> list[ledger_pb2.Account]:
        accounts: list[ledger_pb2.Account] = []
        token = ""
        for _ in range(PAGES_MAX):
            response = await self._call(
                "ListAccounts",
                ledger_pb2.ListAccountsRequest(owner_id=owner_id, kind=kind, page_size=PAGE_SIZE, page_token=token),
            )
            accounts.extend(response.accounts)
            token = response.next_page_token
            if not token:
                return accounts
        raise FailedPrecondition("TOO_MANY_ACCOUNTS", f"more than {PAGES_MAX} pages of accounts")

    async def create_accounts(self, accounts: Sequence[ledger_pb2.Account]) -> None:
        """Create accounts (an existing identical one is fine); an item refusal is LedgerRefused."""
        response = await self._call("CreateAccounts", ledger_pb2.CreateAccountsRequest(accounts=list(accounts)))
        for result in response.results:
            if result.status == Status.ITEM_STATUS_FAILED:
                account_id = accounts[result.index].id
                raise LedgerRefused(
                    f"the ledger refused account {account_id}:"
                    f" {Failure.Name(result.failure_reason)} {result.failure_field}",
                    reason="LEDGER_ACCOUNT_REFUSED",
                    account_id=account_id,
                )

    async def ensure_accounts(self, specs: Sequence[AccountSpec]) -> None:
        """Create the accounts that may not exist yet, skipping ones this client already saw."""
        missing = [spec for spec in specs if spec.account_id not in self._known_accounts]
        if not missing:
            return
        await self.create_accounts(
            [
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
        if len(self._known_accounts) < KNOWN_ACCOUNTS_MAX:
            self._known_accounts.update(spec.account_id for spec in missing)

    # ------------------------------------------------------------ transfers

    async def create_transfers(
        self, transfers: Sequence[ledger_pb2.TransferInput]
    ) -> list[ledger_pb2.CreateTransferResult]:
        """One result per transfer, refusals included (the caller decides what each means).

        With merge_transfers, concurrent calls share one CreateTransfers (each call's transfers
        stay together and in order; a call ending in an open linked chain is sent alone, since
        it would otherwise link into its neighbour's transfers)."""
        transfers = list(transfers)
        if self._transfer_calls is None or not transfers or transfers[-1].linked:
            return await self._create_transfers(transfers)
        return await self._transfer_calls.submit(transfers)

    async def _create_transfers_merged(
        self, calls: list[list[ledger_pb2.TransferInput]]
    ) -> list[list[ledger_pb2.CreateTransferResult] | BaseException]:
        try:
            results = await self._create_transfers([transfer for call in calls for transfer in call])
        except LedgerRefused as error:
            if not (error.invalid_argument or error.ledger_code == "PERMISSION_DENIED") or len(calls) == 1:
                raise
            # One call's content refused the whole merged call: each call alone (all at once) gets its own answer.
            return list(await asyncio.gather(*(outcome(self._create_transfers(call)) for call in calls)))
        answers: list[list[ledger_pb2.CreateTransferResult] | BaseException] = []
        start = 0
        for call in calls:
            answers.append(results[start : start + len(call)])
            start += len(call)
        return answers

    async def _create_transfers(
        self, transfers: list[ledger_pb2.TransferInput]
    ) -> list[ledger_pb2.CreateTransferResult]:
        request = ledger_pb2.CreateTransfersRequest(transfers=list(transfers))
        response = await self._call("CreateTransfers", request)
        if len(response.results) != len(transfers):
            raise LedgerRefused("CreateTransfers returned a different number of results", code="INTERNAL")
        return list(response.results)

    async def create_transfers_apart(
        self, transfers: Sequence[ledger_pb2.TransferInput]
    ) -> list[ledger_pb2.CreateTransferResult | LedgerRefused]:
        """Independent transfers in one call, each with its own answer: when the ledger refuses the
        call's content as a whole (INVALID_ARGUMENT), each is sent alone, so only the bad one fails
        (its answer is the LedgerRefused). UNAVAILABLE and other call failures propagate."""
        if not transfers:
            return []
        try:
            return await self.create_transfers(transfers)
        except LedgerRefused as error:
            if not error.invalid_argument:
                raise
            if len(transfers) == 1:
                return [error]
        return [(await self.create_transfers_apart([transfer]))[0] for transfer in transfers]

    async def create_transfers_or_refuse(
        self, transfers: Sequence[ledger_pb2.TransferInput]
    ) -> list[ledger_pb2.Transfer]:
        """Transfers that must all be applied: the first item refusal is LedgerRefused."""
        created = []
        for transfer, result in zip(transfers, await self.create_transfers(transfers), strict=True):
            if result.status == Status.ITEM_STATUS_FAILED:
                raise LedgerRefused(
                    f"the ledger refused transfer {transfer.id}: {Failure.Name(result.failure_reason)}"
                    f" {result.failure_field} {result.failure_message}".rstrip(),
                    reason="LEDGER_TRANSFER_REFUSED",
                    transfer_id=transfer.id,
                )
            created.append(result.transfer)
        return created

    async def get_transfers(self, transfer_ids: Sequence[str]) -> list[ledger_pb2.Transfer]:
        response = await self._call("GetTransfers", ledger_pb2.GetTransfersRequest(ids=list(transfer_ids)))
        return list(response.transfers)

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
                        partner_id=t.metadata.partner_id,
                        reverses_transfer_id=t.reverses_transfer_id,
                        tier_bonus_points=t.metadata.tier_bonus_points,
                    )
                    if t.commit_sequence == through_sequence:
                        return
        except grpc.aio.AioRpcError as error:
            raise ledger_error(error, "WatchTransfers") from error
        finally:
            call.cancel()

    # ------------------------------------------------------------ balances and entries

    async def trial_balance(self) -> ledger_pb2.GetTrialBalanceResponse:
        return await self._call("GetTrialBalance", ledger_pb2.GetTrialBalanceRequest())

    async def get_balances(self, account_ids: Sequence[str], as_of_us: int | None = None) -> list[ledger_pb2.Balance]:
        """Balances now (or as of a past time), ACCOUNT_IDS_PER_CALL_MAX ids per call; with
        merging on, concurrent reads of the balances now share one call."""
        if self._balance_calls is not None and as_of_us is None and 0 < len(account_ids) <= ACCOUNT_IDS_PER_CALL_MAX:
            return await self._balance_calls.submit(list(account_ids))
        return await self._get_balances(account_ids, as_of_us)

    async def _get_balances_merged(self, calls: list[list[str]]) -> list[list[ledger_pb2.Balance] | BaseException]:
        ids = list(dict.fromkeys(account_id for call in calls for account_id in call))
        try:
            found = {balance.account_id: balance for balance in await self._get_balances(ids)}
        except LedgerRefused:
            if len(calls) == 1:
                raise
            # One call's unknown account refused the merged read: each call alone gets its own answer.
            return list(await asyncio.gather(*(outcome(self._get_balances(call)) for call in calls)))
        return [[found[account_id] for account_id in call] for call in calls]

    async def _get_balances(self, account_ids: Sequence[str], as_of_us: int | None = None) -> list[ledger_pb2.Balance]:
        result: list[ledger_pb2.Balance] = []
        for index in range(0, len(account_ids), ACCOUNT_IDS_PER_CALL_MAX):
            request = ledger_pb2.GetBalancesRequest(
                account_ids=list(account_ids[index : index + ACCOUNT_IDS_PER_CALL_MAX])
            )
            if as_of_us is not None:
                request.as_of_time.CopyFrom(timestamp_from_micros(as_of_us))
            response = await self._call("GetBalances", request)
            result.extend(response.balances)
        return result

    async def activity_summary(
        self,
        start_us: int,
        end_us: int,
        account_ids: Sequence[str],
        tier_bonus: bool = False,
        original_time_bounds: Sequence[int] = (),
        by_store: bool = False,
    ) -> list[ledger_pb2.GetActivitySummaryResponse]:
        """Posted activity per account and code committed in [start, end), one answer per chunk of
        ids; with `tier_bonus`, each line's tier bonus points too; with `original_time_bounds`,
        REVERSAL lines split by the window their originals committed in; with `by_store`, per
        store instead (reversals not split)."""
        ids = sorted(set(account_ids))
        responses = []
        for index in range(0, len(ids), ACCOUNT_IDS_PER_CALL_MAX):
            request = ledger_pb2.GetActivitySummaryRequest(
                start_time=timestamp_from_micros(start_us),
                end_time=timestamp_from_micros(end_us),
                account_ids=ids[index : index + ACCOUNT_IDS_PER_CALL_MAX],
                include_tier_bonus_points=tier_bonus,
                group_by_store=by_store,
                reversal_original_time_bounds=[timestamp_from_micros(bound) for bound in original_time_bounds],
            )
            responses.append(await self._call("GetActivitySummary", request, LEDGER_AGGREGATE_DEADLINE_SECONDS))
        return responses

    async def list_lots(self, account_id: str) -> ledger_pb2.ListLotsResponse:
        """A member wallet's open lots and what expires per month (NOT_FOUND: no such wallet)."""
        return await self._call("ListLots", ledger_pb2.ListLotsRequest(account_id=account_id))

    async def list_entries(self, account_id: str, page_size: int) -> list[ledger_pb2.Entry]:
        """The newest `page_size` entries of an account."""
        request = ledger_pb2.ListAccountEntriesRequest(account_id=account_id, page_size=page_size)
        response = await self._call("ListAccountEntries", request)
        return list(response.entries)

    async def entries_between(self, account_id: str, start_us: int, end_us: int) -> list[ledger_pb2.Entry]:
        """Every entry of an account committed in [start, end), newest first, page by page."""
        entries: list[ledger_pb2.Entry] = []
        token = ""
        for _ in range(PAGES_MAX):
            response = await self._call(
                "ListAccountEntries",
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


def succeeded(result: ledger_pb2.CreateTransferResult) -> bool:
    return result.status in (Status.ITEM_STATUS_CREATED, Status.ITEM_STATUS_ALREADY_EXISTS)


def failure_name(result: ledger_pb2.CreateTransferResult) -> str:
    return Failure.Name(result.failure_reason).removeprefix("FAILURE_REASON_")
