"""Settlement domain: pricing, statement lines, netting, reconciliation and the liability roll-forward.

Plain Python on purpose (no grpc, no sqlalchemy): every figure on a statement comes from
these functions, so they are tested against hand-computed numbers.

Money is an int of EUR cents. Prices are Decimal EUR per point. A statement line is
quantity x unit price, rounded half-even to cents exactly once; every total is a sum of
rounded lines, never a re-rounding of an unrounded sum.
"""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from enum import StrEnum

OPERATOR_ID = "operator"
MONEY_CURRENCY_CODE = "EUR"
PRICE_DECIMAL_PLACES_MAX = 12
PRICE_DIGITS_MAX = 24
# Highest price per point (or per unit) an agreement may set: far above any real programme, and
# low enough that quantity x price of any ledger amount stays far inside int64 cents.
PRICE_MAX = Decimal(1000)
# Every amount in cents on a statement is an int64 on the wire and in the database.
CENTS_MAX = 2**63 - 1
# Wide enough for 10^18 points x a 12-decimal price without any intermediate rounding.
_EXACT = Context(prec=80)
_CENT = Decimal(1)

# Ledger account kinds and transfer codes (conventions set by the partners service).
KIND_MEMBER_WALLET = "member_wallet"
KIND_PARTNER_ISSUANCE = "partner_issuance"
KIND_PARTNER_REDEMPTION = "partner_redemption"
KIND_OPERATOR_EXCHANGE = "operator_exchange"
KIND_OPERATOR_BREAKAGE = "operator_breakage"
KIND_PARTNER_SETTLEMENT = "partner_settlement"
KIND_OPERATOR_SETTLEMENT = "operator_settlement"
CODE_EARN = "EARN"
CODE_REDEEM = "REDEEM"
CODE_REVERSAL = "REVERSAL"
CODE_CONVERSION = "CONVERSION"
CODE_EXPIRY = "EXPIRY"

RECONCILIATION_ROWS_MAX = 200_000
RECONCILIATION_FIELD_LENGTH_MAX = 128
RECONCILIATION_COLUMNS = ("receipt_id", "store_id", "terminal_id", "time", "type", "points", "currency")
# The header without the currency column: read only when the ledger shows a single currency.
RECONCILIATION_COLUMNS_WITHOUT_CURRENCY = RECONCILIATION_COLUMNS[:-1]
_CURRENCY_PATTERN = re.compile(r"[A-Z0-9_]{2,16}")
RECONCILIATION_TYPES = ("EARN", "EARN_REVERSAL", "REDEEM", "REDEMPTION_REVERSAL")
# The ledger's largest transfer amount (services/ledger/limits.py AMOUNT_MAX): no row can be larger.
RECONCILIATION_POINTS_MAX = 10**15
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


class SettlementRuleError(Exception):
    """A business rule refuses the operation; reason is stable, message says what to do."""

    def __init__(self, reason: str, message: str, **metadata: object) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.metadata = metadata


# ---------------------------------------------------------------- prices


def parse_price(text: str, field_name: str = "price") -> Decimal:
    """A non-negative EUR price with at most PRICE_DECIMAL_PLACES_MAX decimals, exactly as written."""
    try:
        value = Decimal(text.strip())
    except (InvalidOperation, AttributeError) as error:
        raise SettlementRuleError(
            "INVALID_PRICE", f"{field_name} must be a decimal string such as 0.0085, got {text!r}"
        ) from error
    if not value.is_finite() or value < 0:
        raise SettlementRuleError("INVALID_PRICE", f"{field_name} must be >= 0, got {text!r}")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > PRICE_DECIMAL_PLACES_MAX:
        raise SettlementRuleError(
            "INVALID_PRICE", f"{field_name} has more than {PRICE_DECIMAL_PLACES_MAX} decimal places: {text!r}"
        )
    if len(value.as_tuple().digits) > PRICE_DIGITS_MAX or value > PRICE_MAX:
        raise SettlementRuleError(
            "INVALID_PRICE", f"{field_name} is too large: {text!r}; at most EUR {PRICE_MAX} per point or unit"
        )
    return value


def line_amount_cents(quantity: int, unit_price: Decimal) -> int:
    """quantity x unit price (EUR) in cents, rounded half-even once."""
    cents = _EXACT.multiply(_EXACT.multiply(Decimal(quantity), unit_price), Decimal(100))
    return int(cents.quantize(_CENT, rounding=ROUND_HALF_EVEN, context=_EXACT))


@dataclass(frozen=True, slots=True)
class PointPrice:
    currency_code: str
    issue_price: Decimal
    reimbursement_price: Decimal


@dataclass(frozen=True, slots=True)
class ConversionPrice:
    from_currency_code: str
    to_currency_code: str
    price_per_unit_received: Decimal


class BreakageOwner(StrEnum):
    """Who keeps the breakage of points a partner issued (DOMAIN.md "Expiry")."""

    OPERATOR = "OPERATOR"  # the partner paid the issue price; unredeemed points are the operator's gain
    ISSUING_PARTNER = "ISSUING_PARTNER"  # rebated to the partner at its issue price, as a statement line


class TierBonusFunder(StrEnum):
    """Who pays for the tier bonus of points a partner issued (DOMAIN.md "Tiers"): the points
    above the earn rule that a member's tier multiplier adds."""

    # The partner where the bonus was earned: it is billed at its issue price inside the points
    # issued, exactly as before funders existed; the TIER_BONUS line is informational (EUR 0.00).
    PARTNER = "PARTNER"
    # The operator: the TIER_BONUS line credits the partner the bonus at its issue price, so the
    # partner pays for its base points only and the operator bears the bonus.
    OPERATOR = "OPERATOR"


@dataclass(frozen=True, slots=True)
class PriceAgreement:
    agreement_id: str
    partner_id: str
    valid_from_us: int
    point_prices: tuple[PointPrice, ...] = ()
    conversion_prices: tuple[ConversionPrice, ...] = ()
    # Terms beyond prices, each with its default for versions recorded before it existed.
    breakage_owner: BreakageOwner = BreakageOwner.OPERATOR
    tier_bonus_funder: TierBonusFunder = TierBonusFunder.PARTNER
    # Document terms (services/settlement/documents.py): days to the due date, tax rate (percent)
    # and the tax's legal note.
    payment_terms_days: int = 30
    tax_rate_percent: Decimal = Decimal(0)
    tax_note: str = ""

    def point_price(self, currency_code: str) -> PointPrice | None:
        return next((p for p in self.point_prices if p.currency_code == currency_code), None)

    def conversion_price(self, from_code: str, to_code: str) -> ConversionPrice | None:
        return next(
            (p for p in self.conversion_prices if p.from_currency_code == from_code and p.to_currency_code == to_code),
            None,
        )

    def content_key(self) -> tuple:
        """What idempotency compares: everything but the id."""
        return (
            self.partner_id,
            self.valid_from_us,
            tuple(sorted((p.currency_code, str(p.issue_price), str(p.reimbursement_price)) for p in self.point_prices)),
            tuple(
                sorted(
                    (p.from_currency_code, p.to_currency_code, str(p.price_per_unit_received))
                    for p in self.conversion_prices
                )
            ),
            self.breakage_owner.value,
            self.tier_bonus_funder.value,
            self.payment_terms_days,
            str(self.tax_rate_percent.normalize()),
            self.tax_note,
        )


class AgreementBook:
    """Every partner's agreement versions; a version applies from its start until the next one's."""

    def __init__(self, agreements: Iterable[PriceAgreement]) -> None:
        by_partner: dict[str, list[PriceAgreement]] = defaultdict(list)
        for agreement in agreements:
            by_partner[agreement.partner_id].append(agreement)
        self._by_partner = {p: sorted(v, key=lambda a: a.valid_from_us) for p, v in by_partner.items()}

    def valid_at(self, partner_id: str, time_us: int) -> PriceAgreement | None:
        found = None
        for agreement in self._by_partner.get(partner_id, ()):
            if agreement.valid_from_us <= time_us:
                found = agreement
            else:
                break
        return found

    def change_times(self, start_us: int, end_us: int) -> list[int]:
        """Start times of versions strictly inside (start, end): where a period must be split."""
        return sorted(
            {
                a.valid_from_us
                for versions in self._by_partner.values()
                for a in versions
                if start_us < a.valid_from_us < end_us
            }
        )


def sub_windows(start_us: int, end_us: int, book: AgreementBook) -> list[tuple[int, int]]:
    """[start, end) split at every agreement change, so each window has one price per partner."""
    bounds = [start_us, *book.change_times(start_us, end_us), end_us]
    return [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]


# ---------------------------------------------------------------- movements from ledger activity


@dataclass(frozen=True, slots=True)
class Activity:
    """Posted movement of one ledger account under one transfer code (GetActivitySummary line)."""

    account_id: str
    code: str
    currency_code: str
    debits: int
    credits: int
    owner_id: str
    kind: str
    # Sum of the transfers' tier_bonus_points (minor units): the bonus share of debits/credits.
    tier_bonus_points: int = 0
    # REVERSAL lines: a time whose agreement billed the originals of these reversals (the start of
    # the window of agreement changes their commit times fall in), None when unknown; and the
    # closed period those originals belong to ("" when none: this period, or never closed).
    original_time_us: int | None = None
    original_period_id: str = ""


class LineKind(StrEnum):
    """Statement line kinds, in the order lines are shown."""

    POINTS_ISSUED = "POINTS_ISSUED"
    EARN_REVERSALS = "EARN_REVERSALS"
    # Tier bonus issued - tier bonus reversed (inside the two lines above); priced per funder.
    TIER_BONUS = "TIER_BONUS"
    POINTS_REDEEMED = "POINTS_REDEEMED"
    REDEMPTION_REVERSALS = "REDEMPTION_REVERSALS"
    CONVERSIONS_OUT = "CONVERSIONS_OUT"
    CONVERSIONS_IN = "CONVERSIONS_IN"
    BREAKAGE = "BREAKAGE"
    # An amount in EUR the operator posted (services/settlement/corrections.py), shown on the
    # next statement closed after it; its direction, not its kind, gives the sign.
    ADJUSTMENT = "ADJUSTMENT"

    @property
    def sign(self) -> int:
        """+1 when the partner pays for the line, -1 when it is paid (ADJUSTMENT: see its amount)."""
        return 1 if self in _PARTNER_PAYS else -1


_PARTNER_PAYS = {LineKind.POINTS_ISSUED, LineKind.REDEMPTION_REVERSALS, LineKind.CONVERSIONS_OUT}
_LINE_ORDER = {kind: index for index, kind in enumerate(LineKind)}


@dataclass(frozen=True, slots=True)
class Movement:
    """An unpriced quantity on one partner's statement."""

    partner_id: str
    kind: LineKind
    currency_code: str
    quantity: int
    counterparty_currency_code: str = ""
    counterparty_id: str = ""
    # For conversions: whose agreement prices it (owner of the delivered currency, else the payer).
    conversion_from: str = ""
    # For breakage: points expired and reinstated; quantity is expired - reinstated.
    expired: int = 0
    reinstated: int = 0
    # For the tier bonus: bonus points issued and reversed; quantity is issued - reversed.
    bonus_issued: int = 0
    bonus_reversed: int = 0
    # For reversals (DOMAIN.md "Decisions": priced at the original price): a time whose agreement
    # billed the originals (None: price at the movement's own time), and the closed period they
    # were billed in ("" when none).
    original_time_us: int | None = None
    original_period_id: str = ""


def exchange_other_currency(account_id: str) -> str:
    """`exchange:{CUR}:{OTHER}` -> OTHER (currency codes never contain ':')."""
    parts = account_id.split(":")
    if len(parts) != 3 or parts[0] != "exchange":
        raise SettlementRuleError(
            "UNEXPECTED_ACCOUNT_ID", f"operator exchange account {account_id!r} is not exchange:CUR:OTHER"
        )
    return parts[2]


def movements_from_activity(lines: Iterable[Activity], currency_owners: Mapping[str, str]) -> list[Movement]:
    """Turn posted ledger activity into what each partner's statement prices.

    Issuance debits with EARN are points issued; issuance credits with REVERSAL earn
    reversals; redemption credits with REDEEM points redeemed; redemption debits with
    REVERSAL redemption reversals. The tier bonus inside an issuance account's EARN and
    REVERSAL lines is a TIER_BONUS movement (issued minus reversed), priced by its funder; the
    issuance lines keep counting it. A conversion A -> B debits exchange:B:A for the units of
    B delivered: the owner of A pays the owner of B for them. A party that is the operator
    has no statement; a partner converting between two of its own currencies pays nobody.
    """
    movements: list[Movement] = []
    for line in lines:
        if line.kind == KIND_PARTNER_ISSUANCE:
            if line.code == CODE_EARN and line.debits:
                movements.append(Movement(line.owner_id, LineKind.POINTS_ISSUED, line.currency_code, line.debits))
            elif line.code == CODE_REVERSAL and line.credits:
                movements.append(
                    Movement(
                        line.owner_id, LineKind.EARN_REVERSALS, line.currency_code, line.credits, **_original(line)
                    )
                )
            movements.extend(_tier_bonus_movement(line))
        elif line.kind == KIND_PARTNER_REDEMPTION:
            if line.code == CODE_REDEEM and line.credits:
                movements.append(Movement(line.owner_id, LineKind.POINTS_REDEEMED, line.currency_code, line.credits))
            elif line.code == CODE_REVERSAL and line.debits:
                movements.append(
                    Movement(
                        line.owner_id, LineKind.REDEMPTION_REVERSALS, line.currency_code, line.debits, **_original(line)
                    )
                )
        elif line.kind == KIND_OPERATOR_EXCHANGE and line.code == CODE_CONVERSION and line.debits:
            delivered_code = line.currency_code
            from_code = exchange_other_currency(line.account_id)
            payer = _owner(currency_owners, from_code)
            payee = _owner(currency_owners, delivered_code)
            if payer == payee:
                continue
            if payer != OPERATOR_ID:
                movements.append(
                    Movement(
                        payer,
                        LineKind.CONVERSIONS_OUT,
                        delivered_code,
                        line.debits,
                        from_code,
                        payee,
                        from_code,
                    )
                )
            if payee != OPERATOR_ID:
                movements.append(
                    Movement(
                        payee,
                        LineKind.CONVERSIONS_IN,
                        delivered_code,
                        line.debits,
                        from_code,
                        payer,
                        from_code,
                    )
                )
    return movements


def _tier_bonus_movement(line: Activity) -> list[Movement]:
    """The bonus share of an issuance account's earns (issued) or earn reversals (reversed)."""
    if not line.tier_bonus_points or line.code not in (CODE_EARN, CODE_REVERSAL):
        return []
    issued = line.tier_bonus_points if line.code == CODE_EARN else 0
    reversed_ = line.tier_bonus_points if line.code == CODE_REVERSAL else 0
    return [
        Movement(
            line.owner_id,
            LineKind.TIER_BONUS,
            line.currency_code,
            issued - reversed_,
            bonus_issued=issued,
            bonus_reversed=reversed_,
            **(_original(line) if reversed_ else {}),
        )
    ]


def _original(line: Activity) -> dict:
    """A reversal line's pricing time and period of its originals, for its Movement."""
    return {"original_time_us": line.original_time_us, "original_period_id": line.original_period_id}


@dataclass(frozen=True, slots=True)
class BreakageActivity:
    """Points of one currency that one issuer put into circulation, expired and reinstated in a
    window (the ledger's GetBreakageSummary line, or one late EXPIRY or reinstatement)."""

    currency_code: str
    issuer_id: str
    expired: int
    reinstated: int


def breakage_movements(lines: Iterable[BreakageActivity]) -> list[Movement]:
    """One BREAKAGE movement per partner and currency. Points the operator issued (or that name
    no issuer) are the operator's breakage and appear on no statement."""
    return [
        Movement(
            line.issuer_id,
            LineKind.BREAKAGE,
            line.currency_code,
            line.expired - line.reinstated,
            expired=line.expired,
            reinstated=line.reinstated,
        )
        for line in lines
        if line.issuer_id not in ("", OPERATOR_ID) and (line.expired or line.reinstated)
    ]


def _owner(currency_owners: Mapping[str, str], code: str) -> str:
    owner = currency_owners.get(code)
    if owner is None:
        raise SettlementRuleError("CURRENCY_NOT_FOUND", f"currency {code} is not registered on the ledger")
    return owner


# ---------------------------------------------------------------- pricing and statements


@dataclass(frozen=True, slots=True)
class PricedMovement:
    movement: Movement
    unit_price: Decimal
    agreement_id: str
    prior_period_adjustment: bool
    breakage_owner: BreakageOwner | None = None  # BREAKAGE movements: the agreement's owner
    tier_bonus_funder: TierBonusFunder | None = None  # TIER_BONUS movements: the agreement's funder
    # Reversals priced at their originals' agreement: the closed period the originals were billed in.
    original_period_id: str = ""


def price_movements(
    movements: Iterable[Movement],
    book: AgreementBook,
    time_us: int,
    currency_owners: Mapping[str, str],
    prior_period_adjustment: bool = False,
) -> list[PricedMovement]:
    """Price each movement by the agreement valid at `time_us`; refuse when a price is missing.

    A reversal is priced at its original's price (DOMAIN.md "Decisions on open questions"): by the
    agreement valid at `movement.original_time_us` when it has one and the partner had an agreement
    then; otherwise (originals unknown, or older than every agreement) at `time_us`."""
    priced = []
    for movement in movements:
        at_us = time_us
        if movement.original_time_us is not None and book.valid_at(movement.partner_id, movement.original_time_us):
            at_us = movement.original_time_us
        agreement, unit_price = _price_of(movement, book, at_us, currency_owners)
        owner = agreement.breakage_owner if movement.kind is LineKind.BREAKAGE else None
        funder = agreement.tier_bonus_funder if movement.kind is LineKind.TIER_BONUS else None
        original_period_id = movement.original_period_id if at_us != time_us else ""
        priced.append(
            PricedMovement(
                movement,
                unit_price,
                agreement.agreement_id,
                prior_period_adjustment,
                owner,
                funder,
                original_period_id,
            )
        )
    return priced


def _price_of(
    movement: Movement, book: AgreementBook, time_us: int, currency_owners: Mapping[str, str]
) -> tuple[PriceAgreement, Decimal]:
    if movement.kind in (LineKind.CONVERSIONS_OUT, LineKind.CONVERSIONS_IN):
        from_code, to_code = movement.conversion_from, movement.currency_code
        for partner in (currency_owners.get(to_code), currency_owners.get(from_code)):
            agreement = book.valid_at(partner or "", time_us)
            price = agreement.conversion_price(from_code, to_code) if agreement else None
            if agreement is not None and price is not None:
                return agreement, price.price_per_unit_received
        raise SettlementRuleError(
            "PRICE_MISSING",
            f"no agreement valid at the time prices conversions {from_code} -> {to_code}; add a"
            " conversion price to the receiving programme's price agreement",
            from_currency_code=from_code,
            to_currency_code=to_code,
            time_us=time_us,
        )
    agreement = book.valid_at(movement.partner_id, time_us)
    operator_keeps = agreement is not None and agreement.breakage_owner is BreakageOwner.OPERATOR
    if movement.kind is LineKind.BREAKAGE and operator_keeps:
        return agreement, Decimal(0)  # shown at EUR 0.00: no price needed
    partner_funds = agreement is not None and agreement.tier_bonus_funder is TierBonusFunder.PARTNER
    if movement.kind is LineKind.TIER_BONUS and partner_funds:
        return agreement, Decimal(0)  # already billed inside the points issued: EUR 0.00 more
    point_price = agreement.point_price(movement.currency_code) if agreement else None
    if agreement is None or point_price is None:
        raise SettlementRuleError(
            "PRICE_MISSING",
            f"partner {movement.partner_id} has {movement.currency_code} activity but no price agreement"
            " valid at the time prices that currency; record one with SetPriceAgreement",
            partner_id=movement.partner_id,
            currency_code=movement.currency_code,
            time_us=time_us,
        )
    if movement.kind in (LineKind.POINTS_ISSUED, LineKind.EARN_REVERSALS, LineKind.BREAKAGE, LineKind.TIER_BONUS):
        # Breakage is rebated, and an operator-funded bonus credited, at the issue price.
        return agreement, point_price.issue_price
    return agreement, point_price.reimbursement_price


@dataclass(frozen=True, slots=True)
class StatementLine:
    kind: LineKind
    currency_code: str
    counterparty_currency_code: str
    counterparty_id: str
    quantity: int
    unit_price: Decimal
    amount_cents: int
    agreement_id: str
    prior_period_adjustment: bool
    expired_quantity: int = 0  # BREAKAGE lines only
    reinstated_quantity: int = 0  # BREAKAGE lines only
    breakage_owner: BreakageOwner | None = None  # BREAKAGE lines only
    tier_bonus_issued_quantity: int = 0  # TIER_BONUS lines only
    tier_bonus_reversed_quantity: int = 0  # TIER_BONUS lines only
    tier_bonus_funder: TierBonusFunder | None = None  # TIER_BONUS lines only
    # Reversal lines priced at the agreement of an earlier, closed period their originals were
    # billed in: that period's id ("" otherwise; the agreement_id is the one that priced the line).
    original_period_id: str = ""
    adjustment_id: str = ""  # ADJUSTMENT lines only: the adjustment posted
    adjustment_reason: str = ""  # ADJUSTMENT lines only: its reason, as posted


@dataclass(frozen=True, slots=True)
class Statement:
    partner_id: str
    lines: tuple[StatementLine, ...]
    settlement_transfer_id: str = ""

    @property
    def partner_pays_cents(self) -> int:
        return sum(line.amount_cents for line in self.lines if line.amount_cents > 0)

    @property
    def partner_is_paid_cents(self) -> int:
        return -sum(line.amount_cents for line in self.lines if line.amount_cents < 0)

    @property
    def net_cents(self) -> int:
        return sum(line.amount_cents for line in self.lines)

    def quantity(self, kind: LineKind) -> int:
        return sum(line.quantity for line in self.lines if line.kind == kind)


def build_statements(priced: Iterable[PricedMovement]) -> list[Statement]:
    """Group priced movements into lines (same kind, currency, counterparty, price, agreement and,
    for breakage, owner, for the tier bonus, funder), round each line once, one statement per
    partner ordered by partner id.

    A BREAKAGE line nets expired against reinstated points, a TIER_BONUS line bonus issued against
    bonus reversed; both are kept even when they cancel out: the statement shows the partner's
    breakage or tier bonus whenever it had any."""
    # Per line: quantity, expired, reinstated, bonus issued, bonus reversed.
    sums: dict[str, dict[tuple, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0, 0, 0, 0]))
    for item in priced:
        m = item.movement
        key = (
            item.prior_period_adjustment,
            _LINE_ORDER[m.kind],
            m.currency_code,
            m.counterparty_currency_code,
            m.counterparty_id,
            item.agreement_id,
            item.unit_price,
            item.breakage_owner.value if item.breakage_owner is not None else "",
            item.tier_bonus_funder.value if item.tier_bonus_funder is not None else "",
            item.original_period_id,
        )
        figures = sums[m.partner_id][key]
        for index, value in enumerate((m.quantity, m.expired, m.reinstated, m.bonus_issued, m.bonus_reversed)):
            figures[index] += value
    statements = []
    for partner_id in sorted(sums):
        lines = []
        for key in sorted(sums[partner_id], key=lambda k: (*k[:6], str(k[6]), *k[7:])):
            quantity, *parts = sums[partner_id][key]
            if quantity == 0 and not any(parts):
                continue
            lines.append(_statement_line(partner_id, key, quantity, *parts))
        if lines:
            statement = Statement(partner_id, tuple(lines))
            if max(statement.partner_pays_cents, statement.partner_is_paid_cents) > CENTS_MAX:
                raise SettlementRuleError(
                    "AMOUNT_TOO_LARGE",
                    f"{partner_id}'s statement exceeds the largest amount a statement can carry",
                    partner_id=partner_id,
                )
            statements.append(statement)
    if sum(abs(s.net_cents) for s in statements) > CENTS_MAX:
        raise SettlementRuleError("AMOUNT_TOO_LARGE", "the period's nets exceed the largest amount a period can carry")
    return statements


def _statement_line(
    partner_id: str, key: tuple, quantity: int, expired: int, reinstated: int, bonus_issued: int, bonus_reversed: int
) -> StatementLine:
    prior, order, currency, other_currency, counterparty, agreement_id, unit_price, owner, funder, original = key
    kind = list(LineKind)[order]
    amount_cents = kind.sign * line_amount_cents(quantity, unit_price)
    if abs(amount_cents) > CENTS_MAX:
        raise SettlementRuleError(
            "AMOUNT_TOO_LARGE",
            f"{partner_id}'s {kind.value} line ({quantity} x EUR {unit_price}) exceeds the largest"
            " amount a statement can carry; check the agreement's price",
            partner_id=partner_id,
            agreement_id=agreement_id,
        )
    return StatementLine(
        kind=kind,
        currency_code=currency,
        counterparty_currency_code=other_currency,
        counterparty_id=counterparty,
        quantity=quantity,
        unit_price=unit_price,
        amount_cents=amount_cents,
        agreement_id=agreement_id,
        prior_period_adjustment=prior,
        expired_quantity=expired,
        reinstated_quantity=reinstated,
        breakage_owner=BreakageOwner(owner) if owner else None,
        tier_bonus_issued_quantity=bonus_issued,
        tier_bonus_reversed_quantity=bonus_reversed,
        tier_bonus_funder=TierBonusFunder(funder) if funder else None,
        original_period_id=original,
    )


@dataclass(frozen=True, slots=True)
class Netting:
    operator_net_cents: int
    operator_net_from_lines_cents: int

    @property
    def balanced(self) -> bool:
        return self.operator_net_cents == self.operator_net_from_lines_cents


def netting(statements: Sequence[Statement]) -> Netting:
    """Sum of partner nets vs the operator's own side: lines whose counterparty is the operator.

    Conversions between two partners appear on both statements with opposite signs and the
    same rounding, so they cancel; the check proves it on every statement.
    """
    total = sum(s.net_cents for s in statements)
    operator_side = sum(
        line.amount_cents
        for s in statements
        for line in s.lines
        if line.kind not in (LineKind.CONVERSIONS_OUT, LineKind.CONVERSIONS_IN) or line.counterparty_id == OPERATOR_ID
    )
    return Netting(total, operator_side)


# ---------------------------------------------------------------- roll-forward


@dataclass(frozen=True, slots=True)
class RollForward:
    currency_code: str
    opening_outstanding: int
    issued: int = 0
    earn_reversed: int = 0
    redeemed: int = 0
    redemption_reversed: int = 0
    expired: int = 0
    reinstated: int = 0
    converted_in: int = 0
    converted_out: int = 0
    other_adjustments: int = 0
    closing_outstanding: int = 0

    def identity_holds(self) -> bool:
        return self.closing_outstanding == (
            self.opening_outstanding
            + self.issued
            - self.earn_reversed
            - self.redeemed
            + self.redemption_reversed
            - self.expired
            + self.reinstated
            + self.converted_in
            - self.converted_out
            + self.other_adjustments
        )


def wallet_net_change(lines: Iterable[Activity]) -> dict[str, int]:
    """Per currency, the change of all member wallets, computed from every other account.

    Each currency sums to zero, so what wallets gained is what the non-wallet accounts were
    debited net of credits. `lines` must cover every non-wallet account of the currency.
    """
    change: dict[str, int] = defaultdict(int)
    for line in lines:
        if line.kind != KIND_MEMBER_WALLET:
            change[line.currency_code] += line.debits - line.credits
    return dict(change)


def roll_forward(currency_code: str, opening_outstanding: int, lines: Iterable[Activity]) -> RollForward:
    """Classify one currency's flows between wallets and the rest of the ledger."""
    figures: dict[str, int] = defaultdict(int)
    net = 0
    for line in lines:
        if line.currency_code != currency_code or line.kind == KIND_MEMBER_WALLET:
            continue
        net += line.debits - line.credits
        if line.kind == KIND_PARTNER_ISSUANCE and line.code == CODE_EARN:
            figures["issued"] += line.debits
            figures["other"] -= line.credits
        elif line.kind == KIND_PARTNER_ISSUANCE and line.code == CODE_REVERSAL:
            figures["earn_reversed"] += line.credits
            figures["other"] += line.debits
        elif line.kind == KIND_PARTNER_REDEMPTION and line.code == CODE_REDEEM:
            figures["redeemed"] += line.credits
            figures["other"] += line.debits
        elif line.kind == KIND_PARTNER_REDEMPTION and line.code == CODE_REVERSAL:
            figures["redemption_reversed"] += line.debits
            figures["other"] -= line.credits
        elif line.kind == KIND_OPERATOR_BREAKAGE and line.code == CODE_EXPIRY:
            figures["expired"] += line.credits
            figures["other"] += line.debits
        elif line.kind == KIND_OPERATOR_BREAKAGE and line.code == CODE_REVERSAL:
            # The operator reinstating an expiry: breakage is debited back into the wallet.
            figures["reinstated"] += line.debits
            figures["other"] -= line.credits
        elif line.kind == KIND_OPERATOR_EXCHANGE and line.code == CODE_CONVERSION:
            figures["converted_in"] += line.debits
            figures["converted_out"] += line.credits
        else:
            figures["other"] += line.debits - line.credits
    return RollForward(
        currency_code=currency_code,
        opening_outstanding=opening_outstanding,
        issued=figures["issued"],
        earn_reversed=figures["earn_reversed"],
        redeemed=figures["redeemed"],
        redemption_reversed=figures["redemption_reversed"],
        expired=figures["expired"],
        reinstated=figures["reinstated"],
        converted_in=figures["converted_in"],
        converted_out=figures["converted_out"],
        other_adjustments=figures["other"],
        closing_outstanding=opening_outstanding + net,
    )


# ---------------------------------------------------------------- reconciliation


class MatchStatus(StrEnum):
    MATCHED = "MATCHED"
    MISSING_IN_LEDGER = "MISSING_IN_LEDGER"
    MISSING_AT_PARTNER = "MISSING_AT_PARTNER"
    AMOUNT_DIFFERS = "AMOUNT_DIFFERS"
    DUPLICATE = "DUPLICATE"
    STORE_DIFFERS = "STORE_DIFFERS"
    TERMINAL_DIFFERS = "TERMINAL_DIFFERS"
    OUTSIDE_PERIOD = "OUTSIDE_PERIOD"


@dataclass(frozen=True, slots=True)
class TransactionRow:
    """One row of either side: the partner's file (line_number >= 1) or the ledger (line_number 0).

    `currency_code` is empty only for a row of a file without the currency column, until
    `assign_currency` fills it in."""

    receipt_id: str
    store_id: str
    terminal_id: str
    time: str
    type: str
    points: int
    line_number: int = 0
    currency_code: str = ""


@dataclass(frozen=True, slots=True)
class ReconciledRow:
    status: MatchStatus
    line_number: int
    receipt_id: str
    store_id: str
    terminal_id: str
    type: str
    partner_points: int
    ledger_points: int
    time: str
    currency_code: str = ""


@dataclass(frozen=True, slots=True)
class ReconciliationResult:
    rows: tuple[ReconciledRow, ...]
    counts: dict[MatchStatus, int] = field(default_factory=dict)


def parse_partner_file(data: bytes) -> list[TransactionRow]:
    """Parse a partner's CSV (header receipt_id,store_id,terminal_id,time,type,points,currency;
    a file without the currency column is read with empty currencies, see assign_currency).

    Anything the file gets wrong is a SettlementRuleError INVALID_FILE naming the row
    (1 = the first data row): bad encoding or CSV quoting, an over-long field, control
    characters, a bad type, time or currency code, points that are not
    1..RECONCILIATION_POINTS_MAX in ASCII digits.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise SettlementRuleError(
            "INVALID_FILE", f"the file must be UTF-8 CSV (bad byte at offset {error.start})"
        ) from error
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader, None)
    except csv.Error as error:
        raise SettlementRuleError("INVALID_FILE", f"the header row is not valid CSV: {error}", line_number=0) from error
    columns = tuple(h.strip().lower() for h in header) if header is not None else ()
    if columns not in (RECONCILIATION_COLUMNS, RECONCILIATION_COLUMNS_WITHOUT_CURRENCY):
        raise SettlementRuleError(
            "INVALID_FILE", f"the first row must be the header {','.join(RECONCILIATION_COLUMNS)}"
        )
    rows = []
    number = 0
    while True:
        number += 1
        try:
            record = next(reader, None)
        except csv.Error as error:
            # e.g. a field beyond csv's field size limit, or a NUL byte: never an internal error.
            raise SettlementRuleError(
                "INVALID_FILE", f"row {number} is not valid CSV: {error}", line_number=number
            ) from error
        if record is None:
            break
        if not record or all(not value.strip() for value in record):
            continue
        rows.append(_partner_row(record, len(columns), number, len(rows)))
    return rows


def _partner_row(record: list[str], column_count: int, number: int, rows_before: int) -> TransactionRow:
    if rows_before >= RECONCILIATION_ROWS_MAX:
        raise SettlementRuleError("INVALID_FILE", f"the file has more than {RECONCILIATION_ROWS_MAX} rows")
    if len(record) != column_count:
        raise SettlementRuleError(
            "INVALID_FILE", f"row {number} has {len(record)} columns, expected {column_count}", line_number=number
        )
    values = [v.strip() for v in record]
    receipt_id, store_id, terminal_id, time_text, type_text, points_text = values[:6]
    currency_code = values[6] if column_count == len(RECONCILIATION_COLUMNS) else ""
    if not receipt_id or any(len(v) > RECONCILIATION_FIELD_LENGTH_MAX for v in record):
        raise SettlementRuleError(
            "INVALID_FILE",
            f"row {number}: receipt_id is required, fields at most 128 characters",
            line_number=number,
        )
    if any(_CONTROL_CHARACTERS.search(v) for v in values):
        raise SettlementRuleError(
            "INVALID_FILE", f"row {number}: fields may not contain control characters", line_number=number
        )
    if type_text.upper() not in RECONCILIATION_TYPES:
        raise SettlementRuleError(
            "INVALID_FILE",
            f"row {number}: type must be one of {', '.join(RECONCILIATION_TYPES)}, got {type_text!r}",
            line_number=number,
        )
    try:
        datetime.fromisoformat(time_text)
    except ValueError as error:
        raise SettlementRuleError(
            "INVALID_FILE", f"row {number}: time must be ISO 8601, got {time_text!r}", line_number=number
        ) from error
    # ASCII digits only: int() would also take "1_000", "+5", " 7" or non-ASCII digits such as "١٢".
    points = int(points_text) if points_text.isascii() and points_text.isdigit() else 0
    if not 0 < points <= RECONCILIATION_POINTS_MAX:
        raise SettlementRuleError(
            "INVALID_FILE",
            f"row {number}: points must be an integer 1..{RECONCILIATION_POINTS_MAX} in ASCII digits,"
            f" got {points_text!r}",
            line_number=number,
        )
    if column_count == len(RECONCILIATION_COLUMNS) and not _CURRENCY_PATTERN.fullmatch(currency_code):
        raise SettlementRuleError(
            "INVALID_FILE",
            f"row {number}: currency must be a currency code of 2..16 A-Z 0-9 _ (e.g. PTS), got {currency_code!r}",
            line_number=number,
        )
    return TransactionRow(
        receipt_id, store_id, terminal_id, time_text, type_text.upper(), points, number, currency_code
    )


def assign_currency(partner_rows: Sequence[TransactionRow], ledger_rows: Sequence[TransactionRow]):
    """Rows of a file without the currency column, in the one currency the ledger shows.

    Unambiguous only when the partner's ledger rows in the period are all in one currency (or
    there are none): then every row is read in it. Otherwise the file is refused
    (CURRENCY_COLUMN_REQUIRED), as a guess could match a receipt in the wrong currency."""
    if all(row.currency_code for row in partner_rows):
        return list(partner_rows)
    currencies = sorted({row.currency_code for row in ledger_rows})
    if len(currencies) > 1:
        raise SettlementRuleError(
            "CURRENCY_COLUMN_REQUIRED",
            f"the partner's ledger rows in this period are in {', '.join(currencies)}; add the column"
            f" currency to the file (header {','.join(RECONCILIATION_COLUMNS)})",
            currencies=",".join(currencies),
        )
    currency = currencies[0] if currencies else ""
    return [replace(row, currency_code=currency) for row in partner_rows]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _time_us(text: str, zone: tzinfo) -> int | None:
    """A row's ISO 8601 time in µs; a time without offset is in `zone`. None if it cannot be placed."""
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=zone)
        return (moment - _EPOCH) // timedelta(microseconds=1)
    except (ValueError, OverflowError):
        return None


def reconcile(
    partner_rows: Sequence[TransactionRow],
    ledger_rows: Sequence[TransactionRow],
    start_us: int,
    end_us: int,
    zone: tzinfo,
) -> ReconciliationResult:
    """Classify each row. Rows are keyed by (receipt id, type, currency) and both sides are summed
    per key: two partial returns of one receipt are two rows on each side, compared as their totals;
    a receipt paid 200 PTS + 500 HOTELPTS is two keys, never 700 of anything.

    Each partner row gets the first status that applies, in this order:
    DUPLICATE (identical to an earlier row, all columns; left out of the sum), OUTSIDE_PERIOD (its
    time is not in [start, end); a time without offset is in `zone`; left out of the sum),
    MISSING_IN_LEDGER (no such key on the ledger), AMOUNT_DIFFERS (the key's totals differ),
    STORE_DIFFERS / TERMINAL_DIFFERS (the row's store or terminal is not one the ledger recorded
    for the key), else MATCHED. Each row shows its own points and the ledger's total for the key."""
    ledger: dict[tuple[str, str, str], TransactionRow] = {}
    ledger_points: dict[tuple[str, str, str], int] = defaultdict(int)
    ledger_places: dict[tuple[str, str, str], set[tuple[str, str]]] = defaultdict(set)
    for row in ledger_rows:
        key = (row.receipt_id, row.type, row.currency_code)
        ledger.setdefault(key, row)
        ledger_points[key] += row.points
        ledger_places[key].add((row.store_id, row.terminal_id))
    statuses: list[MatchStatus | None] = []
    identities: set[tuple] = set()
    partner_points: dict[tuple[str, str, str], int] = defaultdict(int)
    for row in partner_rows:
        identity = (row.receipt_id, row.store_id, row.terminal_id, row.time, row.type, row.points, row.currency_code)
        time_us = _time_us(row.time, zone)
        if identity in identities:
            statuses.append(MatchStatus.DUPLICATE)
        elif time_us is None or not start_us <= time_us < end_us:
            statuses.append(MatchStatus.OUTSIDE_PERIOD)
        else:
            statuses.append(None)  # decided once the key's totals are known
            partner_points[(row.receipt_id, row.type, row.currency_code)] += row.points
        identities.add(identity)
    seen: set[tuple[str, str, str]] = set()
    results: list[ReconciledRow] = []
    for row, status in zip(partner_rows, statuses, strict=True):
        key = (row.receipt_id, row.type, row.currency_code)
        on_ledger = ledger_points.get(key, 0)
        if status is None:
            seen.add(key)
            status = _status_in_period(row, key in ledger, on_ledger, partner_points[key], ledger_places[key])
        results.append(
            ReconciledRow(
                status,
                row.line_number,
                row.receipt_id,
                row.store_id,
                row.terminal_id,
                row.type,
                row.points,
                on_ledger,
                row.time,
                row.currency_code,
            )
        )
    for key, row in ledger.items():
        if key not in seen:
            results.append(
                ReconciledRow(
                    MatchStatus.MISSING_AT_PARTNER,
                    0,
                    row.receipt_id,
                    row.store_id,
                    row.terminal_id,
                    row.type,
                    0,
                    ledger_points[key],
                    row.time,
                    row.currency_code,
                )
            )
    counts = {status: 0 for status in MatchStatus}
    for result in results:
        counts[result.status] += 1
    return ReconciliationResult(tuple(results), counts)


def _status_in_period(
    row: TransactionRow, on_ledger: bool, ledger_total: int, partner_total: int, places: set[tuple[str, str]]
) -> MatchStatus:
    if not on_ledger:
        return MatchStatus.MISSING_IN_LEDGER
    if ledger_total != partner_total:
        return MatchStatus.AMOUNT_DIFFERS
    if row.store_id not in {store for store, _ in places}:
        return MatchStatus.STORE_DIFFERS
    if (row.store_id, row.terminal_id) not in places:
        return MatchStatus.TERMINAL_DIFFERS
    return MatchStatus.MATCHED


# ---------------------------------------------------------------- a period's settlement


@dataclass(frozen=True, slots=True)
class PeriodSettlement:
    period_id: str
    start_us: int
    end_us: int
    closed: bool
    statements: tuple[Statement, ...]
    roll_forwards: tuple[RollForward, ...]
    last_commit_sequence: int
    close_time_us: int = 0
    # One documents.StatementDocument per statement (number, dates, tax, parties, store lines);
    # empty for periods closed before documents existed.
    documents: tuple = ()

    @property
    def netting(self) -> Netting:
        return netting(self.statements)

    def document(self, partner_id: str):
        return next((d for d in self.documents if d.partner_id == partner_id), None)

    def statement(self, partner_id: str) -> Statement | None:
        return next((s for s in self.statements if s.partner_id == partner_id), None)
