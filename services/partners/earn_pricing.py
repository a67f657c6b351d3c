"""Earn rules and basket pricing: a basket is priced by the partner's rule version in effect,
points rounded down once per basket, and each line's share kept so a return reverses exactly its lines."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal, localcontext

from services.partners.model import (
    _EXACT,
    BASE_RATE_MAX,
    BASKET_LINES_MAX,
    BONUS_POINTS_MAX,
    CATEGORY_LENGTH_MAX,
    LEDGER_AMOUNT_MAX,
    LINE_AMOUNT_MAX,
    LINE_QUANTITY_MAX,
    MULTIPLIER_MAX,
    RULE_CATEGORIES_MAX,
    SKU_LENGTH_MAX,
    DomainError,
    invalid,
)

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


@dataclass(frozen=True, slots=True)
class BasketLine:
    line_number: int
    sku: str
    category: str
    quantity: int
    amount: int


def check_basket(lines: Sequence[BasketLine]) -> None:
    """INVALID_BASKET names the field and, for a line's mistake, the line (its line_number)."""
    if not 1 <= len(lines) <= BASKET_LINES_MAX:
        raise invalid("INVALID_BASKET", f"a basket has 1..{BASKET_LINES_MAX} lines", field="lines", lines=len(lines))
    seen: set[int] = set()
    for line in lines:
        if line.line_number < 1 or line.line_number in seen:
            raise _line_error(line, "line_number", "line_number must be >= 1 and unique")
        seen.add(line.line_number)
        if not line.category or len(line.category) > CATEGORY_LENGTH_MAX:
            raise _line_error(line, "category", f"category must be 1..{CATEGORY_LENGTH_MAX} characters")
        if len(line.sku) > SKU_LENGTH_MAX:
            raise _line_error(line, "sku", f"sku must be 0..{SKU_LENGTH_MAX} characters")
        if not 0 <= line.amount <= LINE_AMOUNT_MAX:
            raise _line_error(line, "amount", f"amount must be 0..{LINE_AMOUNT_MAX} cents")
        if not 1 <= line.quantity <= LINE_QUANTITY_MAX:
            raise _line_error(line, "quantity", f"quantity must be 1..{LINE_QUANTITY_MAX} thousandths")


def _line_error(line: BasketLine, name: str, message: str) -> DomainError:
    return invalid(
        "INVALID_BASKET", f"line {line.line_number}: {message}", field=f"lines.{name}", line=line.line_number
    )


@dataclass(frozen=True, slots=True)
class LinePoints:
    line_number: int
    points: int  # the line's share of the basket's points, its tier bonus share included
    exact_points: Decimal  # before the tier multiplier
    excluded: bool
    tier_bonus_points: int = 0


@dataclass(frozen=True, slots=True)
class TierApplied:
    """The member's tier an earn is priced at."""

    name: str
    multiplier: Decimal


NO_TIER = TierApplied("", Decimal(1))


@dataclass(frozen=True, slots=True)
class EarnPricing:
    currency_code: str
    points: int  # issued: base points plus the tier bonus, after the cap
    exact_points: Decimal  # before the tier multiplier
    bonus_points: int  # the promotion's fixed bonus
    promotion_applied: bool
    capped: bool
    rule_version: int
    lines: tuple[LinePoints, ...]
    tier: TierApplied = NO_TIER
    tier_bonus_points: int = 0  # of points: above what the earn rule alone gives; never qualifying

    @property
    def base_points(self) -> int:
        """What the earn rule alone gives (after the cap): the earn's qualifying points."""
        return self.points - self.tier_bonus_points


def price_basket(
    rule: EarnRule, lines: Sequence[BasketLine], at_micros: int, tier: TierApplied = NO_TIER
) -> EarnPricing:
    """Points for a basket: exact per line, rounded down once for the basket, then capped.

    With a tier, the basket's exact points times the tier's multiplier are rounded down once
    (the promotion's fixed bonus is added as it is, never multiplied), then capped: the cap
    bounds the whole earn, tier bonus included, and the base points come first, so the tier
    bonus is what the cap leaves above them: min(cap, floor(exact * m) + fixed) - min(cap,
    floor(exact) + fixed).

    The base points and the tier bonus are each shared back over the lines (largest remainder)
    so that returning every line reverses exactly what was earned, and returning some lines
    reverses their share of both.
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
        base = int(total_exact.to_integral_value(rounding=ROUND_DOWN)) + bonus
        points = int((total_exact * tier.multiplier).to_integral_value(rounding=ROUND_DOWN)) + bonus
    capped = rule.cap_points > 0 and points > rule.cap_points
    if capped:
        points = rule.cap_points
        base = min(base, rule.cap_points)
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
    base_shares = allocate(base, weights)
    tier_shares = allocate(points - base, weights)
    line_points = tuple(
        LinePoints(line.line_number, share + tier_share, value, line.category in rule.excluded_categories, tier_share)
        for line, share, tier_share, value in zip(lines, base_shares, tier_shares, exact, strict=True)
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
        tier=tier,
        tier_bonus_points=points - base,
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
