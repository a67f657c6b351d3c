"""Small builders for ledger requests used across the ledger tests."""

from __future__ import annotations

import uuid

from coalition.ledger.v1 import ledger_pb2 as pb

CREDIT = pb.ACCOUNT_SIDE_CREDIT
DEBIT = pb.ACCOUNT_SIDE_DEBIT
CREATED = pb.ITEM_STATUS_CREATED
EXISTS = pb.ITEM_STATUS_ALREADY_EXISTS
FAILED = pb.ITEM_STATUS_FAILED
TIMEOUT = 10


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def register_currency(ledger, code: str = "PTS", scale: int = 0, owner_id: str = "operator"):
    return ledger.RegisterCurrency(
        pb.RegisterCurrencyRequest(currency=pb.Currency(code=code, scale=scale, owner_id=owner_id)), timeout=TIMEOUT
    )


def account(account_id: str, side=CREDIT, no_overdraft: bool = False, currency: str = "PTS", owner="", kind=""):
    return pb.Account(
        id=account_id, currency_code=currency, normal_side=side, no_overdraft=no_overdraft, owner_id=owner, kind=kind
    )


def create_accounts(ledger, *accounts):
    response = ledger.CreateAccounts(pb.CreateAccountsRequest(accounts=list(accounts)), timeout=TIMEOUT)
    assert all(r.status in (CREATED, EXISTS) for r in response.results), response
    return response


def setup_pts(ledger, wallets: int = 2, no_overdraft: bool = True):
    """PTS currency, one issuance account (debit side, unbounded) and `wallets` member wallets."""
    register_currency(ledger)
    issuance = unique("issuance")
    wallet_ids = [unique("wallet") for _ in range(wallets)]
    create_accounts(
        ledger,
        account(issuance, DEBIT, kind="partner_issuance"),
        *(account(w, CREDIT, no_overdraft=no_overdraft, kind="member_wallet") for w in wallet_ids),
    )
    return issuance, wallet_ids


def posted(transfer_id, debit, credit, amount, code=pb.TRANSFER_CODE_EARN, currency="PTS", **extra):
    return pb.TransferInput(
        id=transfer_id,
        debit_account_id=debit,
        credit_account_id=credit,
        amount=amount,
        currency_code=currency,
        kind=pb.TRANSFER_KIND_POSTED,
        code=code,
        **extra,
    )


def pending(transfer_id, debit, credit, amount, timeout_seconds=600, code=pb.TRANSFER_CODE_REDEEM, **extra):
    return pb.TransferInput(
        id=transfer_id,
        debit_account_id=debit,
        credit_account_id=credit,
        amount=amount,
        currency_code="PTS",
        kind=pb.TRANSFER_KIND_PENDING,
        timeout_seconds=timeout_seconds,
        code=code,
        **extra,
    )


def post(transfer_id, pending_id, amount):
    return pb.TransferInput(id=transfer_id, pending_id=pending_id, amount=amount, kind=pb.TRANSFER_KIND_POST_PENDING)


def void(transfer_id, pending_id):
    return pb.TransferInput(id=transfer_id, pending_id=pending_id, kind=pb.TRANSFER_KIND_VOID_PENDING)


def transfer(ledger, *items):
    return list(ledger.CreateTransfers(pb.CreateTransfersRequest(transfers=list(items)), timeout=TIMEOUT).results)


def balance(ledger, account_id: str) -> pb.Balance:
    return ledger.GetBalances(pb.GetBalancesRequest(account_ids=[account_id]), timeout=TIMEOUT).balances[0]
