"""Tiers (DOMAIN.md "Tiers"): the pure rules. A programme currency's tier definition, versioned by
effective time; a member's qualifying totals per calendar month; the evaluation that decides the
member's level at a time; and what a member reads about it. Plain Python, no I/O.

The rules, as the code applies them:
- Qualifying points are the base points of an earn: what the partner's earn rule gives, before
  the tier multiplier. The tier bonus never qualifies (status would otherwise feed itself).
  Qualifying activities count earns with at least one qualifying point.
- Qualifying totals are kept per calendar month (coalition time zone) of the server time the
  event was recorded: an earn adds in its month; a return takes its lines' base points (and,
  when it returns the whole basket, the activity) off in the month of the return; an earn the
  ledger refuses takes off what it added. A month that has ended therefore never changes, so an
  evaluation of a past period gives the same answer whenever it is made.
- A window is a calendar year or the rolling 12 calendar months up to the current one. An
  evaluation period is, respectively, the calendar year or the calendar month; the evaluation
  at the end of a period compares the period's window total with the level's threshold.
- Upgrades take effect at once: once the current window reaches a higher threshold, the next
  earn gets the new multiplier (the earn that crossed it was priced before it qualified).
  Reaching a level is kept until that period's evaluation, whatever happens at the till.
- A downgrade follows an evaluation whose window no longer reaches the level, at the end of that
  period plus the grace months; the member then holds the level that window did reach. Reaching
  the level again before the grace ends keeps it. Returns remove qualifying points and so can
  undo an upgrade only through the next evaluation.
- A member's level is kept by its position in the definition's levels; a new definition version
  applies to evaluations from its effective time (a position above the new top is the top).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from zoneinfo import ZoneInfo

from services.partners.model import DomainError, invalid

MEASURE_POINTS = "qualifying_points"
MEASURE_ACTIVITIES = "qualifying_activities"
WINDOW_CALENDAR_YEAR = "calendar_year"
WINDOW_ROLLING_12_MONTHS = "rolling_12_months"

# ---- Limits ----
TIER_LEVELS_MAX = 10
TIER_NAME_LENGTH_MAX = 64
TIER_THRESHOLD_MAX = 10**12
TIER_MULTIPLIER_MAX = Decimal(10)
TIER_MULTIPLIER_DECIMALS_MAX = 4
TIER_GRACE_MONTHS_MAX = 24
# Months of qualifying totals kept per member and currency: enough for every window an
# evaluation can still look at (a calendar year before last, plus grace).
QUALIFYING_MONTHS_KEPT = 48
# Periods looked ahead when telling a member until when their level holds without more activity.
_LOOKAHEAD_PERIODS_MAX = 40


@dataclass(frozen=True, slots=True)
class TierLevel:
    name: str
    threshold: int  # qualifying points, or activities, in the window
    multiplier: Decimal  # applied to the earn rule's points; >= 1


@dataclass(frozen=True, slots=True)
class TierDefinition:
    currency_code: str
    effective_from_us: int
    measure: str
    window: str
    grace_months: int
    levels: tuple[TierLevel, ...]
    create_time_us: int = 0


def _refuse(message: str, field: str, **metadata: object) -> DomainError:
    return invalid("INVALID_TIER_DEFINITION", message, field=field, **metadata)


def check_definition(definition: TierDefinition) -> None:
    """Refuses a definition that cannot price every earn or rank every member."""
    if definition.measure not in (MEASURE_POINTS, MEASURE_ACTIVITIES):
        raise _refuse("measure must be QUALIFYING_POINTS or QUALIFYING_ACTIVITIES", "definition.measure")
    if definition.window not in (WINDOW_CALENDAR_YEAR, WINDOW_ROLLING_12_MONTHS):
        raise _refuse("window must be CALENDAR_YEAR or ROLLING_12_MONTHS", "definition.window")
    if not 0 <= definition.grace_months <= TIER_GRACE_MONTHS_MAX:
        raise _refuse(f"grace_months must be 0..{TIER_GRACE_MONTHS_MAX}", "definition.grace_months")
    levels = definition.levels
    if not 1 <= len(levels) <= TIER_LEVELS_MAX:
        raise _refuse(f"a definition has 1..{TIER_LEVELS_MAX} levels", "definition.levels")
    if levels[0].threshold != 0:
        raise _refuse("the first level is where every member starts: its threshold must be 0", "definition.levels")
    names: set[str] = set()
    for index, level in enumerate(levels):
        if not 1 <= len(level.name) <= TIER_NAME_LENGTH_MAX or not level.name.isprintable() or level.name in names:
            raise _refuse("level names are 1..64 printable characters, unique", "definition.levels.name", level=index)
        names.add(level.name)
        if not 0 <= level.threshold <= TIER_THRESHOLD_MAX:
            raise _refuse(f"threshold must be 0..{TIER_THRESHOLD_MAX}", "definition.levels.threshold", level=index)
        if index and level.threshold <= levels[index - 1].threshold:
            raise _refuse("thresholds must increase from level to level", "definition.levels.threshold", level=index)
        multiplier = level.multiplier
        if not multiplier.is_finite() or not Decimal(1) <= multiplier <= TIER_MULTIPLIER_MAX:
            raise _refuse(f"multiplier must be 1..{TIER_MULTIPLIER_MAX}", "definition.levels.multiplier", level=index)
        if multiplier.as_tuple().exponent < -TIER_MULTIPLIER_DECIMALS_MAX:  # type: ignore[operator]
            raise _refuse(
                f"multiplier has at most {TIER_MULTIPLIER_DECIMALS_MAX} decimal places",
                "definition.levels.multiplier",
                level=index,
            )
        if index and multiplier < levels[index - 1].multiplier:
            raise _refuse("a higher level never earns less: multipliers must not decrease", "definition.levels")


def definition_in_effect(definitions: Sequence[TierDefinition], at_us: int) -> TierDefinition | None:
    """The version with the latest effective time at or before `at_us`."""
    in_effect = [definition for definition in definitions if definition.effective_from_us <= at_us]
    return max(in_effect, key=lambda definition: definition.effective_from_us, default=None)


# ---- Calendar: months and periods in the coalition's time zone ----
def month_of(at_us: int, zone: ZoneInfo) -> int:
    """Months since year 0 (year * 12 + month - 1) of the local date at `at_us`."""
    local = dt.datetime.fromtimestamp(at_us / 1_000_000, dt.UTC).astimezone(zone)
    return local.year * 12 + local.month - 1


def month_start_us(month: int, zone: ZoneInfo) -> int:
    year, index = divmod(month, 12)
    start = dt.datetime(year, index + 1, 1, tzinfo=zone)
    return int(start.timestamp()) * 1_000_000


def _period_of_month(definition: TierDefinition, month: int) -> int:
    return month // 12 if definition.window == WINDOW_CALENDAR_YEAR else month


def _first_month(definition: TierDefinition, period: int) -> int:
    return period * 12 if definition.window == WINDOW_CALENDAR_YEAR else period


def _downgrade_us(definition: TierDefinition, period: int, zone: ZoneInfo) -> int:
    """When a failed evaluation at the end of `period` takes effect: that end plus the grace months."""
    return month_start_us(_first_month(definition, period + 1) + definition.grace_months, zone)


def _window_months(definition: TierDefinition, period: int) -> range:
    if definition.window == WINDOW_CALENDAR_YEAR:
        return range(period * 12, period * 12 + 12)
    return range(period - 11, period + 1)


# ---- Qualifying totals ----
Months = Mapping[int, tuple[int, int]]  # month -> (qualifying points, qualifying activities), signed


def qualifying_in(definition: TierDefinition, months: Months, period: int) -> int:
    """The window's total of the definition's measure (never below 0)."""
    column = 0 if definition.measure == MEASURE_POINTS else 1
    return max(0, sum(months.get(month, (0, 0))[column] for month in _window_months(definition, period)))


def add_qualifying(months: Months, month: int, points: int, activities: int) -> dict[int, tuple[int, int]]:
    """The months with an event's qualifying change added, and months too old to matter dropped."""
    updated = {key: value for key, value in months.items() if key > month - QUALIFYING_MONTHS_KEPT}
    old_points, old_activities = updated.get(month, (0, 0))
    updated[month] = (old_points + points, old_activities + activities)
    return updated


def level_reached(definition: TierDefinition, total: int) -> int:
    reached = 0
    for index, level in enumerate(definition.levels):
        if total >= level.threshold:
            reached = index
    return reached


# ---- A member's state and its evaluation ----
@dataclass(frozen=True, slots=True)
class TierState:
    level: int  # position in the definition's levels; 0 is where every member starts
    since_us: int  # when the member got this level (0: never had another)
    anchor_us: int  # a time within the latest period in which the member reached or kept this level


def new_state(now_us: int) -> TierState:
    return TierState(level=0, since_us=0, anchor_us=now_us)


@dataclass(frozen=True, slots=True)
class _Evaluated:
    state: TierState
    downgrade_at_us: int | None  # an evaluation already failed: the level ends then (grace running)


def _evaluate(definition: TierDefinition, state: TierState, months: Months, now_us: int, zone: ZoneInfo) -> _Evaluated:
    top = len(definition.levels) - 1
    level, since, anchor_us = min(state.level, top), state.since_us, state.anchor_us
    current = _period_of_month(definition, month_of(now_us, zone))
    period = _period_of_month(definition, month_of(anchor_us, zone))
    grace_us = None
    # The evaluations at the end of each completed period since the anchor, in order.
    while level > 0 and period < current:
        reached = level_reached(definition, qualifying_in(definition, months, period))
        if reached >= level:
            period += 1
            continue
        downgrade_us = _downgrade_us(definition, period, zone)
        if now_us < downgrade_us:
            grace_us = downgrade_us
            break
        level, since = reached, downgrade_us
    anchor = month_start_us(_first_month(definition, period if level > 0 else current), zone)
    reached_now = level_reached(definition, qualifying_in(definition, months, current))
    if reached_now > level:
        level, since, grace_us = reached_now, now_us, None
    if reached_now >= level:
        anchor, grace_us = month_start_us(_first_month(definition, current), zone), None
    return _Evaluated(TierState(level, since, anchor), grace_us)


def evaluate(definition: TierDefinition, state: TierState, months: Months, now_us: int, zone: ZoneInfo) -> TierState:
    """The member's state at `now_us`: evaluations since the state's anchor applied, then an upgrade."""
    return _evaluate(definition, state, months, now_us, zone).state


def apply_earn(
    definition: TierDefinition, state: TierState, months: Months, now_us: int, zone: ZoneInfo, qualifying_points: int
) -> tuple[TierLevel, TierState, dict[int, tuple[int, int]]]:
    """The level the earn is priced at (the member's level before it), then the member's state
    and months once its qualifying points (and activity, if any) are added."""
    before = evaluate(definition, state, months, now_us, zone)
    months_after = add_qualifying(months, month_of(now_us, zone), qualifying_points, 1 if qualifying_points > 0 else 0)
    after = evaluate(definition, before, months_after, now_us, zone)
    return definition.levels[before.level], after, months_after


def level_of(definition: TierDefinition, state: TierState) -> TierLevel:
    return definition.levels[min(state.level, len(definition.levels) - 1)]


# ---- What a member reads ----
@dataclass(frozen=True, slots=True)
class TierStatus:
    definition: TierDefinition
    level: int
    since_us: int | None
    valid_until_us: int | None  # the level ends then unless the member qualifies again; None: base level
    window_start_us: int
    window_end_us: int
    qualifying: int  # in the current window, in the definition's measure
    to_next_level: int | None  # more qualifying needed in the window for the next level; None at the top
    to_keep_level: int  # more qualifying needed in the window to keep the level at its next evaluation


def status(definition: TierDefinition, state: TierState, months: Months, now_us: int, zone: ZoneInfo) -> TierStatus:
    evaluated = _evaluate(definition, state, months, now_us, zone)
    current_state = evaluated.state
    level = current_state.level
    current = _period_of_month(definition, month_of(now_us, zone))
    qualifying = qualifying_in(definition, months, current)
    valid_until = evaluated.downgrade_at_us
    if level > 0 and valid_until is None:
        # If nothing more qualifies: the first evaluation from the anchor on that fails.
        period = _period_of_month(definition, month_of(current_state.anchor_us, zone))
        for candidate in range(period, period + _LOOKAHEAD_PERIODS_MAX):
            if level_reached(definition, qualifying_in(definition, months, candidate)) < level:
                valid_until = _downgrade_us(definition, candidate, zone)
                break
    window = _window_months(definition, current)
    levels = definition.levels
    return TierStatus(
        definition=definition,
        level=level,
        since_us=current_state.since_us or None,
        valid_until_us=valid_until if level > 0 else None,
        window_start_us=month_start_us(window.start, zone),
        window_end_us=month_start_us(window.stop, zone),
        qualifying=qualifying,
        to_next_level=max(0, levels[level + 1].threshold - qualifying) if level + 1 < len(levels) else None,
        to_keep_level=max(0, levels[level].threshold - qualifying),
    )
