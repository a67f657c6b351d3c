"""Inline SVG charts for the HTML overview: no scripts, no external resources."""

from __future__ import annotations

from html import escape

from services.settlement.reports.formatting import PointsSummary, eur, points

BAR_WIDTH = 34
GROUP_GAP = 50
CHART_HEIGHT = 220
LABEL_HEIGHT = 40
ISSUED_COLOUR = "#2b6cb0"
REDEEMED_COLOUR = "#dd6b20"
PAYS_COLOUR = "#2f855a"
PAID_COLOUR = "#c53030"


def issued_vs_redeemed_svg(currency_code: str, rows: list[PointsSummary]) -> str:
    """Grouped bars per partner, for one currency: units issued (net of reversals) and redeemed (net)."""
    peak = max([1, *(max(r.issued, r.redeemed) for r in rows)])
    group = 2 * BAR_WIDTH + GROUP_GAP
    width = max(320, 60 + group * len(rows))
    height = CHART_HEIGHT + LABEL_HEIGHT + 30
    code = escape(currency_code)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img"'
        f' aria-label="{code} issued and redeemed per partner">',
        f'<rect x="50" y="4" width="12" height="12" fill="{ISSUED_COLOUR}"/>'
        f'<text x="66" y="15" font-size="12">{code} issued</text>',
        f'<rect x="170" y="4" width="12" height="12" fill="{REDEEMED_COLOUR}"/>'
        f'<text x="186" y="15" font-size="12">{code} redeemed</text>',
        f'<line x1="40" y1="{CHART_HEIGHT + 24}" x2="{width - 10}" y2="{CHART_HEIGHT + 24}" stroke="#555"/>',
    ]
    for index, row in enumerate(rows):
        x = 50 + index * group
        for offset, value, colour, what in (
            (0, row.issued, ISSUED_COLOUR, "issued"),
            (BAR_WIDTH, row.redeemed, REDEEMED_COLOUR, "redeemed"),
        ):
            bar = round((CHART_HEIGHT - 16) * max(value, 0) / peak)  # room above for the figure
            y = CHART_HEIGHT + 24 - bar
            parts.append(
                f'<rect x="{x + offset}" y="{y}" width="{BAR_WIDTH - 2}" height="{bar}" fill="{colour}">'
                f"<title>{escape(row.partner_id)} {what}: {points(value)} {code}</title></rect>"
                # The figure on the bar, so the chart informs without hovering.
                f'<text x="{x + offset + BAR_WIDTH // 2 - 1}" y="{y - 4}" font-size="9" text-anchor="middle">'
                f"{points(value)}</text>"
            )
        parts.append(
            f'<text x="{x + BAR_WIDTH}" y="{CHART_HEIGHT + 40}" font-size="12" text-anchor="middle">'
            f"{escape(row.partner_id)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def net_positions_svg(rows: list[tuple[str, int]]) -> str:
    """Horizontal bars from a zero line: right (green) the partner pays, left (red) it is paid."""
    peak = max([1, *(abs(net) for _, net in rows)])
    row_height = 28
    half = 220
    label_width = 120
    width = label_width + 2 * half + 150
    height = 20 + row_height * max(1, len(rows))
    zero = label_width + half
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img"'
        ' aria-label="Net position per partner">',
        f'<line x1="{zero}" y1="0" x2="{zero}" y2="{height}" stroke="#555"/>',
    ]
    for index, (partner, net) in enumerate(rows):
        y = 10 + index * row_height
        bar = round(half * abs(net) / peak)
        x = zero if net >= 0 else zero - bar
        colour = PAYS_COLOUR if net >= 0 else PAID_COLOUR
        text_x = zero + bar + 6 if net >= 0 else zero + 6
        parts.append(
            f'<text x="{label_width - 6}" y="{y + 15}" font-size="12" text-anchor="end">'
            f"{escape(partner)}</text>"
            f'<rect x="{x}" y="{y}" width="{bar}" height="{row_height - 8}" fill="{colour}"/>'
            f'<text x="{text_x}" y="{y + 15}" font-size="12">{escape(eur(net))}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
