"""Use case: audit the ledger's invariants that settlement relies on, naming each broken one."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from services.settlement import model
from services.settlement.context import SettlementContext
from services.settlement.periods import _settlement_accounts


@dataclass(frozen=True, slots=True)
class Finding:
    invariant: str
    currency_code: str
    message: str


@dataclass(frozen=True, slots=True)
class AuditReport:
    findings: tuple[Finding, ...]
    roll_forwards: tuple[model.RollForward, ...]
    wallet_totals: dict[str, int]
    commit_sequence: int


async def audit(context: SettlementContext) -> AuditReport:
    findings: list[Finding] = []
    trial = await context.ledger.trial_balance()
    for totals in trial.currencies:
        if not totals.balanced:
            findings.append(
                Finding(
                    "CURRENCY_NOT_BALANCED",
                    totals.currency_code,
                    f"posted debits {totals.debits_posted} vs credits {totals.credits_posted},"
                    f" pending debits {totals.debits_pending} vs credits {totals.credits_pending}",
                )
            )
    owners = await context.ledger.currency_owners()
    accounts = await _settlement_accounts(context)
    wallets = await context.ledger.list_accounts(kind=model.KIND_MEMBER_WALLET)
    probe = wallets[0].id if wallets else next(iter(accounts), "")
    wallet_totals: dict[str, int] = defaultdict(int)
    roll_forwards = []
    if probe:
        as_of_us = await context.ledger.clock_us(probe) - context.audit_lag_seconds * 1_000_000
        balances = await context.ledger.balances_as_of([w.id for w in wallets], as_of_us)
        currency_of = {w.id: w.currency_code for w in wallets}
        for balance in balances:
            wallet_totals[currency_of[balance.account_id]] += balance.posted
        lines, _ = await context.ledger.activity_without_tier_bonus(0, as_of_us + 1, sorted(accounts))
        for code in sorted(c for c in owners if c != model.MONEY_CURRENCY_CODE):
            rf = model.roll_forward(code, 0, lines)
            roll_forwards.append(rf)
            if not rf.identity_holds():
                findings.append(Finding("ROLL_FORWARD_BROKEN", code, "the roll-forward does not add up"))
            if rf.closing_outstanding != wallet_totals.get(code, 0):
                findings.append(
                    Finding(
                        "OUTSTANDING_MISMATCH",
                        code,
                        f"outstanding from flows {rf.closing_outstanding} != sum of member wallets"
                        f" {wallet_totals.get(code, 0)}",
                    )
                )
    return AuditReport(tuple(findings), tuple(roll_forwards), dict(wallet_totals), trial.commit_sequence)
