"""Times at the ends of the Timestamp range a caller may send (years 0001..9999 UTC) are shown
in the coalition's zone where that zone can show them and in UTC where it cannot: 9999-12-31
east of UTC is in year 10000. `make fuzz` found PreviewStatement and ClosePeriod answering
INTERNAL for such a window once a period was closed (the overlap and contiguity messages)."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from services.settlement import scheme

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
LOS_ANGELES = ZoneInfo("America/Los_Angeles")
LAST_US = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999Z
FIRST_US = -62_135_596_800_000_000  # 0001-01-01T00:00:00Z
MAY_2026_US = 1_777_586_400_000_000  # 2026-05-01T00:00:00+02:00


def test_a_time_the_zone_cannot_show_is_shown_in_utc_and_others_in_the_zone():
    assert scheme.iso(LAST_US, AMSTERDAM) == "9999-12-31T23:59:59.999999+00:00"
    assert scheme.iso(FIRST_US, LOS_ANGELES) == "0001-01-01T00:00:00+00:00"
    assert scheme.iso(LAST_US, LOS_ANGELES) == "9999-12-31T15:59:59.999999-08:00"
    assert scheme.iso(MAY_2026_US, AMSTERDAM) == "2026-05-01T00:00:00+02:00"


def test_a_window_at_the_ends_is_no_calendar_month_and_its_warnings_name_its_times():
    assert scheme.month_id(LAST_US - 1, LAST_US, AMSTERDAM) is None
    december_9999 = 253_399_622_400_000_000  # 9999-12-01T00:00:00Z
    assert scheme.month_id(december_9999, LAST_US + 1, ZoneInfo("UTC")) is None
    span = scheme.ClosedSpan("p1", MAY_2026_US, "p1", MAY_2026_US + 86_400_000_000)
    warning = scheme.overlap_warning(span, "edge", FIRST_US, LAST_US, AMSTERDAM)
    assert "9999-12-31T23:59:59.999999+00:00" in warning.message
