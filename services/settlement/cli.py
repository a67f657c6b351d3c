"""Finance command-line tool: preview, close, export, reconcile and audit through the settlement API.

    python -m services.settlement.cli preview 2026-10
    python -m services.settlement.cli close 2026-10
    python -m services.settlement.cli export 2026-10 --format pdf --output october.pdf
    python -m services.settlement.cli export 2026-10 --format html --partner hotel
    python -m services.settlement.cli reconcile 2026-10 --partner fuel --file fuel-october.csv --id fuel-2026-10
    python -m services.settlement.cli set-agreement --id fuel-2026 --partner fuel \\
        --valid-from 2026-01-01T00:00:00+01:00 --price PTS:0.0100:0.0080 --conversion HOTELPTS:AIRMILES:0.009
    python -m services.settlement.cli set-agreement --id hotel-2026 --partner hotel \\
        --valid-from 2026-01-01T00:00:00+01:00 --price HOTELPTS:0.0100:0.0080 --breakage-owner issuing-partner
    python -m services.settlement.cli set-agreement --id retailer-2026 --partner retailer \\
        --valid-from 2026-01-01T00:00:00+01:00 --price PTS:0.0100:0.0080 --tier-bonus-funder operator
    python -m services.settlement.cli audit
    python -m services.settlement.cli adjust --id adj-1 --partner fuel --direction operator-pays --amount 12.50 \\
        --reason "refunded twice" --reconciliation fuel-2026-10 --row 4
    python -m services.settlement.cli review-row --id rev-1 --reconciliation fuel-2026-10 --row 4 --status disputed \\
        --note "checking with the partner"
    python -m services.settlement.cli open-items [--partner fuel] [--csv]
    python -m services.settlement.cli outstanding --as-of 2026-10-31T23:59:59+01:00 --currency PTS [--csv]

Settings: COALITION_SETTLEMENT_ADDRESS (default 127.0.0.1:50053), COALITION_ADMIN_API_KEY.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

import grpc

from coalition.settlement.v1 import settlement_pb2 as pb
from coalition.settlement.v1 import settlement_pb2_grpc
from services.common.auth import DEV_ADMIN_API_KEY
from services.common.config import env_str, settings_or_exit
from services.common.errors import error_info_of
from services.common.mode import secret_setting
from services.common.timeconv import timestamp_from_micros
from services.common.tls import client_transport
from services.settlement import cli_corrections
from services.settlement.reports import outstanding
from services.settlement.reports.formatting import BREAKAGE_OWNER_LABELS, TIER_BONUS_FUNDER_LABELS, eur, points

CALL_DEADLINE_SECONDS = 300.0
FORMATS = {"csv": pb.REPORT_FORMAT_CSV, "html": pb.REPORT_FORMAT_HTML, "pdf": pb.REPORT_FORMAT_PDF}
BREAKAGE_OWNERS = {
    "operator": pb.BREAKAGE_OWNER_OPERATOR,
    "issuing-partner": pb.BREAKAGE_OWNER_ISSUING_PARTNER,
}
TIER_BONUS_FUNDERS = {
    "partner": pb.TIER_BONUS_FUNDER_PARTNER,
    "operator": pb.TIER_BONUS_FUNDER_OPERATOR,
}


def _micros(text: str) -> int:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise SystemExit(f"time {text!r} needs an offset, e.g. 2026-10-01T00:00:00+02:00")
    return int(moment.timestamp() * 1_000_000)


def _selector(args) -> pb.PeriodSelector:
    selector = pb.PeriodSelector(period_id=args.period)
    if args.start or args.end:
        if not (args.start and args.end):
            raise SystemExit("give both --start and --end")
        selector.start_time.CopyFrom(timestamp_from_micros(_micros(args.start)))
        selector.end_time.CopyFrom(timestamp_from_micros(_micros(args.end)))
    return selector


BREAKAGE_OWNER_LABELS_BY_PB = {
    getattr(pb, f"BREAKAGE_OWNER_{owner.value}"): label for owner, label in BREAKAGE_OWNER_LABELS.items()
}
TIER_BONUS_FUNDER_LABELS_BY_PB = {
    getattr(pb, f"TIER_BONUS_FUNDER_{funder.value}"): label for funder, label in TIER_BONUS_FUNDER_LABELS.items()
}


def print_settlement(settlement: pb.PeriodSettlement) -> None:
    state = pb.PeriodState.Name(settlement.state).removeprefix("PERIOD_STATE_").lower()
    print(f"period {settlement.period_id} ({state}), ledger sequence {settlement.last_commit_sequence}")
    print(f"{'partner':<20}{'pays':>20}{'is paid':>20}{'net':>20}")
    for statement in settlement.statements:
        print(
            f"{statement.partner_id:<20}{eur(statement.partner_pays_cents):>20}"
            f"{eur(statement.partner_is_paid_cents):>20}{eur(statement.net_cents):>20}"
        )
    for statement in settlement.statements:
        for line in statement.lines:
            if line.kind == pb.STATEMENT_LINE_KIND_BREAKAGE:
                owner = BREAKAGE_OWNER_LABELS_BY_PB.get(line.breakage_owner, "")
                print(
                    f"  breakage {statement.partner_id} {line.currency_code}: expired {points(line.expired_quantity)}"
                    f" - reinstated {points(line.reinstated_quantity)} = {points(line.quantity)}, {owner}"
                    f" ({eur(line.amount_cents)})"
                )
            elif line.kind == pb.STATEMENT_LINE_KIND_TIER_BONUS:
                funder = TIER_BONUS_FUNDER_LABELS_BY_PB.get(line.tier_bonus_funder, "")
                print(
                    f"  tier bonus {statement.partner_id} {line.currency_code}: issued"
                    f" {points(line.tier_bonus_issued_quantity)} - reversed {points(line.tier_bonus_reversed_quantity)}"
                    f" = {points(line.quantity)}, {funder} ({eur(line.amount_cents)})"
                )
    netting = settlement.netting
    check = "balanced" if netting.balanced else "NOT BALANCED"
    print(f"{'operator net':<60}{eur(netting.operator_net_cents):>20}  ({check})")
    for rf in settlement.roll_forwards:
        print(
            f"liability {rf.currency_code}: opening {points(rf.opening_outstanding)}"
            f" -> closing {points(rf.closing_outstanding)}"
        )


RECONCILE_FILE_HELP = """Reconcile a partner's own transaction file with the ledger.

The file is UTF-8 CSV with the header
    receipt_id,store_id,terminal_id,time,type,points,currency
time ISO 8601 (without offset: the coalition's time zone), type EARN, EARN_REVERSAL, REDEEM or
REDEMPTION_REVERSAL, points in minor units of the row's currency (e.g. PTS, HOTELPTS).
A file without the currency column is read only when the partner's ledger rows in the period
are all in one currency; otherwise it is refused (CURRENCY_COLUMN_REQUIRED).
Rows match per (receipt, type, currency); a row whose store or terminal is not the ledger's, or
whose time is outside the period, is reported as STORE_DIFFERS, TERMINAL_DIFFERS or OUTSIDE_PERIOD."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coalition-finance", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("preview", "close", "export", "reconcile"):
        command = commands.add_parser(name)
        command.add_argument("period", help="YYYY-MM, or any id with --start/--end")
        command.add_argument("--start", help="ISO 8601 with offset, inclusive")
        command.add_argument("--end", help="ISO 8601 with offset, exclusive")
        if name == "export":
            command.add_argument("--format", choices=sorted(FORMATS), required=True)
            command.add_argument("--partner", default="", help="one partner's statement (HTML, PDF)")
            command.add_argument("--output", help="file to write (default: the suggested file name)")
        if name == "reconcile":
            command.description = RECONCILE_FILE_HELP
            command.formatter_class = argparse.RawDescriptionHelpFormatter
            command.add_argument("--partner", required=True)
            command.add_argument(
                "--file", required=True, type=Path, help="the partner's CSV (format above: with a currency column)"
            )
            command.add_argument("--id", required=True, help="reconciliation id (idempotency)")
    agreement = commands.add_parser("set-agreement")
    agreement.add_argument("--id", required=True)
    agreement.add_argument("--partner", required=True)
    agreement.add_argument("--valid-from", required=True, help="ISO 8601 with offset")
    agreement.add_argument("--price", action="append", default=[], help="CUR:ISSUE:REIMBURSEMENT (EUR per point)")
    agreement.add_argument("--conversion", action="append", default=[], help="FROM:TO:PRICE_PER_UNIT_RECEIVED")
    agreement.add_argument(
        "--breakage-owner",
        choices=sorted(BREAKAGE_OWNERS),
        default="operator",
        help="who keeps the breakage of the partner's points (issuing-partner: rebated at its issue price)",
    )
    agreement.add_argument(
        "--tier-bonus-funder",
        choices=sorted(TIER_BONUS_FUNDERS),
        default="partner",
        help="who pays for the tier bonus of points earned at the partner (partner: billed inside the points"
        " issued; operator: the partner is credited the bonus at its issue price)",
    )
    report = commands.add_parser(
        "outstanding", help="outstanding points by age and expiry month per currency (IFRS 15 breakage inputs)"
    )
    report.add_argument("--as-of", help="ISO 8601 with offset (default: now)")
    report.add_argument("--currency", default="", help="one currency (default: all)")
    report.add_argument("--csv", action="store_true", help="CSV on standard output instead of a table")
    commands.add_parser("audit")
    commands.add_parser("periods")
    cli_corrections.add_commands(commands)
    return parser


def run(args, stub, metadata) -> int:
    call = {"metadata": metadata, "timeout": CALL_DEADLINE_SECONDS}
    code = cli_corrections.run(args, stub, call)
    if code is not None:
        return code
    if args.command == "preview":
        print_settlement(stub.PreviewStatement(pb.PreviewStatementRequest(period=_selector(args)), **call).settlement)
    elif args.command == "close":
        response = stub.ClosePeriod(pb.ClosePeriodRequest(period=_selector(args)), **call)
        print("closed now" if response.closed_now else "already closed; stored figures:")
        print_settlement(response.settlement)
    elif args.command == "export":
        request = pb.ExportReportRequest(period=_selector(args), format=FORMATS[args.format], partner_id=args.partner)
        response = stub.ExportReport(request, **call)
        output = Path(args.output or response.file_name)
        output.write_bytes(response.content)
        print(f"wrote {output} ({len(response.content)} bytes, {response.media_type})")
    elif args.command == "reconcile":
        request = pb.ReconcileRequest(
            reconciliation_id=args.id, partner_id=args.partner, period=_selector(args), file_csv=args.file.read_bytes()
        )
        result = stub.Reconcile(request, **call).reconciliation
        counts = result.counts
        print(
            f"matched {counts.matched}, missing in ledger {counts.missing_in_ledger}, missing at partner"
            f" {counts.missing_at_partner}, amount differs {counts.amount_differs}, duplicate {counts.duplicate},"
            f" store differs {counts.store_differs}, terminal differs {counts.terminal_differs},"
            f" outside period {counts.outside_period}"
        )
        for row in result.rows:
            if row.status != pb.MATCH_STATUS_MATCHED:
                status = pb.MatchStatus.Name(row.status).removeprefix("MATCH_STATUS_")
                print(
                    f"  {status:<20} {row.receipt_id} {row.type} {row.currency_code}"
                    f" partner {row.partner_points} ledger {row.ledger_points}"
                )
    elif args.command == "set-agreement":
        message = pb.PriceAgreement(
            agreement_id=args.id,
            partner_id=args.partner,
            valid_from_time=timestamp_from_micros(_micros(args.valid_from)),
            breakage_owner=BREAKAGE_OWNERS[args.breakage_owner],
            tier_bonus_funder=TIER_BONUS_FUNDERS[args.tier_bonus_funder],
        )
        for price in args.price:
            code, issue, reimbursement = price.split(":")
            message.point_prices.add(
                currency_code=code, issue_price_per_point=issue, reimbursement_price_per_point=reimbursement
            )
        for conversion in args.conversion:
            source, target, unit_price = conversion.split(":")
            message.conversion_prices.add(
                from_currency_code=source, to_currency_code=target, price_per_unit_received=unit_price
            )
        response = stub.SetPriceAgreement(pb.SetPriceAgreementRequest(agreement=message), **call)
        print("recorded" if response.created else "already recorded identically")
    elif args.command == "outstanding":
        request = pb.GetOutstandingReportRequest(currency_code=args.currency)
        if args.as_of:
            request.as_of_time.CopyFrom(timestamp_from_micros(_micros(args.as_of)))
        report = stub.GetOutstandingReport(request, **call)
        sys.stdout.write(outstanding.render_csv(report) if args.csv else outstanding.render_text(report))
        return 0 if all(c.balanced for c in report.currencies) else 1
    elif args.command == "audit":
        response = stub.Audit(pb.AuditRequest(), **call)
        for total in response.wallet_totals:
            print(f"member wallets {total.currency_code}: {points(total.amount)}")
        for finding in response.findings:
            print(f"BROKEN {finding.invariant} {finding.currency_code}: {finding.message}")
        print("all invariants hold" if not response.findings else f"{len(response.findings)} broken invariant(s)")
        return 1 if response.findings else 0
    elif args.command == "periods":
        for period in stub.ListPeriods(pb.ListPeriodsRequest(page_size=100), **call).periods:
            print(f"{period.period_id:<20}{eur(period.operator_net_cents):>20}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    address = env_str("COALITION_SETTLEMENT_ADDRESS", "127.0.0.1:50053")
    admin_key = settings_or_exit(lambda: secret_setting("COALITION_ADMIN_API_KEY", DEV_ADMIN_API_KEY))
    metadata = (("authorization", f"Bearer {admin_key}"),)
    with settings_or_exit(client_transport).channel(address) as channel:
        try:
            return run(args, settlement_pb2_grpc.SettlementServiceStub(channel), metadata)
        except grpc.RpcError as error:
            info = error_info_of(error)
            reason = f" [{info.reason}]" if info is not None else ""
            print(f"error: {error.code().name}{reason}: {error.details()}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
