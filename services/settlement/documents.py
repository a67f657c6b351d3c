"""Statements as documents (DOMAIN.md "Statements are documents"): billing details, statement
numbers, issue and due dates, tax, and the per-store lines under a partner's totals.

Plain Python, like model.py: no grpc, no sqlalchemy. Money is int EUR cents; the tax is rounded
half-even to cents exactly once, on the statement's net.

Sign convention (the same as the statement's net): a positive net, tax and gross are paid by the
partner to the operator; negative ones by the operator to the partner. The tax follows the net's
sign: the supply is the operator's when the partner pays and the partner's when it is paid, both
at the agreement's rate (a reverse-charge agreement sets rate 0 and the note that says so).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from zoneinfo import ZoneInfo

from services.settlement.model import LineKind, PriceAgreement, SettlementRuleError, Statement

# ---------------------------------------------------------------- limits (one place)

PAYMENT_TERMS_DAYS_DEFAULT = 30
PAYMENT_TERMS_DAYS_MAX = 365
TAX_RATE_PERCENT_MAX = Decimal(100)
TAX_RATE_DECIMAL_PLACES_MAX = 4
TAX_NOTE_LENGTH_MAX = 500
LEGAL_NAME_LENGTH_MAX = 200
ADDRESS_LENGTH_MAX = 500
BILLING_EMAIL_LENGTH_MAX = 254
STATEMENT_NUMBER_PREFIX = "ST"
STATEMENT_NUMBER_DIGITS = 6

_EXACT = Context(prec=80)
_IBAN_PATTERN = re.compile(r"[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}")
# A VAT id: the member state (or country) prefix and its national number (EU VIES: 2..13 characters).
_VAT_ID_PATTERN = re.compile(r"[A-Z]{2}[A-Z0-9+*]{2,13}")
_EMAIL_PATTERN = re.compile(r"[^@\s]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")  # newline allowed (addresses have lines)
_CONTROL_NO_NEWLINE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


# ---------------------------------------------------------------- billing details


@dataclass(frozen=True, slots=True)
class BillingDetails:
    legal_name: str
    address: str
    vat_id: str
    iban: str
    billing_email: str = ""


@dataclass(frozen=True, slots=True)
class BillingVersion:
    """One version of a partner's billing details, effective from a time until the next version."""

    billing_details_id: str
    partner_id: str
    effective_from_us: int
    details: BillingDetails

    def content_key(self) -> tuple:
        return (self.partner_id, self.effective_from_us, self.details)


def iban_checksum_ok(iban: str) -> bool:
    """ISO 13616: move the first four characters to the end, letters to 10..35, the number mod 97 is 1."""
    rearranged = iban[4:] + iban[:4]
    digits = "".join(str(int(character, 36)) for character in rearranged)
    return int(digits) % 97 == 1


def normalise_iban(text: str) -> str:
    iban = re.sub(r"\s+", "", text).upper()
    if not _IBAN_PATTERN.fullmatch(iban) or not iban_checksum_ok(iban):
        raise SettlementRuleError(
            "INVALID_IBAN", "iban must be a valid IBAN (country, check digits, 11..30 letters or digits, mod-97)"
        )
    return iban


def normalise_vat_id(text: str) -> str:
    vat_id = re.sub(r"[\s.\-]+", "", text).upper()
    if not _VAT_ID_PATTERN.fullmatch(vat_id):
        raise SettlementRuleError(
            "INVALID_VAT_ID",
            "vat_id must be a 2-letter country prefix and 2..13 letters or digits, e.g. NL123456789B01",
        )
    return vat_id


def _text(value: str, field: str, length_max: int, multiline: bool = False) -> str:
    value = value.strip()
    control = _CONTROL if multiline else _CONTROL_NO_NEWLINE
    if not 1 <= len(value) <= length_max or control.search(value):
        raise SettlementRuleError(
            "INVALID_BILLING_DETAILS",
            f"{field} must be 1..{length_max} characters without control characters",
            field=field,
        )
    return value


def validate_billing_details(details: BillingDetails, email_required: bool = True) -> BillingDetails:
    """The normalised details (IBAN and VAT id upper case without spaces), or SettlementRuleError."""
    email = details.billing_email.strip()
    well_formed = len(email) <= BILLING_EMAIL_LENGTH_MAX and _EMAIL_PATTERN.fullmatch(email)
    if (email or email_required) and not well_formed:
        raise SettlementRuleError("INVALID_BILLING_EMAIL", "billing_email must be an e-mail address (name@domain)")
    return BillingDetails(
        legal_name=_text(details.legal_name, "legal_name", LEGAL_NAME_LENGTH_MAX),
        address=_text(details.address.replace("\r\n", "\n"), "address", ADDRESS_LENGTH_MAX, multiline=True),
        vat_id=normalise_vat_id(details.vat_id),
        iban=normalise_iban(details.iban),
        billing_email=email,
    )


def billing_in_effect(versions: Iterable[BillingVersion], partner_id: str, time_us: int) -> BillingDetails | None:
    """The partner's latest version effective at or before time_us."""
    found: BillingVersion | None = None
    for version in versions:
        if version.partner_id != partner_id or version.effective_from_us > time_us:
            continue
        if found is None or version.effective_from_us > found.effective_from_us:
            found = version
    return found.details if found is not None else None


# ---------------------------------------------------------------- terms and tax


def parse_tax_rate(text: str) -> Decimal:
    """A percent 0..100 with at most 4 decimals; empty is 0."""
    if not text.strip():
        return Decimal(0)
    try:
        rate = Decimal(text.strip())
    except InvalidOperation as error:
        raise SettlementRuleError(
            "INVALID_TAX_RATE", f"tax_rate_percent must be a decimal such as 21, got {text!r}"
        ) from error
    exponent = rate.as_tuple().exponent
    if (
        not rate.is_finite()
        or not 0 <= rate <= TAX_RATE_PERCENT_MAX
        or (isinstance(exponent, int) and -exponent > TAX_RATE_DECIMAL_PLACES_MAX)
    ):
        raise SettlementRuleError(
            "INVALID_TAX_RATE",
            f"tax_rate_percent must be 0..100 with at most {TAX_RATE_DECIMAL_PLACES_MAX} decimals, got {text!r}",
        )
    return rate


def validate_terms(payment_terms_days: int, tax_note: str) -> None:
    if not 0 <= payment_terms_days <= PAYMENT_TERMS_DAYS_MAX:
        raise SettlementRuleError(
            "INVALID_PAYMENT_TERMS", f"payment_terms_days must be 0..{PAYMENT_TERMS_DAYS_MAX} (0: the default)"
        )
    if len(tax_note) > TAX_NOTE_LENGTH_MAX or _CONTROL_NO_NEWLINE.search(tax_note):
        raise SettlementRuleError(
            "INVALID_TAX_NOTE", f"tax_note must be at most {TAX_NOTE_LENGTH_MAX} characters without control characters"
        )


def tax_cents(net_cents: int, rate_percent: Decimal) -> int:
    """|net| x rate / 100, rounded half-even to cents once, with the net's sign."""
    exact = _EXACT.divide(_EXACT.multiply(Decimal(abs(net_cents)), rate_percent), Decimal(100))
    rounded = int(exact.quantize(Decimal(1), rounding=ROUND_HALF_EVEN, context=_EXACT))
    return rounded if net_cents >= 0 else -rounded


def issue_date(time_us: int, zone: ZoneInfo) -> date:
    """The calendar date of a time in the coalition time zone."""
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=time_us)).astimezone(zone).date()


def due_date(issued: date, payment_terms_days: int) -> date:
    return issued + timedelta(days=payment_terms_days)


def statement_number_series(issued: date) -> str:
    """The gapless series a statement issued on that date is numbered in: one per issue year."""
    return f"{STATEMENT_NUMBER_PREFIX}-{issued.year:04d}"


def statement_number(series: str, number: int) -> str:
    if number < 1:
        raise ValueError("statement numbers start at 1")
    return f"{series}-{number:0{STATEMENT_NUMBER_DIGITS}d}"


# ---------------------------------------------------------------- store lines


@dataclass(frozen=True, slots=True)
class StoreActivity:
    """A ledger GetActivitySummary line grouped by store (partner issuance or redemption accounts)."""

    owner_id: str
    kind: str  # account kind
    code: str  # transfer code
    currency_code: str
    store_id: str
    debits: int
    credits: int
    transfer_count: int


@dataclass(frozen=True, slots=True)
class StoreLine:
    store_id: str
    kind: LineKind
    currency_code: str
    transaction_count: int
    quantity: int


# (account kind, transfer code, side) -> the statement line the movement belongs to.
_STORE_LINE_KIND = {
    ("partner_issuance", "EARN", "debit"): LineKind.POINTS_ISSUED,
    ("partner_issuance", "REVERSAL", "credit"): LineKind.EARN_REVERSALS,
    ("partner_redemption", "REDEEM", "credit"): LineKind.POINTS_REDEEMED,
    ("partner_redemption", "REVERSAL", "debit"): LineKind.REDEMPTION_REVERSALS,
}
_KIND_ORDER = {kind: index for index, kind in enumerate(LineKind)}


def store_lines(activity: Iterable[StoreActivity]) -> dict[str, tuple[StoreLine, ...]]:
    """Per partner: one line per store, line kind and currency, ordered by store, kind and currency.

    An account/code pair moving on both sides (rare: a reversal of a reversal) counts each side's
    transfers once per line it lands on."""
    sums: dict[str, dict[tuple[str, LineKind, str], list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for line in activity:
        for side, amount in (("debit", line.debits), ("credit", line.credits)):
            kind = _STORE_LINE_KIND.get((line.kind, line.code, side))
            if kind is None or amount <= 0:
                continue
            figures = sums[line.owner_id][(line.store_id, kind, line.currency_code)]
            figures[0] += line.transfer_count
            figures[1] += amount
    return {
        partner: tuple(
            StoreLine(store, kind, code, count, quantity)
            for (store, kind, code), (count, quantity) in sorted(
                lines.items(), key=lambda item: (item[0][0], _KIND_ORDER[item[0][1]], item[0][2])
            )
        )
        for partner, lines in sums.items()
    }


# ---------------------------------------------------------------- the document


@dataclass(frozen=True, slots=True)
class StatementDocument:
    partner_id: str
    statement_number: str  # empty on a preview (a DRAFT)
    issue_date: date
    due_date: date
    payment_terms_days: int
    tax_rate_percent: Decimal
    tax_note: str
    net_cents: int
    tax_cents: int
    gross_cents: int
    agreement_id: str
    partner_billing: BillingDetails | None
    operator_billing: BillingDetails | None
    store_lines: tuple[StoreLine, ...] = ()

    @property
    def draft(self) -> bool:
        return not self.statement_number


def build_document(
    statement: Statement,
    agreement: PriceAgreement | None,
    partner_billing: BillingDetails | None,
    operator_billing: BillingDetails | None,
    lines_by_store: Mapping[str, tuple[StoreLine, ...]],
    issued: date,
    number: str = "",
) -> StatementDocument:
    """The document of one statement; `agreement` is the partner's version in effect at the period end."""
    terms = agreement.payment_terms_days if agreement is not None else PAYMENT_TERMS_DAYS_DEFAULT
    rate = agreement.tax_rate_percent if agreement is not None else Decimal(0)
    tax = tax_cents(statement.net_cents, rate)
    return StatementDocument(
        partner_id=statement.partner_id,
        statement_number=number,
        issue_date=issued,
        due_date=due_date(issued, terms),
        payment_terms_days=terms,
        tax_rate_percent=rate,
        tax_note=agreement.tax_note if agreement is not None else "",
        net_cents=statement.net_cents,
        tax_cents=tax,
        gross_cents=statement.net_cents + tax,
        agreement_id=agreement.agreement_id if agreement is not None else "",
        partner_billing=partner_billing,
        operator_billing=operator_billing,
        store_lines=lines_by_store.get(statement.partner_id, ()),
    )


def sign_convention_sentence() -> str:
    return (
        "Sign convention: a positive amount is paid by the partner to the operator; a negative amount"
        " is paid by the operator to the partner. Net, tax and gross carry the same sign."
    )


def payment_sentence(document: StatementDocument, operator_name: str = "the operator") -> str:
    """Who pays whom, how much and by when."""
    due = document.due_date.isoformat()
    if document.gross_cents > 0:
        return f"{document.partner_id} pays {operator_name} the gross amount by {due}"
    if document.gross_cents < 0:
        return f"{operator_name} pays {document.partner_id} the gross amount by {due}"
    return "nothing to pay"
