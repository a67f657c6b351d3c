"""coalition-finance commands for corrections: adjust, review-row, open-items (see cli.py)."""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections import defaultdict
from decimal import Decimal, InvalidOperation

from coalition.settlement.v1 import settlement_pb2 as pb
from services.settlement.reports.formatting import eur

DIRECTIONS = {
    "partner-pays": pb.ADJUSTMENT_DIRECTION_PARTNER_PAYS,
    "operator-pays": pb.ADJUSTMENT_DIRECTION_OPERATOR_PAYS,
}
REVIEW_STATUSES = {
    "open": pb.REVIEW_STATUS_OPEN,
    "accepted": pb.REVIEW_STATUS_ACCEPTED,
    "disputed": pb.REVIEW_STATUS_DISPUTED,
    "resolved": pb.REVIEW_STATUS_RESOLVED,
}
OPEN_ITEMS_PAGE_SIZE = 1_000
OPEN_ITEMS_CSV_COLUMNS = (
    "partner_id",
    "item",
    "reference",
    "period_id",
    "status",
    "receipt_id",
    "type",
    "currency",
    "partner_points",
    "ledger_points",
    "amount_cents",
    "direction",
    "note",
)

ADJUST_HELP = """Post an adjustment: an amount in EUR that appears as its own ADJUSTMENT line on the
partner's statement of the next period closed, and moves that statement's net (and the EUR
settlement transfer). Link it to exactly one thing it corrects: a reconciliation row
(--reconciliation and --row, as `reconcile` or `open-items` list them) or a line of a closed
statement (--period and --line, 1 = its first line). Idempotent on --id.

examples:
  coalition-finance adjust --id adj-fuel-0001 --partner fuel --direction operator-pays --amount 12.50 \\
      --reason "receipt R-77 refunded twice at the till" --reconciliation fuel-2026-10 --row 4
  coalition-finance adjust --id adj-hotel-0002 --partner hotel --direction partner-pays --amount 300 \\
      --reason "breakage rebate over-credited" --period 2026-10 --line 3"""

REVIEW_HELP = """Set the review status of a reconciliation row, with a note (the history is kept).
Rows start ACCEPTED when matched, OPEN otherwise. Allowed: open -> accepted, disputed or resolved;
accepted -> disputed or resolved; disputed -> accepted or resolved; resolved is final.
Idempotent on --id.

examples:
  coalition-finance review-row --id rev-0001 --reconciliation fuel-2026-10 --row 4 \\
      --status disputed --note "partner says the till refunded it; checking"
  coalition-finance review-row --id rev-0002 --reconciliation fuel-2026-10 --row 4 \\
      --status resolved --note "adjustment adj-fuel-0001 posted\""""

OPEN_ITEMS_HELP = """What is open per partner: reconciliation rows still OPEN or DISPUTED, and adjustments
no statement carries yet (they go on the next period closed). Exits 1 when anything is open.

examples:
  coalition-finance open-items
  coalition-finance open-items --partner fuel
  coalition-finance open-items --csv > open-items.csv"""


def add_commands(commands) -> None:
    raw = argparse.RawDescriptionHelpFormatter
    adjust = commands.add_parser(
        "adjust", help="post an adjustment for the next statement", description=ADJUST_HELP, formatter_class=raw
    )
    adjust.add_argument("--id", required=True, help="adjustment id (idempotency), e.g. adj-fuel-0001")
    adjust.add_argument("--partner", required=True)
    adjust.add_argument("--direction", required=True, choices=sorted(DIRECTIONS), help="who pays whom")
    adjust.add_argument("--amount", required=True, help="EUR, > 0, at most 2 decimals, e.g. 12.50")
    adjust.add_argument("--reason", required=True, help="why (shown on the statement line)")
    adjust.add_argument("--reconciliation", default="", help="reconciliation id of the row corrected")
    adjust.add_argument("--row", type=int, default=0, help="row number in that reconciliation (1-based)")
    adjust.add_argument("--period", default="", help="closed period id of the statement line corrected")
    adjust.add_argument("--line", type=int, default=0, help="line number in the partner's statement (1-based)")
    review = commands.add_parser(
        "review-row", help="set a reconciliation row's review status", description=REVIEW_HELP, formatter_class=raw
    )
    review.add_argument("--id", required=True, help="change id (idempotency)")
    review.add_argument("--reconciliation", required=True)
    review.add_argument("--row", type=int, required=True, help="row number (1-based)")
    review.add_argument("--status", required=True, choices=list(REVIEW_STATUSES))
    review.add_argument("--note", required=True)
    items = commands.add_parser(
        "open-items", help="open reconciliation rows and pending adjustments per partner",
        description=OPEN_ITEMS_HELP, formatter_class=raw,
    )  # fmt: skip
    items.add_argument("--partner", default="", help="one partner (default: all)")
    items.add_argument("--csv", action="store_true", help="CSV on standard output instead of a table")


def cents_of(text: str) -> int:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise SystemExit(f"--amount {text!r} is not a decimal number of EUR, e.g. 12.50") from None
    if not value.is_finite() or value <= 0 or value != value.quantize(Decimal("0.01")):
        raise SystemExit(f"--amount {text!r} must be > 0 with at most 2 decimals")
    return int(value * 100)


def run(args, stub, call) -> int | None:
    """The exit code of a corrections command; None when args.command is not one."""
    if args.command == "adjust":
        adjustment = pb.Adjustment(
            adjustment_id=args.id,
            partner_id=args.partner,
            direction=DIRECTIONS[args.direction],
            amount_cents=cents_of(args.amount),
            reason=args.reason,
            link=pb.AdjustmentLink(
                reconciliation_id=args.reconciliation,
                reconciliation_row_number=args.row,
                statement_period_id=args.period,
                statement_line_number=args.line,
            ),
        )
        response = stub.PostAdjustment(pb.PostAdjustmentRequest(adjustment=adjustment), **call)
        print("posted" if response.created else "already posted identically", "- goes on the next statement closed")
        return 0
    if args.command == "review-row":
        request = pb.SetReconciliationRowStatusRequest(
            change_id=args.id,
            reconciliation_id=args.reconciliation,
            row_number=args.row,
            status=REVIEW_STATUSES[args.status],
            note=args.note,
        )
        response = stub.SetReconciliationRowStatus(request, **call)
        for change in response.history:
            print(f"  {_status(change.from_status)} -> {_status(change.to_status)}: {change.note}")
        print(f"row {args.row} is {_status(response.status)}" + ("" if response.changed else " (already applied)"))
        return 0
    if args.command == "open-items":
        items = []
        token = ""
        while True:
            request = pb.ListOpenItemsRequest(partner_id=args.partner, page_size=OPEN_ITEMS_PAGE_SIZE, page_token=token)
            response = stub.ListOpenItems(request, **call)
            items.extend(response.items)
            token = response.next_page_token
            if not token:
                break
        sys.stdout.write(render_csv(items) if args.csv else render_text(items))
        return 1 if items else 0
    return None


def _status(value: int) -> str:
    return pb.ReviewStatus.Name(value).removeprefix("REVIEW_STATUS_")


def _direction(value: int) -> str:
    return pb.AdjustmentDirection.Name(value).removeprefix("ADJUSTMENT_DIRECTION_")


def _row(item: pb.OpenItem) -> dict:
    if item.HasField("adjustment"):
        a = item.adjustment
        return {
            "partner_id": item.partner_id,
            "item": "ADJUSTMENT",
            "reference": a.adjustment_id,
            "status": "NOT_YET_ON_A_STATEMENT",
            "amount_cents": a.amount_cents,
            "direction": _direction(a.direction),
            "note": a.reason,
        }
    r = item.reconciliation_row
    return {
        "partner_id": item.partner_id,
        "item": "RECONCILIATION_ROW",
        "reference": f"{item.reconciliation_id}#{r.row_number}",
        "period_id": item.period_id,
        "status": f"{_status(r.review_status)} ({pb.MatchStatus.Name(r.status).removeprefix('MATCH_STATUS_')})",
        "receipt_id": r.receipt_id,
        "type": r.type,
        "currency": r.currency_code,
        "partner_points": r.partner_points,
        "ledger_points": r.ledger_points,
        "note": r.review_note,
    }


def render_csv(items) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, OPEN_ITEMS_CSV_COLUMNS, restval="", lineterminator="\r\n")
    writer.writeheader()
    for item in items:
        writer.writerow({key: _cell(value) for key, value in _row(item).items()})
    return out.getvalue()


def _cell(value):
    """Text a spreadsheet would run as a formula gets a leading ' (as the statement CSV does)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def render_text(items) -> str:
    if not items:
        return "nothing open\n"
    by_partner: dict[str, list[dict]] = defaultdict(list)
    for item in items:
        by_partner[item.partner_id].append(_row(item))
    lines = []
    for partner_id, rows in by_partner.items():
        open_rows = [r for r in rows if r["item"] == "RECONCILIATION_ROW"]
        pending = [r for r in rows if r["item"] == "ADJUSTMENT"]
        net = sum(r["amount_cents"] * (1 if r["direction"] == "PARTNER_PAYS" else -1) for r in pending)
        lines.append(
            f"{partner_id}: {len(open_rows)} reconciliation row(s) open or disputed, {len(pending)} adjustment(s)"
            f" for the next statement (net {eur(net)}, + = partner pays)"
        )
        for r in open_rows:
            lines.append(
                f"  row {r['reference']:<28} {r['status']:<32} {r['receipt_id']} {r['type']} {r['currency']}"
                f" partner {r['partner_points']} ledger {r['ledger_points']}  {r['note']}"
            )
        for r in pending:
            lines.append(
                f"  adjustment {r['reference']:<21} {r['direction']:<14} {eur(r['amount_cents'])}  {r['note']}"
            )
    return "\n".join(lines) + "\n"
