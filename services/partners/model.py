"""The partners domain: earn rule pricing, conversion arithmetic, identifiers and limits.

Plain Python, no grpc or sqlalchemy. Value is integer minor units; rates are Decimal and
rounded exactly once, explicitly (earn: down per basket; conversion: down per transfer, in
the operator's favour).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Context, Decimal, InvalidOperation, localcontext
from typing import Protocol, TypeVar

# ---- Limits (one place; the proto documents the same numbers) ----
BASKET_LINES_MAX = 200
LINE_AMOUNT_MAX = 100_000_000  # euro cents
LINE_QUANTITY_MAX = 1_000_000_000  # thousandths of a unit
CATEGORY_LENGTH_MAX = 64
SKU_LENGTH_MAX = 64
RULE_CATEGORIES_MAX = 100
MULTIPLIER_MAX = Decimal(1000)
BASE_RATE_MAX = Decimal(1_000_000)
BONUS_POINTS_MAX = 1_000_000
REDEMPTION_AMOUNT_MAX = 100_000_000
HOLD_TIMEOUT_SECONDS_DEFAULT = 600
HOLD_TIMEOUT_SECONDS_MAX = 3_600
OFFLINE_BATCH_MAX = 500
# An exact retry of IssueApiKey / RotateApiKey within this window shows the same secret again.
API_KEY_RETRY_WINDOW_SECONDS = 600
OFFLINE_AGE_SECONDS_MAX = 30 * 24 * 3600
OFFLINE_FUTURE_SKEW_SECONDS_MAX = 300
QUOTE_TTL_SECONDS = 60
CONVERSION_AMOUNT_MAX = 10**12
# The ledger refuses a transfer above this (services/ledger/limits.py AMOUNT_MAX, minor units):
# no earn and no conversion leg may be priced beyond it, or it could be recorded and never post.
LEDGER_AMOUNT_MAX = 10**15
ALIASES_PER_ENROLMENT_MAX = 10
ALIAS_LENGTH_MAX = 254
DISPLAY_NAME_LENGTH_MAX = 200
PAGE_SIZE_MAX = 500
ACTIVITY_PAGE_SIZE_DEFAULT = 50
ACTIVITY_PAGE_SIZE_MAX = 200
MICROS_PER_SECOND = 1_000_000

OPERATOR = "operator"
COMMON_CURRENCY = "PTS"
MONEY_CURRENCY = "EUR"
MONEY_SCALE = 2

PARTNER_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
LOCAL_ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:/@-]{1,64}$")
CURRENCY_CODE_PATTERN = re.compile(r"^[A-Z0-9_]{2,16}$")

# Decimal arithmetic with far more digits than any basket needs, so the only rounding
# is the explicit one.
_EXACT = Context(prec=60)


class DomainError(Exception):
    """A business rule refused the input. `precondition` says whether it depends on state
    (FAILED_PRECONDITION) rather than on the input alone (INVALID_ARGUMENT)."""

    def __init__(self, reason: str, message: str, *, precondition: bool = False, **metadata: object) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.precondition = precondition
        self.metadata = metadata


def invalid(reason: str, message: str, **metadata: object) -> DomainError:
    return DomainError(reason, message, **metadata)


# ---- Identifiers ----
def check_partner_id(value: str, name: str = "partner_id") -> str:
    if not PARTNER_ID_PATTERN.fullmatch(value or ""):
        raise invalid("INVALID_PARTNER_ID", f"{name} must be 1..32 characters of a-z 0-9 and -", field=name)
    return value


def check_local_id(value: str, name: str) -> str:
    if not LOCAL_ID_PATTERN.fullmatch(value or ""):
        raise invalid("INVALID_ID", f"{name} must be 1..64 characters of A-Z a-z 0-9 and ._-", field=name, value=value)
    return value


def check_request_id(value: str, name: str = "request_id") -> str:
    if not REQUEST_ID_PATTERN.fullmatch(value or ""):
        raise invalid("INVALID_REQUEST_ID", f"{name} must be 1..64 characters of A-Z a-z 0-9 and ._:-/@", field=name)
    return value


def check_currency_code(value: str, name: str = "currency_code") -> str:
    if not CURRENCY_CODE_PATTERN.fullmatch(value or ""):
        raise invalid("INVALID_CURRENCY_CODE", f"{name} must be 2..16 characters of A-Z 0-9 _", field=name)
    return value


def check_display_name(value: str) -> str:
    if not value or len(value) > DISPLAY_NAME_LENGTH_MAX:
        raise invalid("INVALID_DISPLAY_NAME", "display_name must be 1..200 characters", field="display_name")
    return value


def parse_decimal(text: str, name: str, *, minimum: Decimal, maximum: Decimal) -> Decimal:
    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError):
        raise invalid("INVALID_DECIMAL", f"{name} must be a decimal string like '1.5'", field=name) from None
    if not value.is_finite() or value < minimum or value > maximum:
        raise invalid("INVALID_DECIMAL", f"{name} must be between {minimum} and {maximum}", field=name, value=text)
    return value


# ---- Ledger account and transfer ids (conventions shared with settlement) ----
def wallet_account_id(currency: str, member_id: str) -> str:
    return f"wallet:{currency}:{member_id}"


def issuance_account_id(currency: str, partner_id: str) -> str:
    return f"issuance:{currency}:{partner_id}"


def redemption_account_id(currency: str, partner_id: str) -> str:
    return f"redemption:{currency}:{partner_id}"


def exchange_account_id(currency: str, other_currency: str) -> str:
    return f"exchange:{currency}:{other_currency}"


def breakage_account_id(currency: str) -> str:
    return f"breakage:{currency}"


def earn_transfer_id(partner_id: str, request_id: str) -> str:
    return f"earn:{partner_id}:{request_id}"


def hold_transfer_id(partner_id: str, request_id: str) -> str:
    return f"redeem:{partner_id}:{request_id}"


def capture_transfer_id(partner_id: str, request_id: str) -> str:
    return f"redeem-capture:{partner_id}:{request_id}"


def void_transfer_id(partner_id: str, request_id: str) -> str:
    return f"redeem-void:{partner_id}:{request_id}"


def return_transfer_id(partner_id: str, request_id: str, attempt: int, leg: str) -> str:
    # The attempt number lets a return that lost a race for the member's points be
    # recomputed under a fresh ledger id (the ledger keeps failed ids forever).
    return f"return:{partner_id}:{request_id}:{attempt}:{leg}"


def conversion_id_for(caller_id: str, request_id: str) -> str:
    return f"convert:{caller_id}:{request_id}"


# ---- Members and aliases ----
ALIAS_KINDS = ("card", "phone", "email")
_PHONE_PATTERN = re.compile(r"^\+[1-9][0-9]{6,14}$")
_EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def normalize_alias(kind: str, value: str) -> str:
    """Canonical form, so '4000 1234' and '40001234' are the same card."""
    if not value or len(value) > ALIAS_LENGTH_MAX:
        raise invalid("INVALID_ALIAS", "alias value must be 1..254 characters", field="alias.value")
    if kind == "card":
        digits = re.sub(r"[\s-]", "", value)
        if not digits.isdigit() or not 6 <= len(digits) <= 32:
            raise invalid("INVALID_ALIAS", "a card number is 6..32 digits", field="alias.value")
        return digits
    if kind == "phone":
        phone = re.sub(r"[\s()-]", "", value)
        if not _PHONE_PATTERN.fullmatch(phone):
            raise invalid("INVALID_ALIAS", "a phone number must be E.164, e.g. +491701234567", field="alias.value")
        return phone
    if kind == "email":
        email = value.strip().lower()
        if not _EMAIL_PATTERN.fullmatch(email):
            raise invalid("INVALID_ALIAS", "not an e-mail address", field="alias.value")
        return email
    raise invalid("INVALID_ALIAS", "alias kind must be CARD, PHONE or EMAIL", field="alias.kind")


def alias_hash(secret: bytes, kind: str, value: str) -> str:
    """Keyed hash (HMAC-SHA256): a stolen table cannot be reversed by hashing phone numbers."""
    canonical = normalize_alias(kind, value)
    return hmac.new(secret, f"{kind}:{canonical}".encode(), hashlib.sha256).hexdigest()


# ---- Earn rules ----
BASIS_AMOUNT = "amount"
BASIS_QUANTITY = "quantity"
PROMOTION_MULTIPLIER = "multiplier"
PROMOTION_FIXED_BONUS = "fixed_bonus"


@dataclass(frozen=True, slots=True)
class Promotion:
    kind: str
    start_micros: int
    end_micros: int
    multiplier: Decimal = Decimal(1)
    bonus_points: int = 0
    threshold_amount: int = 0

    def active(self, at_micros: int, eligible_amount: int) -> bool:
        return (
            self.start_micros <= at_micros < self.end_micros
            and eligible_amount > 0
            and eligible_amount >= self.threshold_amount
        )


@dataclass(frozen=True, slots=True)
class EarnRule:
    partner_id: str
    version: int
    currency_code: str
    basis: str
    base_rate: Decimal
    category_multipliers: dict[str, Decimal] = field(default_factory=dict)
    excluded_categories: frozenset[str] = frozenset()
    promotion: Promotion | None = None
    cap_points: int = 0
    valid_from_micros: int = 0
    valid_to_micros: int | None = None

    def in_effect(self, at_micros: int) -> bool:
        return self.valid_from_micros <= at_micros and (
            self.valid_to_micros is None or at_micros < self.valid_to_micros
        )


def check_earn_rule(rule: EarnRule) -> None:
    """Refuses a rule that could not price every basket."""
    if rule.basis not in (BASIS_AMOUNT, BASIS_QUANTITY):
        raise invalid("INVALID_EARN_RULE", "basis must be AMOUNT or QUANTITY", field="basis")
    if not Decimal(0) <= rule.base_rate <= BASE_RATE_MAX:
        raise invalid("INVALID_EARN_RULE", "base_rate out of range", field="base_rate")
    if len(rule.category_multipliers) > RULE_CATEGORIES_MAX or len(rule.excluded_categories) > RULE_CATEGORIES_MAX:
        raise invalid("INVALID_EARN_RULE", f"at most {RULE_CATEGORIES_MAX} categories per list", field="categories")
    for category, multiplier in rule.category_multipliers.items():
        if not category or len(category) > CATEGORY_LENGTH_MAX or not Decimal(0) <= multiplier <= MULTIPLIER_MAX:
            raise invalid("INVALID_EARN_RULE", f"bad multiplier for {category!r}", field="category_multipliers")
    if rule.cap_points < 0:
        raise invalid("INVALID_EARN_RULE", "cap_points_per_transaction must be >= 0", field="cap")
    if rule.valid_to_micros is not None and rule.valid_to_micros <= rule.valid_from_micros:
        raise invalid("INVALID_EARN_RULE", "valid_to_time must be after valid_from_time", field="valid_to_time")
    promotion = rule.promotion
    if promotion is not None:
        if promotion.end_micros <= promotion.start_micros:
            raise invalid("INVALID_EARN_RULE", "promotion end_time must be after start_time", field="promotion")
        # A promotion only ever adds: a multiplier below 1 would let a bigger basket earn less.
        if promotion.kind == PROMOTION_MULTIPLIER and not Decimal(1) <= promotion.multiplier <= MULTIPLIER_MAX:
            raise invalid("INVALID_EARN_RULE", "promotion multiplier must be 1 or more", field="promotion.multiplier")
        if promotion.kind == PROMOTION_FIXED_BONUS and not 0 < promotion.bonus_points <= BONUS_POINTS_MAX:
            raise invalid("INVALID_EARN_RULE", "promotion bonus_points out of range", field="promotion")
        if promotion.kind not in (PROMOTION_MULTIPLIER, PROMOTION_FIXED_BONUS):
            raise invalid("INVALID_EARN_RULE", "promotion kind must be MULTIPLIER or FIXED_BONUS", field="promotion")
        if promotion.threshold_amount < 0:
            raise invalid("INVALID_EARN_RULE", "promotion threshold_amount must be >= 0", field="promotion")
    if earn_rule_points_max(rule) > LEDGER_AMOUNT_MAX:
        raise invalid(
            "INVALID_EARN_RULE",
            f"the rule could price a basket above {LEDGER_AMOUNT_MAX} points, more than one ledger transfer can"
            " carry; lower base_rate or the multipliers, or set cap_points_per_transaction",
            field="base_rate",
        )


def earn_rule_points_max(rule: EarnRule) -> int:
    """The most points any valid basket can earn under the rule (every line at its maximum,
    in the best category, with the promotion on), after the cap."""
    with localcontext(_EXACT):
        line_units = Decimal(LINE_AMOUNT_MAX) / 100 if rule.basis == BASIS_AMOUNT else Decimal(LINE_QUANTITY_MAX) / 1000
        multiplier = max([Decimal(1), *rule.category_multipliers.values()])
        promotion = rule.promotion
        promotion_multiplier = promotion.multiplier if promotion and promotion.kind == PROMOTION_MULTIPLIER else 1
        bonus = promotion.bonus_points if promotion and promotion.kind == PROMOTION_FIXED_BONUS else 0
        exact = BASKET_LINES_MAX * line_units * rule.base_rate * multiplier * promotion_multiplier
        points = int(exact.to_integral_value(rounding=ROUND_DOWN)) + bonus
    return min(points, rule.cap_points) if rule.cap_points > 0 else points


def select_version(rules: Sequence[RuleT], at_micros: int) -> RuleT | None:
    """The highest version in effect at the time."""
    best = None
    for rule in rules:
        if rule.in_effect(at_micros) and (best is None or rule.version > best.version):
            best = rule
    return best


class _Versioned(Protocol):
    version: int

    def in_effect(self, at_micros: int) -> bool: ...


RuleT = TypeVar("RuleT", bound=_Versioned)


@dataclass(frozen=True, slots=True)
class BasketLine:
    line_number: int
    sku: str
    category: str
    quantity: int
    amount: int


def check_basket(lines: Sequence[BasketLine]) -> None:
    if not 1 <= len(lines) <= BASKET_LINES_MAX:
        raise invalid("INVALID_BASKET", f"a basket has 1..{BASKET_LINES_MAX} lines", field="lines")
    seen: set[int] = set()
    for line in lines:
        if line.line_number < 1 or line.line_number in seen:
            raise invalid("INVALID_BASKET", "line_number must be >= 1 and unique", field="lines", line=line.line_number)
        seen.add(line.line_number)
        if not line.category or len(line.category) > CATEGORY_LENGTH_MAX or len(line.sku) > SKU_LENGTH_MAX:
            raise invalid("INVALID_BASKET", "category 1..64 and sku 0..64 characters", line=line.line_number)
        if not 0 <= line.amount <= LINE_AMOUNT_MAX:
            raise invalid("INVALID_BASKET", f"amount must be 0..{LINE_AMOUNT_MAX} cents", line=line.line_number)
        if not 1 <= line.quantity <= LINE_QUANTITY_MAX:
            raise invalid(
                "INVALID_BASKET",
                f"quantity must be 1..{LINE_QUANTITY_MAX} thousandths",
                line=line.line_number,
            )


@dataclass(frozen=True, slots=True)
class LinePoints:
    line_number: int
    points: int
    exact_points: Decimal
    excluded: bool


@dataclass(frozen=True, slots=True)
class EarnPricing:
    currency_code: str
    points: int
    exact_points: Decimal
    bonus_points: int
    promotion_applied: bool
    capped: bool
    rule_version: int
    lines: tuple[LinePoints, ...]


def price_basket(rule: EarnRule, lines: Sequence[BasketLine], at_micros: int) -> EarnPricing:
    """Points for a basket: exact per line, rounded down once for the basket, then capped.

    The rounded total is shared back over the lines (largest remainder) so that returning
    every line reverses exactly what was earned, and returning some lines reverses their share.
    """
    check_basket(lines)
    with localcontext(_EXACT):
        divisor = Decimal(100) if rule.basis == BASIS_AMOUNT else Decimal(1000)
        eligible_amount = sum(line.amount for line in lines if line.category not in rule.excluded_categories)
        promotion = rule.promotion
        promotion_on = promotion is not None and promotion.active(at_micros, eligible_amount)
        promotion_multiplier = (
            promotion.multiplier if promotion_on and promotion.kind == PROMOTION_MULTIPLIER else Decimal(1)
        )
        bonus = promotion.bonus_points if promotion_on and promotion.kind == PROMOTION_FIXED_BONUS else 0
        exact: list[Decimal] = []
        for line in lines:
            if line.category in rule.excluded_categories:
                exact.append(Decimal(0))
                continue
            units = Decimal(line.amount if rule.basis == BASIS_AMOUNT else line.quantity) / divisor
            multiplier = rule.category_multipliers.get(line.category, Decimal(1))
            exact.append(units * rule.base_rate * multiplier * promotion_multiplier)
        total_exact = sum(exact, Decimal(0))
        points = int(total_exact.to_integral_value(rounding=ROUND_DOWN)) + bonus
    capped = rule.cap_points > 0 and points > rule.cap_points
    if capped:
        points = rule.cap_points
    if points > LEDGER_AMOUNT_MAX:
        # Only a rule stored before rules were bounded (check_earn_rule) can get here.
        raise DomainError(
            "EARN_TOO_LARGE",
            f"the basket would earn {points} points, above the {LEDGER_AMOUNT_MAX} one earn can carry;"
            " split the basket or ask the operator to cap the earn rule",
            precondition=True,
            points=points,
            points_max=LEDGER_AMOUNT_MAX,
        )
    weights = (
        exact
        if total_exact > 0
        else [Decimal(0 if line.category in rule.excluded_categories else line.amount) for line in lines]
    )
    shares = allocate(points, weights)
    line_points = tuple(
        LinePoints(line.line_number, share, value, line.category in rule.excluded_categories)
        for line, share, value in zip(lines, shares, exact, strict=True)
    )
    return EarnPricing(
        currency_code=rule.currency_code,
        points=points,
        exact_points=total_exact,
        bonus_points=bonus,
        promotion_applied=promotion_on,
        capped=capped,
        rule_version=rule.version,
        lines=line_points,
    )


def allocate(total: int, weights: Sequence[Decimal]) -> list[int]:
    """Split `total` into integers proportional to `weights` (largest remainder, ties to
    the earlier line). The parts always add up to `total`; zero weights get zero."""
    if total < 0:
        raise ValueError("total must be >= 0")
    weight_sum = sum(weights, Decimal(0))
    if total == 0:
        return [0] * len(weights)
    if weight_sum <= 0:
        # Nothing to weigh by: the whole amount goes to the first line.
        return [total if index == 0 else 0 for index in range(len(weights))]
    with localcontext(_EXACT):
        quotas = [Decimal(total) * weight / weight_sum for weight in weights]
        shares = [int(quota.to_integral_value(rounding=ROUND_DOWN)) for quota in quotas]
        remainder = total - sum(shares)
        order = sorted(range(len(weights)), key=lambda index: (-(quotas[index] - shares[index]), index))
    for index in order[:remainder]:
        shares[index] += 1
    if sum(shares) != total:
        raise ArithmeticError("allocation does not add up")
    return shares


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


def fingerprint(**content: object) -> str:
    """Digest of a request's content: a repeated request_id must carry the same content."""
    import json

    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()
