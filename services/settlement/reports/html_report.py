"""Self-contained HTML: an overview of all partners (tables and charts) or one partner's statement."""

from __future__ import annotations

from html import escape
from zoneinfo import ZoneInfo

from services.settlement.model import PeriodSettlement, Statement
from services.settlement.reports.chart import issued_vs_redeemed_svg, net_positions_svg
from services.settlement.reports.formatting import (
    eur,
    line_label,
    net_sentence,
    period_label,
    points,
    points_by_currency,
    points_summaries,
    price,
)

STYLE = """
body{font-family:Helvetica,Arial,sans-serif;margin:2em;color:#1a202c}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}
th,td{border-bottom:1px solid #cbd5e0;padding:4px 10px;text-align:left}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.total td{font-weight:bold;border-top:2px solid #4a5568}
.check{padding:6px 10px;display:inline-block}.ok{background:#c6f6d5}.bad{background:#fed7d7}
"""


def _page(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>{body}</body></html>"
    )


def _statement_table(statement: Statement) -> str:
    rows = []
    for line in statement.lines:
        rows.append(
            "<tr>"
            f"<td>{escape(line_label(line))}</td>"
            f"<td>{escape(line.currency_code)}</td>"
            f'<td class="n">{points(line.quantity)}</td>'
            f'<td class="n">{escape(price(line.unit_price))}</td>'
            f'<td class="n">{escape(eur(line.amount_cents))}</td>'
            f"<td>{escape(line.agreement_id)}</td></tr>"
        )
    return (
        '<table><tr><th>line</th><th>currency</th><th class="n">quantity</th><th class="n">unit price</th>'
        '<th class="n">amount</th><th>agreement</th></tr>'
        + "".join(rows)
        + '<tr class="total"><td colspan="4">partner pays</td>'
        f'<td class="n">{eur(statement.partner_pays_cents)}'
        "</td><td></td></tr>" + f'<tr class="total"><td colspan="4">partner is paid</td>'
        f'<td class="n">{eur(statement.partner_is_paid_cents)}</td><td></td></tr>'
        + f'<tr class="total"><td colspan="4">net ({escape(net_sentence(statement))})</td>'
        f'<td class="n">{eur(statement.net_cents)}</td><td></td></tr></table>'
    )


def _summary_rows(statement: Statement) -> str:
    """One row per currency the partner issued or redeemed in; its EUR figures on the first row."""
    summaries = points_summaries(statement)
    money = (
        f'<td class="n">{eur(statement.partner_pays_cents)}</td>'
        f'<td class="n">{eur(statement.partner_is_paid_cents)}</td>'
        f'<td class="n">{eur(statement.net_cents)}</td><td>{escape(net_sentence(statement))}</td>'
    )
    if not summaries:
        return f'<tr><td>{escape(statement.partner_id)}</td><td></td><td class="n"></td><td class="n"></td>{money}</tr>'
    rows = []
    for index, summary in enumerate(summaries):
        rows.append(
            f"<tr><td>{escape(statement.partner_id)}</td><td>{escape(summary.currency_code)}</td>"
            f'<td class="n">{points(summary.issued)}</td><td class="n">{points(summary.redeemed)}</td>'
            + (money if index == 0 else '<td class="n"></td><td class="n"></td><td class="n"></td><td></td>')
            + "</tr>"
        )
    return "".join(rows)


def render_html(settlement: PeriodSettlement, partner_id: str, zone: ZoneInfo) -> str:
    label = period_label(settlement, zone)
    note = (
        "<p>Each line is quantity &times; unit price, rounded half-even to cents once; totals are sums of"
        " lines. A positive amount is paid by the partner, a negative one is paid to the partner.</p>"
    )
    if partner_id:
        statement = settlement.statement(partner_id) or Statement(partner_id, ())
        body = (
            f"<h1>Settlement statement: {escape(partner_id)}</h1><p>{escape(label)}</p>"
            + _statement_table(statement)
            + (
                f"<p>Posted on the ledger as transfer {escape(statement.settlement_transfer_id)}.</p>"
                if statement.settlement_transfer_id
                else ""
            )
            + note
        )
        return _page(f"Settlement {settlement.period_id} {partner_id}", body)
    netting = settlement.netting
    summary_rows = [_summary_rows(statement) for statement in settlement.statements]
    charts = "".join(
        f"<h2>{escape(code)} issued and redeemed per partner</h2>" + issued_vs_redeemed_svg(code, rows)
        for code, rows in points_by_currency(settlement.statements).items()
    )
    check_class = "ok" if netting.balanced else "bad"
    check = (
        f'<p class="check {check_class}">Sum of partner nets {eur(netting.operator_net_cents)}; operator side'
        f" computed from its own lines {eur(netting.operator_net_from_lines_cents)}:"
        f" {'they agree' if netting.balanced else 'THEY DO NOT AGREE'}.</p>"
    )
    roll = "".join(
        f"<tr><td>{escape(rf.currency_code)}</td><td class='n'>{points(rf.opening_outstanding)}</td>"
        f"<td class='n'>{points(rf.issued - rf.earn_reversed)}</td>"
        f"<td class='n'>{points(rf.redeemed - rf.redemption_reversed)}</td>"
        f"<td class='n'>{points(rf.expired)}</td>"
        f"<td class='n'>{points(rf.reinstated)}</td>"
        f"<td class='n'>{points(rf.converted_in - rf.converted_out)}</td>"
        f"<td class='n'>{points(rf.other_adjustments)}</td>"
        f"<td class='n'>{points(rf.closing_outstanding)}</td></tr>"
        for rf in settlement.roll_forwards
    )
    body = (
        f"<h1>Settlement overview</h1><p>{escape(label)}</p>"
        '<table><tr><th>partner</th><th>currency</th><th class="n">points issued</th>'
        '<th class="n">points redeemed</th><th class="n">partner pays</th><th class="n">partner is paid</th>'
        '<th class="n">net</th><th></th></tr>'
        + "".join(summary_rows)
        + f'<tr class="total"><td colspan="6">operator net cash for the period</td>'
        f'<td class="n">{eur(netting.operator_net_cents)}</td><td></td></tr></table>'
        + "<p>Points are shown per currency, in that currency's units; EUR columns are per partner.</p>"
        + check
        + charts
        + "<h2>Net positions (right: partner pays; left: partner is paid)</h2>"
        + net_positions_svg([(s.partner_id, s.net_cents) for s in settlement.statements])
        + "<h2>Points liability roll-forward</h2>"
        "<table><tr><th>currency</th><th class='n'>opening</th><th class='n'>issued (net)</th>"
        "<th class='n'>redeemed (net)</th><th class='n'>expired</th><th class='n'>reinstated</th>"
        "<th class='n'>converted (in - out)</th>"
        f"<th class='n'>other</th><th class='n'>closing</th></tr>{roll}</table>"
        + "".join(f"<h2>Statement: {escape(s.partner_id)}</h2>" + _statement_table(s) for s in settlement.statements)
        + note
    )
    return _page(f"Settlement {settlement.period_id} overview", body)
