"""Who may do what on the ledger: the caller is the common name of its client certificate.

The table (README: Identities and authorization):

- `partners` posts EARN, REDEEM, REVERSAL and CONVERSION transfers between member wallets,
  partner issuance and redemption accounts and the operator's exchange accounts, and captures,
  voids and reverses only transfers of those codes; creates those accounts (and the breakage
  account, never an EUR one) and registers currencies while the operator onboards a partner
  through partners' admin API; reads balances, transfers and account entries, and follows
  expiry notices (WatchExpiryNotices) to send members their reminders.
- `settlement` posts SETTLEMENT transfers on EUR settlement accounts, creates those accounts,
  and reads everything.
- `operator` does the rest: any currency, account and transfer, including ADJUSTMENT and EXPIRY.
- Anyone else gets PERMISSION_DENIED.

Transfers are checked inside the batch's transaction against the accounts it read, so an
account's kind cannot change between the check and the write (accounts are immutable anyway).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import grpc

from coalition.ledger.v1 import ledger_pb2
from services.common.errors import PermissionDenied
from services.common.tls import OPERATOR, caller_identity
from services.ledger.model import Account, Kind, Transfer, TransferCommand

PARTNERS = "partners"
SETTLEMENT = "settlement"

WALLET = "member_wallet"
ISSUANCE = "partner_issuance"
REDEMPTION = "partner_redemption"
EXCHANGE = "operator_exchange"
BREAKAGE = "operator_breakage"
PARTNER_SETTLEMENT = "partner_settlement"
OPERATOR_SETTLEMENT = "operator_settlement"
SETTLEMENT_CURRENCY = "EUR"

_ALL = None  # no restriction
_READS = frozenset(
    {
        "ListCurrencies",
        "GetAccount",
        "ListAccounts",
        "GetTransfers",
        "GetBalances",
        "ListAccountEntries",
        "GetTrialBalance",
        "GetActivitySummary",
        "WatchTransfers",
        "WatchExpiryNotices",
        "ListExpiryPolicies",
        "ListLots",
        "ListExpiringSoon",
        "GetBreakageSummary",
        "GetOutstandingSummary",
    }
)
_RESOLVING = (Kind.POST_PENDING, Kind.VOID_PENDING)
_CODE_NAMES = {value: name.removeprefix("TRANSFER_CODE_") for name, value in ledger_pb2.TransferCode.items()}


@dataclass(frozen=True, slots=True)
class Grant:
    """What one identity may do; None in a field means anything."""

    identity: str
    methods: frozenset[str] | None
    transfer_codes: frozenset[int] | None = frozenset()
    transfer_account_kinds: frozenset[str] | None = frozenset()
    created_account_kinds: frozenset[str] | None = frozenset()
    currency: str | None = _ALL  # the only currency its transfers and accounts may use
    excluded_currency: str | None = None  # a currency it may not create accounts in

    def require_method(self, method: str) -> None:
        if self.methods is not None and method not in self.methods:
            raise PermissionDenied(
                "METHOD_NOT_PERMITTED",
                f"caller {self.identity!r} may not call {method} (README: Identities and authorization)",
                caller=self.identity,
                method=method,
            )

    def account_denial(self, account: Account, index: int) -> PermissionDenied | None:
        if self.created_account_kinds is not None and account.kind not in self.created_account_kinds:
            allowed = ", ".join(sorted(self.created_account_kinds)) or "none"
            return _denied(
                "ACCOUNT_NOT_PERMITTED",
                f"caller {self.identity!r} may not create accounts of kind {account.kind!r} "
                f"(accounts[{index}]; it may create: {allowed})",
                self.identity,
            )
        if self.currency is not None and account.currency_code != self.currency:
            return _denied(
                "ACCOUNT_NOT_PERMITTED",
                f"caller {self.identity!r} may only create {self.currency} accounts (accounts[{index}])",
                self.identity,
            )
        if account.currency_code == self.excluded_currency:
            return _denied(
                "ACCOUNT_NOT_PERMITTED",
                f"caller {self.identity!r} may not create {account.currency_code} accounts (accounts[{index}])",
                self.identity,
            )
        return None

    def transfer_denial(
        self,
        command: TransferCommand,
        index: int,
        accounts: Mapping[str, Account],
        referenced: Mapping[str, Transfer | TransferCommand | None],
    ) -> PermissionDenied | None:
        """Why this caller may not post `command`, or None.

        `referenced` maps the holds and reversed transfers the batch knows to what it knows of
        them: the committed transfer, the command of this same call that creates it, or None
        when another call of the batch creates it (never this caller's to resolve). A capture or
        void is judged by its hold's code and accounts, a reversal also by the original's code.
        Unknown accounts and references pass: the item fails NOT_FOUND in the same transaction.
        """
        debit_id, credit_id = command.debit_account_id, command.credit_account_id
        codes = [command.code] if command.code else []
        reference_id = command.pending_id if command.kind in _RESOLVING else command.reverses_transfer_id
        if reference_id and reference_id in referenced:
            original = referenced[reference_id]
            if original is None:
                return _denied(
                    "TRANSFER_NOT_PERMITTED",
                    f"transfers[{index}] refers to {reference_id!r}, which another call creates in the same batch",
                    self.identity,
                )
            codes.append(original.code)
            if command.kind in _RESOLVING:
                debit_id, credit_id = original.debit_account_id, original.credit_account_id
        for code in codes:
            if self.transfer_codes is not None and code not in self.transfer_codes:
                allowed = ", ".join(sorted(_CODE_NAMES[c] for c in self.transfer_codes)) or "none"
                what = "post" if code == command.code else "resolve or reverse"
                return _denied(
                    "TRANSFER_NOT_PERMITTED",
                    f"caller {self.identity!r} may not {what} {_CODE_NAMES.get(code, code)} transfers "
                    f"(transfers[{index}]; it may post: {allowed})",
                    self.identity,
                )
        for side, account_id in (("debit", debit_id), ("credit", credit_id)):
            account = accounts.get(account_id)
            if account is None:
                continue
            kind_denied = self.transfer_account_kinds is not None and account.kind not in self.transfer_account_kinds
            currency_denied = self.currency is not None and account.currency_code != self.currency
            if kind_denied or currency_denied:
                return _denied(
                    "TRANSFER_NOT_PERMITTED",
                    f"caller {self.identity!r} may not move value on {account.kind or 'unclassified'} "
                    f"{account.currency_code} account {account_id!r} (transfers[{index}].{side}_account_id)",
                    self.identity,
                )
        return None


def _denied(reason: str, message: str, identity: str) -> PermissionDenied:
    return PermissionDenied(reason, message, caller=identity)


_POS_KINDS = frozenset({WALLET, ISSUANCE, REDEMPTION, EXCHANGE})
GRANTS: dict[str, Grant] = {
    OPERATOR: Grant(
        OPERATOR, methods=None, transfer_codes=None, transfer_account_kinds=None, created_account_kinds=None
    ),
    PARTNERS: Grant(
        PARTNERS,
        methods=frozenset(
            {
                "RegisterCurrency",
                "ListCurrencies",
                "CreateAccounts",
                "GetAccount",
                "CreateTransfers",
                "GetTransfers",
                "GetBalances",
                "ListAccountEntries",
                "ListExpiryPolicies",
                "ListLots",
                "WatchExpiryNotices",  # partners sends the "points expiring soon" reminders
            }
        ),
        transfer_codes=frozenset(
            {
                ledger_pb2.TRANSFER_CODE_EARN,
                ledger_pb2.TRANSFER_CODE_REDEEM,
                ledger_pb2.TRANSFER_CODE_REVERSAL,
                ledger_pb2.TRANSFER_CODE_CONVERSION,
            }
        ),
        transfer_account_kinds=_POS_KINDS,
        created_account_kinds=_POS_KINDS | {BREAKAGE},
        # Money accounts are settlement's: an account partners made there could squat the id of one.
        excluded_currency=SETTLEMENT_CURRENCY,
    ),
    SETTLEMENT: Grant(
        SETTLEMENT,
        methods=_READS | {"CreateAccounts", "CreateTransfers"},
        transfer_codes=frozenset({ledger_pb2.TRANSFER_CODE_SETTLEMENT}),
        transfer_account_kinds=frozenset({PARTNER_SETTLEMENT, OPERATOR_SETTLEMENT}),
        created_account_kinds=frozenset({PARTNER_SETTLEMENT, OPERATOR_SETTLEMENT}),
        currency=SETTLEMENT_CURRENCY,
    ),
}


def authorize(context: grpc.aio.ServicerContext, method: str) -> Grant:
    """The caller's grant, once it may call `method` at all; PERMISSION_DENIED otherwise."""
    identity = caller_identity(context)
    grant = GRANTS.get(identity or "")
    if grant is None:
        raise PermissionDenied(
            "UNKNOWN_CALLER",
            f"the ledger serves only partners, settlement and operator identities; this certificate names {identity!r}",
            caller=identity or "",
        )
    grant.require_method(method)
    return grant
