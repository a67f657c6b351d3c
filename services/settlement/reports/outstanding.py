"""The finance report of outstanding points as the finance CLI prints it: a table, or CSV."""

from __future__ import annotations

import csv
import io

from coalition.settlement.v1 import settlement_pb2 as pb
from services.common.timeconv import micros_from_timestamp
from services.settlement.reports.formatting import points, utc_datetime

CSV_COLUMNS = ("as_of_utc", "currency_code", "dimension", "bucket", "amount", "inactivity_amount")


def age_label(bucket: pb.OutstandingAgeBucket) -> str:
    """0-3, 3-6, ..., 36+ (months)."""
    if bucket.age_months_max:
        return f"{bucket.age_months_min}-{bucket.age_months_max}"
    return f"{bucket.age_months_min}+"


def expiry_label(row: pb.OutstandingExpiryRow) -> str:
    if row.kind == pb.OUTSTANDING_EXPIRY_KIND_NEVER:
        return "never"
    if row.kind == pb.OUTSTANDING_EXPIRY_KIND_EXEMPT:
        return "exempt"
    return row.month


def _as_of(report: pb.GetOutstandingReportResponse) -> str:
    return utc_datetime(micros_from_timestamp(report.as_of_time)).isoformat()


def render_text(report: pb.GetOutstandingReportResponse) -> str:
    lines = [f"outstanding points as of {_as_of(report)} (ledger sequence {report.commit_sequence})"]
    if not report.currencies:
        lines.append("no member wallets")
    for currency in report.currencies:
        check = "agree" if currency.balanced else "DO NOT AGREE"
        lines.append("")
        lines.append(
            f"{currency.currency_code}: open lots {points(currency.open_lots_total)}, member wallets"
            f" {points(currency.wallet_balance_total)} ({check})"
        )
        lines.append(f"  {'age (months)':<16}{'points':>20}")
        lines.extend(f"  {age_label(b):<16}{points(b.amount):>20}" for b in currency.age_buckets)
        lines.append(f"  {'expires':<16}{'points':>20}{'of which inactivity':>22}")
        lines.extend(
            f"  {expiry_label(r):<16}{points(r.amount):>20}{points(r.inactivity_amount):>22}"
            for r in currency.expiry_rows
        )
    return "\n".join(lines) + "\n"


def render_csv(report: pb.GetOutstandingReportResponse) -> str:
    """One row per bucket; per currency also the two totals and their difference (0 when they agree)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    as_of = _as_of(report)
    for c in report.currencies:
        code = c.currency_code
        for bucket in c.age_buckets:
            writer.writerow((as_of, code, "age_months", age_label(bucket), bucket.amount, ""))
        for row in c.expiry_rows:
            writer.writerow((as_of, code, "expiry_month", expiry_label(row), row.amount, row.inactivity_amount))
        writer.writerow((as_of, code, "total", "open_lots", c.open_lots_total, ""))
        writer.writerow((as_of, code, "total", "member_wallets", c.wallet_balance_total, ""))
        writer.writerow((as_of, code, "total", "difference", c.open_lots_total - c.wallet_balance_total, ""))
    return buffer.getvalue()
