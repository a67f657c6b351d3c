"""Who may do what on the ledger: the caller is the common name of its client certificate.

The table (README: Identities and authorization):

- `partners` posts EARN, REDEEM, REVERSAL and CONVERSION transfers between member wallets,
  partner issuance and redemption accounts and the operator's exchange accounts; creates
  those accounts (and the breakage account) and registers currencies while the operator
  onboards a partner through partners' admin API; reads balances, transfers and wallet entries.
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
    }
)
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
        return None

    def transfer_denial(
        self,
        command: TransferCommand,
        index: int,
        accounts: Mapping[str, Account],
        transfers: Mapping[str, Transfer],
    ) -> PermissionDenied | None:
        """Why this caller may not post `command`, or None. Unknown accounts pass: the item fails NOT_FOUND."""
        debit_id, credit_id, code = command.debit_account_id, command.credit_account_id, command.code
        if command.kind in (Kind.POST_PENDING, Kind.VOID_PENDING):
            pending = transfers.get(command.pending_id)
            if pending is not None:
                debit_id, credit_id = pending.debit_account_id, pending.credit_account_id
                code = code or pending.code
        if self.transfer_codes is not None and code and code not in self.transfer_codes:
            allowed = ", ".join(sorted(_CODE_NAMES[c] for c in self.transfer_codes)) or "none"
            return _denied(
                "TRANSFER_NOT_PERMITTED",
                f"caller {self.identity!r} may not post {_CODE_NAMES.get(code, code)} transfers "
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
