"""The ledger's domain: accounts, balances, transfers and the rules that decide each batch item.

Plain Python: no gRPC, no SQLAlchemy. The store locks and loads what a batch touches into a
`BatchState`; `decide_batch` applies the items in order against it and returns the outcomes
and what must be written. Everything here is deterministic given the state and `now_us`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import IntEnum

from services.ledger.limits import BALANCE_MAX

OPERATOR_OWNER_ID = "operator"
_EXPIRY_CODE = 5  # coalition.ledger.v1.TRANSFER_CODE_EXPIRY
SYSTEM_ID_PREFIX = "#"  # never valid in a caller's id, so system transfers cannot collide


class Side(IntEnum):
    DEBIT = 1
    CREDIT = 2


class Kind(IntEnum):
    POSTED = 1
    PENDING = 2
    POST_PENDING = 3
    VOID_PENDING = 4
    EXPIRE_PENDING = 5


class Code(IntEnum):
    EARN = 1
    REDEEM = 2
    REVERSAL = 3
    CONVERSION = 4
    EXPIRY = 5
    SETTLEMENT = 6
    ADJUSTMENT = 7


class HoldState(IntEnum):
    NONE = 0
    PENDING = 1
    POSTED = 2
    VOIDED = 3
    EXPIRED = 4


class ItemStatus(IntEnum):
    CREATED = 1
    ALREADY_EXISTS = 2
    FAILED = 3


class Failure(IntEnum):
    """Numbered as coalition.ledger.v1.FailureReason."""

    LINKED_EVENT_FAILED = 1
    LINKED_CHAIN_OPEN = 2
    ID_REUSED_WITH_DIFFERENT_CONTENT = 3
    DEBIT_ACCOUNT_NOT_FOUND = 4
    CREDIT_ACCOUNT_NOT_FOUND = 5
    ACCOUNTS_MUST_BE_DIFFERENT = 6
    CURRENCY_MISMATCH = 7
    INSUFFICIENT_FUNDS = 8
    PENDING_TRANSFER_NOT_FOUND = 9
    PENDING_TRANSFER_NOT_PENDING = 10
    PENDING_TRANSFER_ALREADY_POSTED = 11
    PENDING_TRANSFER_ALREADY_VOIDED = 12
    HOLD_EXPIRED = 13
    POST_AMOUNT_EXCEEDS_PENDING = 14
    PENDING_TRANSFER_MISMATCH = 15
    REVERSED_TRANSFER_NOT_FOUND = 16
    REVERSAL_ACCOUNTS_MISMATCH = 17
    REVERSAL_EXCEEDS_ORIGINAL = 18
    REVERSED_TRANSFER_NOT_POSTED = 19
    BALANCE_OVERFLOW = 20
    ACCOUNT_EXISTS_WITH_DIFFERENT_CONTENT = 21
    CURRENCY_NOT_FOUND = 22
    REINSTATEMENT_WINDOW_CLOSED = 23


# Failures that depend only on the item and the ledger's state at the time: remembered under the
# item's id, so a retry with the same id returns the first answer instead of a new decision.
# Linked-chain failures are not the item's own and are decided afresh on retry.
REMEMBERED_FAILURES = frozenset(Failure) - {
    Failure.LINKED_EVENT_FAILED,
    Failure.LINKED_CHAIN_OPEN,
    Failure.ID_REUSED_WITH_DIFFERENT_CONTENT,
}
_RESOLVED_STATE_FAILURE = {
    HoldState.POSTED: Failure.PENDING_TRANSFER_ALREADY_POSTED,
    HoldState.VOIDED: Failure.PENDING_TRANSFER_ALREADY_VOIDED,
    HoldState.EXPIRED: Failure.HOLD_EXPIRED,
}
_RESOLUTION_OF_KIND = {
    Kind.POST_PENDING: HoldState.POSTED,
    Kind.VOID_PENDING: HoldState.VOIDED,
    Kind.EXPIRE_PENDING: HoldState.EXPIRED,
}


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    currency_code: str
    normal_side: Side
    no_overdraft: bool
    owner_id: str = ""
    kind: str = ""
    created_at_us: int = 0


@dataclass(slots=True)
class Balance:
    debits_posted: int = 0
    credits_posted: int = 0
    debits_pending: int = 0
    credits_pending: int = 0

    def copy(self) -> Balance:
        return Balance(self.debits_posted, self.credits_posted, self.debits_pending, self.credits_pending)

    def posted(self, side: Side) -> int:
        if side is Side.CREDIT:
            return self.credits_posted - self.debits_posted
        return self.debits_posted - self.credits_posted

    def pending(self, side: Side) -> int:
        return self.debits_pending if side is Side.CREDIT else self.credits_pending

    def available(self, side: Side) -> int:
        return self.posted(side) - self.pending(side)

    def within_bounds(self, account: Account) -> bool:
        return not account.no_overdraft or self.available(account.normal_side) >= 0

    def overflows(self) -> bool:
        return (
            self.debits_posted + self.debits_pending > BALANCE_MAX
            or self.credits_posted + self.credits_pending > BALANCE_MAX
        )


@dataclass(frozen=True, slots=True)
class TransferCommand:
    """One validated request item (see validation.py for the shape rules)."""

    id: str
    debit_account_id: str
    credit_account_id: str
    amount: int
    currency_code: str
    kind: Kind
    pending_id: str = ""
    timeout_seconds: int = 0
    reverses_transfer_id: str = ""
    code: int = 0
    partner_id: str = ""
    store_id: str = ""
    terminal_id: str = ""
    receipt_id: str = ""
    member_id: str = ""
    tier_bonus_points: int = 0
    linked: bool = False

    def content(self) -> dict[str, object]:
        """What a retry must repeat exactly (everything but `linked`, which shapes the batch)."""
        return {name: getattr(self, name) for name in _CONTENT_FIELDS}


_CONTENT_FIELDS = tuple(f.name for f in fields(TransferCommand) if f.name != "linked")
_METADATA_FIELDS = ("partner_id", "store_id", "terminal_id", "receipt_id", "member_id", "tier_bonus_points")
# Content fields added after failures were first remembered: a remembered failure stored
# without one had the default.
_CONTENT_DEFAULTS = {"tier_bonus_points": 0}


@dataclass(slots=True)
class Transfer:
    """A committed (or about to be committed) transfer, as stored.

    Mutable only so the store can stamp sequence and commit time on the batch's new transfers.
    """

    id: str
    debit_account_id: str
    credit_account_id: str
    amount: int
    currency_code: str
    kind: Kind
    code: int
    pending_id: str = ""
    timeout_seconds: int = 0
    expires_at_us: int | None = None
    reverses_transfer_id: str = ""
    partner_id: str = ""
    store_id: str = ""
    terminal_id: str = ""
    receipt_id: str = ""
    member_id: str = ""
    tier_bonus_points: int = 0
    sequence: int = 0
    committed_at_us: int = 0
    hold_state: HoldState = HoldState.NONE


@dataclass(frozen=True, slots=True)
class Outcome:
    status: ItemStatus
    transfer: Transfer | None = None
    failure: Failure | None = None
    failure_field: str = ""
    failure_message: str = ""


@dataclass(frozen=True, slots=True)
class RememberedFailure:
    content: dict[str, object]
    failure: Failure
    failure_field: str
    failure_message: str


@dataclass(slots=True)
class Posting:
    """A transfer to write, with both accounts' balances right after it."""

    transfer: Transfer
    debit_after: Balance
    credit_after: Balance
    posted_amount: int
    pending_change: int


@dataclass(slots=True)
class BatchState:
    """Everything a batch may read, loaded under lock, mutated as items apply."""

    now_us: int
    accounts: dict[str, Account]
    balances: dict[str, Balance]
    transfers: dict[str, Transfer]  # existing by id: the items' ids, pending ids, reversed ids
    remembered_failures: dict[str, RememberedFailure]
    hold_states: dict[str, HoldState]  # pending id -> state
    reversed_totals: dict[str, int]  # reversed transfer id -> amount already reversed
    reinstatement_window_us: int = 90 * 86_400_000_000  # how long an expiry may be reversed
    # Outputs.
    postings: list[Posting] = field(default_factory=list)
    new_failures: list[tuple[str, RememberedFailure]] = field(default_factory=list)
    touched_accounts: set[str] = field(default_factory=set)


class _ItemFailed(Exception):
    def __init__(self, failure: Failure, message: str, failure_field: str = "") -> None:
        super().__init__(message)
        self.failure = failure
        self.message = message
        self.failure_field = failure_field


def expire_command(pending: Transfer) -> TransferCommand:
    """The system item that releases a hold whose timeout has passed."""
    return TransferCommand(
        id=f"{SYSTEM_ID_PREFIX}expire:{pending.id}",
        debit_account_id=pending.debit_account_id,
        credit_account_id=pending.credit_account_id,
        amount=0,
        currency_code=pending.currency_code,
        kind=Kind.EXPIRE_PENDING,
        pending_id=pending.id,
        code=pending.code,
    )


def decide_batch(state: BatchState, requests: list[list[TransferCommand]]) -> list[list[Outcome]]:
    """Apply each request's items in order; chains (linked items) are all-or-nothing."""
    return [_decide_request(state, commands) for commands in requests]


def _decide_request(state: BatchState, commands: list[TransferCommand]) -> list[Outcome]:
    outcomes: list[Outcome] = []
    chain_start = 0
    while chain_start < len(commands):
        chain_end = chain_start
        while chain_end < len(commands) and commands[chain_end].linked:
            chain_end += 1
        if chain_end == len(commands):  # the last item is linked: the chain never closes
            message = "the last item has linked=true; set linked=false on the last item of each chain"
            outcomes.extend(
                Outcome(ItemStatus.FAILED, failure=Failure.LINKED_CHAIN_OPEN, failure_message=message)
                for _ in commands[chain_start:]
            )
            break
        outcomes.extend(_decide_chain(state, commands[chain_start : chain_end + 1]))
        chain_start = chain_end + 1
    return outcomes


def _decide_chain(state: BatchState, chain: list[TransferCommand]) -> list[Outcome]:
    undo: list[tuple] = []
    postings_mark = len(state.postings)
    failures_mark = len(state.new_failures)
    outcomes: list[Outcome] = []
    for command in chain:
        outcome = _decide_item(state, command, undo)
        outcomes.append(outcome)
        if outcome.status is ItemStatus.FAILED and len(chain) > 1:
            _rollback(state, undo, postings_mark, failures_mark)
            # The failing item's own answer is still remembered under its id.
            if outcome.failure in REMEMBERED_FAILURES:
                _remember(state, command, outcome)
            failed_at = len(outcomes) - 1
            message = f"item {chain[failed_at].id!r} of this linked chain failed with {outcome.failure.name}"
            return [
                outcome
                if index == failed_at
                else Outcome(ItemStatus.FAILED, failure=Failure.LINKED_EVENT_FAILED, failure_message=message)
                for index in range(len(chain))
            ]
    return outcomes


def _rollback(state: BatchState, undo: list[tuple], postings_mark: int, failures_mark: int) -> None:
    for entry in reversed(undo):
        what = entry[0]
        if what == "balance":
            state.balances[entry[1]] = entry[2]
        elif what == "transfer":
            del state.transfers[entry[1]]
        elif what == "hold":
            if entry[2] is None:
                del state.hold_states[entry[1]]
            else:
                state.hold_states[entry[1]] = entry[2]
        elif what == "reversed":
            state.reversed_totals[entry[1]] -= entry[2]
    del state.postings[postings_mark:]
    for transfer_id, _ in state.new_failures[failures_mark:]:
        del state.remembered_failures[transfer_id]
    del state.new_failures[failures_mark:]


def _remember(state: BatchState, command: TransferCommand, outcome: Outcome) -> None:
    # A failure already on record (an earlier call, or earlier in this batch) is the first
    # answer; storing it again would break the unique id, so it is only ever written once.
    if command.id.startswith(SYSTEM_ID_PREFIX) or command.id in state.remembered_failures:
        return
    remembered = RememberedFailure(command.content(), outcome.failure, outcome.failure_field, outcome.failure_message)
    state.remembered_failures[command.id] = remembered
    state.new_failures.append((command.id, remembered))


def _decide_item(state: BatchState, command: TransferCommand, undo: list[tuple]) -> Outcome:
    existing = state.transfers.get(command.id)
    if existing is not None:
        return _compare_existing(state, command, existing)
    remembered = state.remembered_failures.get(command.id)
    if remembered is not None:
        differing = _first_difference(command.content(), remembered.content)
        if differing:
            return _reused(command.id, differing)
        return Outcome(
            ItemStatus.FAILED,
            failure=remembered.failure,
            failure_field=remembered.failure_field,
            failure_message=remembered.failure_message,
        )
    try:
        transfer = _apply(state, command, undo)
    except _ItemFailed as failed:
        outcome = Outcome(
            ItemStatus.FAILED,
            failure=failed.failure,
            failure_field=failed.failure_field,
            failure_message=failed.message,
        )
        if failed.failure in REMEMBERED_FAILURES and not command.linked:
            _remember(state, command, outcome)
        return outcome
    return Outcome(ItemStatus.CREATED, transfer=transfer)


def _reused(transfer_id: str, differing: str) -> Outcome:
    differing = f"metadata.{differing}" if differing in _METADATA_FIELDS else differing
    return Outcome(
        ItemStatus.FAILED,
        failure=Failure.ID_REUSED_WITH_DIFFERENT_CONTENT,
        failure_field=differing,
        failure_message=(
            f"transfer id {transfer_id!r} was already used with a different {differing}; "
            "use a new id for a new transfer"
        ),
    )


def _first_difference(content: dict[str, object], stored: dict[str, object]) -> str:
    for name in _CONTENT_FIELDS:
        if content.get(name) != stored.get(name, _CONTENT_DEFAULTS.get(name)):
            return name
    return ""


def _compare_existing(state: BatchState, command: TransferCommand, existing: Transfer) -> Outcome:
    for name in _CONTENT_FIELDS:
        given = getattr(command, name)
        stored = getattr(existing, name, None)
        if name in ("debit_account_id", "credit_account_id", "currency_code") and command.kind in (
            Kind.POST_PENDING,
            Kind.VOID_PENDING,
        ):
            if given and given != stored:
                return _reused(command.id, name)
            continue
        if name == "amount" and command.kind is Kind.VOID_PENDING:
            continue
        if name == "code" and not given and command.kind in (Kind.POST_PENDING, Kind.VOID_PENDING):
            continue
        resolves = command.kind in (Kind.POST_PENDING, Kind.VOID_PENDING)
        if name in _METADATA_FIELDS and resolves and _metadata_empty(command):
            continue
        if given != stored:
            return _reused(command.id, name)
    return Outcome(ItemStatus.ALREADY_EXISTS, transfer=existing)


def _metadata_empty(command: TransferCommand) -> bool:
    return not any(getattr(command, name) for name in _METADATA_FIELDS)


def _account(state: BatchState, account_id: str, failure: Failure, role: str) -> Account:
    account = state.accounts.get(account_id)
    if account is None:
        raise _ItemFailed(failure, f"{role} account {account_id!r} does not exist", f"{role}_account_id")
    return account


def _apply(state: BatchState, command: TransferCommand, undo: list[tuple]) -> Transfer:
    if command.kind in (Kind.POST_PENDING, Kind.VOID_PENDING, Kind.EXPIRE_PENDING):
        return _resolve_pending(state, command, undo)
    debit = _account(state, command.debit_account_id, Failure.DEBIT_ACCOUNT_NOT_FOUND, "debit")
    credit = _account(state, command.credit_account_id, Failure.CREDIT_ACCOUNT_NOT_FOUND, "credit")
    if debit.id == credit.id:
        raise _ItemFailed(Failure.ACCOUNTS_MUST_BE_DIFFERENT, "debit and credit accounts are the same")
    if debit.currency_code != credit.currency_code:
        raise _ItemFailed(
            Failure.CURRENCY_MISMATCH,
            f"debit account is in {debit.currency_code}, credit account in {credit.currency_code}",
            "credit_account_id",
        )
    if command.currency_code != debit.currency_code:
        raise _ItemFailed(
            Failure.CURRENCY_MISMATCH,
            f"transfer currency {command.currency_code} differs from the accounts' {debit.currency_code}",
            "currency_code",
        )
    if command.reverses_transfer_id:
        _check_reversal(state, command)
    pending = command.kind is Kind.PENDING
    expires_at_us = state.now_us + command.timeout_seconds * 1_000_000 if pending else None
    transfer = Transfer(
        id=command.id,
        debit_account_id=debit.id,
        credit_account_id=credit.id,
        amount=command.amount,
        currency_code=command.currency_code,
        kind=command.kind,
        code=command.code,
        timeout_seconds=command.timeout_seconds,
        expires_at_us=expires_at_us,
        reverses_transfer_id=command.reverses_transfer_id,
        partner_id=command.partner_id,
        store_id=command.store_id,
        terminal_id=command.terminal_id,
        receipt_id=command.receipt_id,
        member_id=command.member_id,
        tier_bonus_points=command.tier_bonus_points,
        hold_state=HoldState.PENDING if pending else HoldState.NONE,
    )
    amount = command.amount
    debit_after = state.balances[debit.id].copy()
    credit_after = state.balances[credit.id].copy()
    if pending:
        debit_after.debits_pending += amount
        credit_after.credits_pending += amount
    else:
        debit_after.debits_posted += amount
        credit_after.credits_posted += amount
    _check_bounds(debit, debit_after, credit, credit_after)
    _commit(state, transfer, debit_after, credit_after, 0 if pending else amount, amount if pending else 0, undo)
    if pending:
        undo.append(("hold", transfer.id, state.hold_states.get(transfer.id)))
        state.hold_states[transfer.id] = HoldState.PENDING
    if command.reverses_transfer_id:
        state.reversed_totals[command.reverses_transfer_id] = (
            state.reversed_totals.get(command.reverses_transfer_id, 0) + amount
        )
        undo.append(("reversed", command.reverses_transfer_id, amount))
    return transfer


def _check_bounds(debit: Account, debit_after: Balance, credit: Account, credit_after: Balance) -> None:
    if debit_after.overflows() or credit_after.overflows():
        raise _ItemFailed(Failure.BALANCE_OVERFLOW, "a balance would exceed the 64-bit range", "amount")
    for account, after in ((debit, debit_after), (credit, credit_after)):
        if not after.within_bounds(account):
            raise _ItemFailed(
                Failure.INSUFFICIENT_FUNDS,
                f"account {account.id!r} has insufficient available balance "
                f"({after.available(account.normal_side)} after this transfer)",
                "amount",
            )


def _check_reversal(state: BatchState, command: TransferCommand) -> None:
    original = state.transfers.get(command.reverses_transfer_id)
    if original is None:
        raise _ItemFailed(
            Failure.REVERSED_TRANSFER_NOT_FOUND,
            f"transfer {command.reverses_transfer_id!r} to reverse does not exist",
            "reverses_transfer_id",
        )
    if original.kind not in (Kind.POSTED, Kind.POST_PENDING):
        raise _ItemFailed(
            Failure.REVERSED_TRANSFER_NOT_POSTED,
            f"transfer {original.id!r} moved no posted value; void a hold instead of reversing it",
            "reverses_transfer_id",
        )
    if command.debit_account_id != original.credit_account_id or command.credit_account_id != original.debit_account_id:
        raise _ItemFailed(
            Failure.REVERSAL_ACCOUNTS_MISMATCH,
            f"a reversal of {original.id!r} must debit {original.credit_account_id!r} "
            f"and credit {original.debit_account_id!r}",
            "debit_account_id",
        )
    if original.code == _EXPIRY_CODE and state.now_us - original.committed_at_us > state.reinstatement_window_us:
        raise _ItemFailed(
            Failure.REINSTATEMENT_WINDOW_CLOSED,
            f"expiry {original.id!r} is older than the {state.reinstatement_window_us // 86_400_000_000}-day "
            "reinstatement window",
            "reverses_transfer_id",
        )
    already = state.reversed_totals.get(original.id, 0)
    if already + command.amount > original.amount:
        raise _ItemFailed(
            Failure.REVERSAL_EXCEEDS_ORIGINAL,
            f"{original.id!r} moved {original.amount}, {already} of it already reversed; "
            f"at most {original.amount - already} can still be reversed",
            "amount",
        )


def _resolve_pending(state: BatchState, command: TransferCommand, undo: list[tuple]) -> Transfer:
    pending = state.transfers.get(command.pending_id)
    if pending is None:
        raise _ItemFailed(
            Failure.PENDING_TRANSFER_NOT_FOUND, f"pending transfer {command.pending_id!r} does not exist", "pending_id"
        )
    if pending.kind is not Kind.PENDING:
        raise _ItemFailed(
            Failure.PENDING_TRANSFER_NOT_PENDING, f"transfer {pending.id!r} is not a pending transfer", "pending_id"
        )
    for name in ("debit_account_id", "credit_account_id", "currency_code"):
        given = getattr(command, name)
        if given and given != getattr(pending, name):
            raise _ItemFailed(
                Failure.PENDING_TRANSFER_MISMATCH,
                f"{name} {given!r} differs from the pending transfer's {getattr(pending, name)!r}",
                name,
            )
    hold_state = state.hold_states.get(pending.id, HoldState.PENDING)
    if hold_state is not HoldState.PENDING:
        failure = _RESOLVED_STATE_FAILURE[hold_state]
        raise _ItemFailed(
            failure, f"pending transfer {pending.id!r} is already {hold_state.name.lower()}", "pending_id"
        )
    if command.kind is not Kind.EXPIRE_PENDING and state.now_us >= (pending.expires_at_us or 0):
        raise _ItemFailed(Failure.HOLD_EXPIRED, f"the hold {pending.id!r} has expired", "pending_id")
    held = pending.amount
    posted = command.amount if command.kind is Kind.POST_PENDING else 0
    if posted > held:
        raise _ItemFailed(Failure.POST_AMOUNT_EXCEEDS_PENDING, f"cannot post {posted}: only {held} is held", "amount")
    debit = state.accounts[pending.debit_account_id]
    credit = state.accounts[pending.credit_account_id]
    debit_after = state.balances[debit.id].copy()
    credit_after = state.balances[credit.id].copy()
    debit_after.debits_pending -= held
    credit_after.credits_pending -= held
    debit_after.debits_posted += posted
    credit_after.credits_posted += posted
    _check_bounds(debit, debit_after, credit, credit_after)
    metadata_source = pending if _metadata_empty(command) else command
    amount = posted if command.kind is Kind.POST_PENDING else held
    metadata = {name: getattr(metadata_source, name) for name in _METADATA_FIELDS}
    # A hold's bonus share carried over to a partial capture stays within what was posted.
    metadata["tier_bonus_points"] = min(metadata["tier_bonus_points"], amount)
    transfer = Transfer(
        id=command.id,
        debit_account_id=debit.id,
        credit_account_id=credit.id,
        amount=amount,
        currency_code=pending.currency_code,
        kind=command.kind,
        code=command.code or pending.code,
        pending_id=pending.id,
        **metadata,
    )
    _commit(state, transfer, debit_after, credit_after, posted, -held, undo)
    undo.append(("hold", pending.id, hold_state))
    state.hold_states[pending.id] = _RESOLUTION_OF_KIND[command.kind]
    return transfer


def _commit(
    state: BatchState,
    transfer: Transfer,
    debit_after: Balance,
    credit_after: Balance,
    posted_amount: int,
    pending_change: int,
    undo: list[tuple],
) -> None:
    undo.append(("balance", transfer.debit_account_id, state.balances[transfer.debit_account_id]))
    undo.append(("balance", transfer.credit_account_id, state.balances[transfer.credit_account_id]))
    undo.append(("transfer", transfer.id))
    state.balances[transfer.debit_account_id] = debit_after
    state.balances[transfer.credit_account_id] = credit_after
    state.transfers[transfer.id] = transfer
    state.touched_accounts.add(transfer.debit_account_id)
    state.touched_accounts.add(transfer.credit_account_id)
    state.postings.append(Posting(transfer, debit_after, credit_after, posted_amount, pending_change))
