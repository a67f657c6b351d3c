"""The period's journal for an accounting system: CSV and beancount, the same postings in both.

Every statement line with a non-zero amount is one journal entry of two postings, in EUR,
dated the period's last day (coalition time zone):
- the partner's account `Assets:Partners:<PARTNER>` (what the partner owes the operator; the
  ledger's `settlement:EUR:<partner>`): debited by what the partner pays, credited by what it is paid;
- the other side by line kind (and points currency):
  POINTS_ISSUED, EARN_REVERSALS            -> Income:Points:Issued:<CUR>
  POINTS_REDEEMED, REDEMPTION_REVERSALS    -> Expenses:Points:Redeemed:<CUR>
  TIER_BONUS                               -> Expenses:Points:TierBonus:<CUR>
  BREAKAGE                                 -> Expenses:Points:BreakageRebate:<CUR>
  CONVERSIONS_* with the operator          -> Income:Points:Conversions:<CUR>
  CONVERSIONS_* between two partners       -> Liabilities:Points:ConversionClearing:<CUR>
    (what one partner pays for its members' conversions the operator passes to the other: the
    clearing account nets to zero over a period whose netting check holds).
A statement's tax (its document's tax_cents, the sign of the net) is one more entry between the
partner's account and `Liabilities:Tax:VAT` (VAT owed on what partners pay; VAT the operator can
reclaim when it pays, as a debit), referenced `<period>/<partner>/tax`.
So each partner account ends the period at the statement's gross (what the ledger's EUR settlement
transfer moves; the net when there is no tax), and the journal balances.
The references are `<period>/<partner>/<line number>`, shared by an entry's two postings.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from zoneinfo import ZoneInfo

from services.settlement.model import LineKind, PeriodSettlement, StatementLine
from services.settlement.scheme import PeriodWarning, local_time

CURRENCY = "EUR"
JOURNAL_COLUMNS = ("date", "account", "debit", "credit", "currency", "reference", "description")
_LOSSLESS = re.compile(r"^(?:[a-z0-9][a-z0-9-]*|[A-Z0-9]+)$")
_NOT_COMPONENT = re.compile(r"[^A-Za-z0-9-]")
_OTHER_SIDE = {
    LineKind.POINTS_ISSUED: "Income:Points:Issued",
    LineKind.EARN_REVERSALS: "Income:Points:Issued",
    LineKind.POINTS_REDEEMED: "Expenses:Points:Redeemed",
    LineKind.REDEMPTION_REVERSALS: "Expenses:Points:Redeemed",
    LineKind.TIER_BONUS: "Expenses:Points:TierBonus",
    LineKind.BREAKAGE: "Expenses:Points:BreakageRebate",
}
OPERATOR_ID = "operator"
TAX_ACCOUNT = "Liabilities:Tax:VAT"


@dataclass(frozen=True, slots=True)
class Entry:
    """One statement line as a balanced entry: `amount_cents` debited to `debit`, credited to `credit`."""

    day: date
    reference: str
    description: str
    debit: str
    credit: str
    amount_cents: int


def account_component(identifier: str) -> str:
    """A partner id or currency code as one beancount account component (capitalised, A-Z a-z 0-9 -).

    Ids other than lower-case letters, digits and dashes (partners) or upper-case letters and digits
    (currencies) get a short hash, so two ids never share an account (`fuel_co` and `fuel-co`)."""
    component = _NOT_COMPONENT.sub("-", identifier) or "X"
    component = component[0].upper() + component[1:]
    if not component[0].isalnum():
        component = "X" + component
    if not _LOSSLESS.fullmatch(identifier):
        component += "-" + hashlib.sha256(identifier.encode()).hexdigest()[:8]
    return component


def partner_account(partner_id: str) -> str:
    return f"Assets:Partners:{account_component(partner_id)}"


def _other_side(line: StatementLine) -> str:
    currency = account_component(line.currency_code)
    if line.kind in (LineKind.CONVERSIONS_OUT, LineKind.CONVERSIONS_IN):
        with_operator = line.counterparty_id == OPERATOR_ID
        base = "Income:Points:Conversions" if with_operator else "Liabilities:Points:ConversionClearing"
        return f"{base}:{currency}"
    return f"{_OTHER_SIDE[line.kind]}:{currency}"


def last_day(settlement: PeriodSettlement, zone: ZoneInfo) -> date:
    return local_time(max(settlement.end_us - 1, settlement.start_us), zone).date()


def first_day(settlement: PeriodSettlement, zone: ZoneInfo) -> date:
    return local_time(settlement.start_us, zone).date()


def entries(settlement: PeriodSettlement, zone: ZoneInfo, partner_id: str = "") -> list[Entry]:
    day = last_day(settlement, zone)
    result = []
    for statement in settlement.statements:
        if partner_id and statement.partner_id != partner_id:
            continue
        for number, line in enumerate(statement.lines, start=1):
            if line.amount_cents == 0:
                continue
            prior = " (prior-period adjustment)" if line.prior_period_adjustment else ""
            description = (
                f"{statement.partner_id} {line.kind.value} {line.quantity} {line.currency_code}"
                f" x EUR {line.unit_price} ({line.agreement_id}){prior}"
            )
            own, other = partner_account(statement.partner_id), _other_side(line)
            debit, credit = (own, other) if line.amount_cents > 0 else (other, own)
            reference = f"{settlement.period_id}/{statement.partner_id}/{number}"
            result.append(Entry(day, reference, description, debit, credit, abs(line.amount_cents)))
        tax = _tax_entry(settlement, statement.partner_id, day)
        if tax is not None:
            result.append(tax)
    return result


def _tax_entry(settlement: PeriodSettlement, partner_id: str, day: date) -> Entry | None:
    document = settlement.document(partner_id)
    if document is None or document.tax_cents == 0:
        return None
    own = partner_account(partner_id)
    debit, credit = (own, TAX_ACCOUNT) if document.tax_cents > 0 else (TAX_ACCOUNT, own)
    description = f"{partner_id} tax {document.tax_rate_percent.normalize()} % on the net ({document.tax_note})"
    reference = f"{settlement.period_id}/{partner_id}/tax"
    return Entry(day, reference, description, debit, credit, abs(document.tax_cents))


def decimal_eur(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    whole, fraction = divmod(abs(cents), 100)
    return f"{sign}{whole}.{fraction:02d}"


# A spreadsheet runs a cell starting with one of these as a formula: text cells get a leading quote.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_text(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


def render_journal_csv(settlement: PeriodSettlement, zone: ZoneInfo, partner_id: str = "") -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(JOURNAL_COLUMNS)
    for entry in entries(settlement, zone, partner_id):
        amount = decimal_eur(entry.amount_cents)
        for account, debit, credit in ((entry.debit, amount, ""), (entry.credit, "", amount)):
            reference, description = spreadsheet_text(entry.reference), spreadsheet_text(entry.description)
            writer.writerow((entry.day.isoformat(), account, debit, credit, CURRENCY, reference, description))
    return buffer.getvalue()


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


def render_beancount(
    settlement: PeriodSettlement, zone: ZoneInfo, partner_id: str = "", warnings: Sequence[PeriodWarning] = ()
) -> str:
    journal = entries(settlement, zone, partner_id)
    state = "closed" if settlement.closed else "PREVIEW (not closed; figures may change)"
    lines = [
        f"; Coalition settlement journal, period {settlement.period_id}, {state}",
        *(f"; warning: {w.message}" for w in warnings),
        'option "title" ' + _quoted(f"Coalition settlement {settlement.period_id}"),
        f'option "operating_currency" "{CURRENCY}"',
        "",
    ]
    opened = first_day(settlement, zone).isoformat()
    for account in sorted({a for e in journal for a in (e.debit, e.credit)}):
        lines.append(f"{opened} open {account} {CURRENCY}")
    for entry in journal:
        amount = decimal_eur(entry.amount_cents)
        lines += [
            "",
            f"{entry.day.isoformat()} * {_quoted('coalition settlement')} {_quoted(entry.description)}",
            f"  reference: {_quoted(entry.reference)}",
            f"  {entry.debit}  {amount} {CURRENCY}",
            f"  {entry.credit}  -{amount} {CURRENCY}",
        ]
    return "\n".join(lines) + "\n"
