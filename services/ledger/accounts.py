"""Use cases: register currencies and create accounts (all-or-nothing batches)."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.db import Database
from services.common.errors import AlreadyExists
from services.ledger import store
from services.ledger.model import Account, Failure, ItemStatus


@dataclass(frozen=True, slots=True)
class AccountOutcome:
    status: ItemStatus
    account: Account | None = None
    failure: Failure | None = None
    failure_field: str = ""


def register_currency(database: Database, code: str, scale: int, owner_id: str):
    def work(connection):
        existing = store.get_currency(connection, code)
        if existing is not None:
            for name, value in (("scale", scale), ("owner_id", owner_id)):
                if getattr(existing, name) != value:
                    raise AlreadyExists(
                        "CURRENCY_EXISTS_WITH_DIFFERENT_CONTENT",
                        f"currency {code} is already registered with a different {name}",
                        field=name,
                        code=code,
                    )
            return existing, False
        store.insert_currency(connection, code, scale, owner_id, store.clock_now_us(connection))
        return store.get_currency(connection, code), True

    return database.write(work, retry_unique_violation=True)


def create_accounts(database: Database, requested: list[Account]) -> list[AccountOutcome]:
    def work(connection):
        existing = store.get_accounts(connection, (a.id for a in requested))
        known_currencies = store.currency_codes(connection, (a.currency_code for a in requested))
        outcomes: list[AccountOutcome] = []
        new: dict[str, Account] = {}
        for account in requested:
            outcomes.append(_decide(account, existing.get(account.id) or new.get(account.id), known_currencies))
            if outcomes[-1].status is ItemStatus.CREATED:
                new[account.id] = account
        if any(o.status is ItemStatus.FAILED for o in outcomes):
            # All or nothing: nothing of the batch is written, so nothing may be reported CREATED.
            return [
                AccountOutcome(ItemStatus.FAILED, failure=Failure.LINKED_EVENT_FAILED)
                if o.status is ItemStatus.CREATED
                else o
                for o in outcomes
            ]
        now_us = store.clock_now_us(connection)
        if new:
            store.insert_accounts(connection, list(new.values()), now_us)
        stored = store.get_accounts(connection, (a.id for a in requested))
        return [AccountOutcome(o.status, stored[a.id]) for o, a in zip(outcomes, requested, strict=True)]

    return database.write(work, retry_unique_violation=True)


def _decide(account: Account, existing: Account | None, known_currencies: set[str]) -> AccountOutcome:
    if existing is None:
        if account.currency_code not in known_currencies:
            return AccountOutcome(ItemStatus.FAILED, failure=Failure.CURRENCY_NOT_FOUND, failure_field="currency_code")
        return AccountOutcome(ItemStatus.CREATED)
    for name in ("currency_code", "normal_side", "no_overdraft", "owner_id", "kind"):
        if getattr(existing, name) != getattr(account, name):
            return AccountOutcome(
                ItemStatus.FAILED, failure=Failure.ACCOUNT_EXISTS_WITH_DIFFERENT_CONTENT, failure_field=name
            )
    return AccountOutcome(ItemStatus.ALREADY_EXISTS)
