"""Conversion arithmetic between programmes: published ratios with bonuses, minimums, steps
and yearly caps, rounded down once per transfer in the operator's favour; quotes and their lifetime."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal, localcontext

from services.partners.model import (
    _EXACT,
    CONVERSION_AMOUNT_MAX,
    LEDGER_AMOUNT_MAX,
    MICROS_PER_SECOND,
    QUOTE_TTL_SECONDS,
    DomainError,
    invalid,
)


# ---- Conversion ----
@dataclass(frozen=True, slots=True)
class ConversionRule:
    from_currency: str
    to_currency: str
    version: int
    from_units: int
    to_units: int
    bonus_block_from_amount: int = 0
    bonus_to_amount: int = 0
    min_from_amount: int = 1
    step_from_amount: int = 1
    max_from_amount: int = 0
    annual_cap_from_amount: int = 0
    valid_from_micros: int = 0
    valid_to_micros: int | None = None

    def in_effect(self, at_micros: int) -> bool:
        return self.valid_from_micros <= at_micros and (
            self.valid_to_micros is None or at_micros < self.valid_to_micros
        )


def check_conversion_rule(rule: ConversionRule) -> None:
    def bad(name: str, message: str) -> DomainError:
        return invalid("INVALID_CONVERSION_RULE", message, field=name)

    if rule.from_currency == rule.to_currency:
        raise bad("to_currency_code", "a conversion needs two different currencies")
    if not 1 <= rule.from_units <= CONVERSION_AMOUNT_MAX or not 1 <= rule.to_units <= CONVERSION_AMOUNT_MAX:
        raise bad("from_units", "from_units and to_units must be >= 1")
    if rule.bonus_block_from_amount < 0 or rule.bonus_to_amount < 0:
        raise bad("bonus_to_amount", "bonus block and bonus must be >= 0")
    if (rule.bonus_block_from_amount == 0) != (rule.bonus_to_amount == 0):
        raise bad("bonus_block_from_amount", "set both bonus_block_from_amount and bonus_to_amount, or neither")
    if rule.min_from_amount < 1 or rule.step_from_amount < 1:
        raise bad("min_from_amount", "min_from_amount and step_from_amount must be >= 1")
    if rule.max_from_amount < 0 or (0 < rule.max_from_amount < rule.min_from_amount):
        raise bad("max_from_amount", "max_from_amount must be 0 (none) or >= min_from_amount")
    if rule.annual_cap_from_amount < 0:
        raise bad("annual_cap_from_amount", "annual_cap_from_amount must be >= 0")
    if rule.valid_to_micros is not None and rule.valid_to_micros <= rule.valid_from_micros:
        raise bad("valid_to_time", "valid_to_time must be after valid_from_time")
    if conversion_to_amount_max(rule) > LEDGER_AMOUNT_MAX:
        raise bad(
            "max_from_amount",
            f"the rule could convert into more than {LEDGER_AMOUNT_MAX} {rule.to_currency}, more than one ledger"
            " transfer can carry; set a lower max_from_amount or a lower to_units:from_units ratio",
        )


def _to_amount(rule: ConversionRule, from_amount: int) -> int:
    bonus = (from_amount // rule.bonus_block_from_amount) * rule.bonus_to_amount if rule.bonus_block_from_amount else 0
    return from_amount * rule.to_units // rule.from_units + bonus


def conversion_to_amount_max(rule: ConversionRule) -> int:
    """The most one conversion under the rule can credit (it grows with from_amount)."""
    limits = [CONVERSION_AMOUNT_MAX, rule.max_from_amount, rule.annual_cap_from_amount]
    return _to_amount(rule, min(limit for limit in limits if limit > 0))


@dataclass(frozen=True, slots=True)
class ConversionOutcome:
    from_amount: int
    base_to_amount: int
    bonus_to_amount: int
    rounded_down_to_amount: Decimal  # fraction of a target unit kept by the operator
    annual_remaining_from_amount: int  # after this conversion; -1 when uncapped

    @property
    def to_amount(self) -> int:
        return self.base_to_amount + self.bonus_to_amount


def convert(rule: ConversionRule, from_amount: int, converted_this_year: int) -> ConversionOutcome:
    """What `from_amount` buys under `rule`, or why it is refused."""
    if not 1 <= from_amount <= CONVERSION_AMOUNT_MAX:
        raise invalid("INVALID_AMOUNT", f"from_amount must be 1..{CONVERSION_AMOUNT_MAX}", field="from_amount")
    if from_amount < rule.min_from_amount:
        raise invalid(
            "BELOW_MINIMUM",
            f"the minimum conversion is {rule.min_from_amount} {rule.from_currency}",
            min_from_amount=rule.min_from_amount,
        )
    if from_amount % rule.step_from_amount:
        raise invalid(
            "NOT_A_MULTIPLE_OF_STEP",
            f"from_amount must be a multiple of {rule.step_from_amount}",
            step_from_amount=rule.step_from_amount,
        )
    if rule.max_from_amount and from_amount > rule.max_from_amount:
        raise invalid(
            "ABOVE_MAXIMUM",
            f"the maximum per conversion is {rule.max_from_amount} {rule.from_currency}",
            max_from_amount=rule.max_from_amount,
        )
    remaining = -1
    if rule.annual_cap_from_amount:
        remaining = rule.annual_cap_from_amount - converted_this_year - from_amount
        if remaining < 0:
            raise DomainError(
                "ANNUAL_CAP_EXCEEDED",
                f"the member may convert {max(0, rule.annual_cap_from_amount - converted_this_year)} more "
                f"{rule.from_currency} this year",
                precondition=True,
                annual_cap_from_amount=rule.annual_cap_from_amount,
                converted_this_year=converted_this_year,
            )
    numerator = from_amount * rule.to_units
    base, leftover = divmod(numerator, rule.from_units)
    with localcontext(_EXACT):
        rounded_down = (Decimal(leftover) / Decimal(rule.from_units)).quantize(Decimal("0.000001"), rounding=ROUND_DOWN)
    bonus = (from_amount // rule.bonus_block_from_amount) * rule.bonus_to_amount if rule.bonus_block_from_amount else 0
    if base + bonus <= 0:
        raise invalid("ZERO_OUTCOME", "the amount converts to nothing; convert more", field="from_amount")
    if base + bonus > LEDGER_AMOUNT_MAX:
        # Only a rule stored before rules were bounded (check_conversion_rule) can get here.
        raise invalid(
            "CONVERSION_TOO_LARGE",
            f"the amount converts to {base + bonus} {rule.to_currency}, above the {LEDGER_AMOUNT_MAX} one"
            " conversion can carry; convert less",
            field="from_amount",
            to_amount_max=LEDGER_AMOUNT_MAX,
        )
    return ConversionOutcome(from_amount, base, bonus, rounded_down.normalize() if leftover else Decimal(0), remaining)


def quote_expire_micros(now_micros: int, ttl_seconds: int = QUOTE_TTL_SECONDS) -> int:
    return now_micros + ttl_seconds * MICROS_PER_SECOND


def quote_expired(expire_micros: int, now_micros: int) -> bool:
    return now_micros >= expire_micros


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def utc_year_bounds(micros: int) -> tuple[int, int]:
    """[start, end) of the calendar year (UTC) containing the time, in microseconds."""
    year = (_EPOCH + datetime.timedelta(microseconds=micros)).year

    def start(of_year: int) -> int:
        delta = datetime.datetime(of_year, 1, 1, tzinfo=datetime.UTC) - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * MICROS_PER_SECOND

    return start(year), start(year + 1)
