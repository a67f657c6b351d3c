"""`make demo-lifecycle` end to end: its private servers, its simulated clock and its figures.

SQLite only (the scenario always runs on a temporary SQLite database of its own)."""

from __future__ import annotations

import os

from services import lifecycle_demo
from services.ledger import store

DAY_US = 86_400_000_000


def test_the_lifecycle_demo_earns_gives_notice_expires_reinstates_and_upgrades_on_a_simulated_clock():
    environment = dict(os.environ)
    lines: list[str] = []
    figures = lifecycle_demo.run(lines.append)
    text = "\n".join(lines)
    assert "OWN PRIVATE ledger and partners servers" in text and "SIMULATED CLOCK" in text
    assert figures.earned > 0
    # 30 days before the date, the member's month shows the points and the listing names them.
    assert list(figures.expiring_months.values()) == [figures.earned]
    assert figures.listed_expiring_soon == figures.earned
    # The notice came on time: its expiry is the lot's own date.
    assert (figures.notice_amount, figures.notice_expire_us) == (figures.earned, figures.first_expire_us)
    assert (figures.expired, figures.balance_after_expiry, figures.breakage_after_expiry) == (
        figures.earned,
        0,
        figures.earned,
    )
    assert (figures.reinstated, figures.balance_after_reinstatement) == (figures.earned, figures.earned)
    assert figures.breakage_after_reinstatement == 0
    assert figures.new_expire_us - figures.first_expire_us > 35 * 30 * DAY_US  # a new 36-month life
    # A second member crosses Silver (100) with 125 base points, and earns the same basket at x1.25:
    # floor(125 x 1.25) = 156, of which 31 tier bonus; QuoteEarn agrees.
    assert (figures.tier_first_points, figures.tier_after_first) == (125, "Silver")
    assert (figures.tier_quote_points, figures.tier_second_points, figures.tier_second_bonus) == (156, 156, 31)
    # The simulated clock and the scenario's settings are gone afterwards.
    assert store.clock_offset_us == 0
    assert dict(os.environ) == environment
