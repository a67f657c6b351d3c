"""Calendar months in the coalition's time zone, and the audit naming each broken invariant.

Neither needs a server: periods resolve from the context's time zone alone, and the audit is run
against a ledger stand-in whose figures are broken on purpose (a real ledger refuses to be).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

from coalition.ledger.v1 import ledger_pb2 as lpb
from services.common.errors import InvalidArgument
from services.common.timeconv import timestamp_from_micros
from services.settlement import audit, model, periods


def _micros(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp()) * 1_000_000


@pytest.mark.parametrize(
    ("zone", "month", "start", "end"),
    [
        # October in Amsterdam starts in summer time (+02:00) and ends in winter time (+01:00).
        ("Europe/Amsterdam", "2026-10", "2026-10-01T00:00:00+02:00", "2026-11-01T00:00:00+01:00"),
        ("Europe/Amsterdam", "2026-12", "2026-12-01T00:00:00+01:00", "2027-01-01T00:00:00+01:00"),
        ("Europe/Amsterdam", "2026-03", "2026-03-01T00:00:00+01:00", "2026-04-01T00:00:00+02:00"),
        # Another coalition time zone (COALITION_TIME_ZONE) moves the boundaries with it.
        ("America/New_York", "2026-10", "2026-10-01T00:00:00-04:00", "2026-11-01T00:00:00-04:00"),
    ],
)
def test_a_month_id_is_that_calendar_month_in_the_coalition_time_zone(zone, month, start, end):
    context = SimpleNamespace(time_zone=ZoneInfo(zone))
    assert periods.resolve_period(context, month, None, None) == (month, _micros(start), _micros(end))


def test_any_half_open_window_is_a_period_and_bad_ones_are_refused():
    context = SimpleNamespace(time_zone=ZoneInfo("Europe/Amsterdam"))
    assert periods.resolve_period(context, "week-41", 100, 200) == ("week-41", 100, 200)
    for period_id, start, end in (("week-41", 200, 100), ("week-41", 100, None), ("2026-13", None, None)):
        with pytest.raises(InvalidArgument):
            periods.resolve_period(context, period_id, start, end)


class BrokenLedger:
    """The ledger calls the audit makes, answering with figures that break both invariants.

    PTS: 1,000 issued to wallets, but the wallets hold 990. EUR debits and credits differ.
    """

    now_us = 1_800_000_000_000_000

    async def trial_balance(self):
        return lpb.GetTrialBalanceResponse(
            currencies=[
                lpb.CurrencyTotals(currency_code="EUR", debits_posted=500, credits_posted=400, balanced=False),
                lpb.CurrencyTotals(currency_code="PTS", debits_posted=1000, credits_posted=1000, balanced=True),
            ],
            balanced=False,
            commit_sequence=7,
        )

    async def currency_owners(self):
        return {"PTS": "operator", "EUR": "operator"}

    async def list_accounts(self, owner_id="", kind=""):
        accounts = [
            lpb.Account(id="issuance:PTS:fuel", currency_code="PTS", owner_id="fuel", kind="partner_issuance"),
            lpb.Account(id="wallet:PTS:m1", currency_code="PTS", owner_id="m1", kind="member_wallet"),
        ]
        return [a for a in accounts if (not kind or a.kind == kind) and (not owner_id or a.owner_id == owner_id)]

    async def clock_us(self, any_account_id):
        return self.now_us

    async def balances_as_of(self, account_ids, as_of_us):
        return [lpb.Balance(account_id=i, posted=990, as_of_time=timestamp_from_micros(as_of_us)) for i in account_ids]

    async def activity(self, start_us, end_us, account_ids, *original_time_bounds):
        line = model.Activity("issuance:PTS:fuel", "EARN", "PTS", 1000, 0, "fuel", "partner_issuance")
        return [line], 7

    activity_without_tier_bonus = activity  # the audit counts points only


def test_audit_names_every_broken_invariant_with_its_figures():
    context = SimpleNamespace(ledger=BrokenLedger(), audit_lag_seconds=2)
    report = asyncio.run(audit.audit(context))
    assert [(f.invariant, f.currency_code) for f in report.findings] == [
        ("CURRENCY_NOT_BALANCED", "EUR"),
        ("OUTSTANDING_MISMATCH", "PTS"),
    ]
    assert "500" in report.findings[0].message and "400" in report.findings[0].message
    assert "1000" in report.findings[1].message and "990" in report.findings[1].message
    (pts,) = report.roll_forwards
    assert (pts.issued, pts.closing_outstanding) == (1000, 1000)
    assert report.wallet_totals == {"PTS": 990} and report.commit_sequence == 7
