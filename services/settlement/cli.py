"""Finance command-line tool: preview, close, export, reconcile and audit through the settlement API.

`coalition-finance --help` lists the commands, `coalition-finance COMMAND --help` describes one
with examples; docs/FINANCE.md is the finance team's guide (periods, corrections, file formats).
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

import grpc

from coalition.settlement.v1 import settlement_pb2 as pb
from coalition.settlement.v1 import settlement_pb2_grpc
from services.common import cli
from services.common.config import DEFAULT_TIME_ZONE, env_str, settings_or_exit, zone_of
from services.common.errors import error_info_of
from services.common.timeconv import timestamp_from_micros
from services.settlement import cli_corrections
from services.settlement.reports import outstanding
from services.settlement.reports.formatting import BREAKAGE_OWNER_LABELS, TIER_BONUS_FUNDER_LABELS, eur, points

CALL_DEADLINE_SECONDS = 300.0
FORMATS = {
    "csv": pb.REPORT_FORMAT_CSV,
    "html": pb.REPORT_FORMAT_HTML,
    "pdf": pb.REPORT_FORMAT_PDF,
    "journal-csv": pb.REPORT_FORMAT_JOURNAL_CSV,
    "beancount": pb.REPORT_FORMAT_BEANCOUNT,
    "statement-csv": pb.REPORT_FORMAT_STATEMENT_CSV,
}
MONTH = re.compile(r"^\d{4}-\d{2}$")
BREAKAGE_OWNERS = {
    "operator": pb.BREAKAGE_OWNER_OPERATOR,
    "issuing-partner": pb.BREAKAGE_OWNER_ISSUING_PARTNER,
}
TIER_BONUS_FUNDERS = {
    "partner": pb.TIER_BONUS_FUNDER_PARTNER,
    "operator": pb.TIER_BONUS_FUNDER_OPERATOR,
}


def _micros(text: str) -> int:
    try:
        return cli.time_argument(text)
    except argparse.ArgumentTypeError as error:
        raise SystemExit(str(error)) from None


def _utc(timestamp) -> str:
    return timestamp.ToDatetime(tzinfo=UTC).isoformat()


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
    print(
        f"period {settlement.period_id} ({state}) {_utc(settlement.start_time)} .. {_utc(settlement.end_time)},"
        f" ledger sequence {settlement.last_commit_sequence}"
    )
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


PROG = "coalition-finance"
EXAMPLE_NOTE = "(2026-11 is an example month: use your own period ids.)"

# Per command: (one-line help, description, examples). Shown by `coalition-finance COMMAND --help`.
COMMANDS = {
    "preview": (
        "a period's statements as they stand now (writes nothing)",
        "Compute every partner's statement for a period as the ledger stands now. Writes nothing.\n"
        "Warnings (printed first) say what the figures leave out: activity before the first period\n"
        "that no period bills, the part of the window already settled by a closed period (only the\n"
        "rest is shown), or a partner without a price (left out; the others are complete).",
        "  coalition-finance preview 2026-11\n"
        "  coalition-finance preview first --start 2026-01-01T00:00:00+01:00 --end 2026-12-01T00:00:00+01:00",
    ),
    "close": (
        "close a period: freeze its statements and post the nets (irreversible; needs --yes)",
        "Close a period: freeze every statement and post each net as a SETTLEMENT EUR transfer on the\n"
        "ledger. Irreversible. Without --yes this is a dry run: every check of a close runs and the\n"
        "figures it would freeze are printed, nothing is stored or posted, and the exit status is 1.\n"
        "Periods are calendar months (YYYY-MM) or custom windows (--start/--end), closed in order without\n"
        "gaps; a refused close (PERIOD_NOT_CONTIGUOUS) prints the command for the window to close instead.\n"
        "A mistaken close is corrected in a later period: docs/FINANCE.md, 'Correcting a closed period'.",
        "  coalition-finance close 2026-11            # dry run: what closing would freeze and post\n"
        "  coalition-finance close 2026-11 --yes      # closes it for real " + EXAMPLE_NOTE,
    ),
    "export": (
        "a period's statements as a file (CSV, HTML, PDF, journal CSV, beancount, statement CSV)",
        "Write a period's statements as a file: closed periods from the stored figures, open ones from a\n"
        "fresh preview. csv: one row per statement line; html, pdf: for people (--partner: one statement);\n"
        "journal-csv, beancount: the period's journal for an accounting system (date, account, debit,\n"
        "credit, currency, reference); statement-csv: each partner's lines and totals (--partner: one).\n"
        "docs/FINANCE.md describes every format.",
        "  coalition-finance export 2026-11 --format pdf --output november.pdf\n"
        "  coalition-finance export 2026-11 --format html --partner hotel\n"
        "  coalition-finance export 2026-11 --format beancount && bean-check settlement-2026-11-overview.beancount\n"
        "  coalition-finance export 2026-11 --format statement-csv --partner fuel",
    ),
    "reconcile": (
        "match a partner's own transaction file with the ledger",
        None,  # RECONCILE_FILE_HELP
        "  coalition-finance reconcile 2026-11 --partner fuel --file fuel-november.csv --id fuel-2026-11",
    ),
    "set-agreement": (
        "record a version of a partner's price agreement",
        "Record one version of a partner's price agreement, valid from --valid-from until its next\n"
        "version. Idempotent on --id. Prices are EUR per point with up to 12 decimals.",
        "  coalition-finance set-agreement --id fuel-2026 --partner fuel \\\n"
        "      --valid-from 2026-01-01T00:00:00+01:00 --price PTS:0.0100:0.0080 --conversion HOTELPTS:AIRMILES:0.009\n"
        "  coalition-finance set-agreement --id hotel-2026 --partner hotel \\\n"
        "      --valid-from 2026-01-01T00:00:00+01:00 --price HOTELPTS:0.0100:0.0080 --breakage-owner issuing-partner",
    ),
    "outstanding": (
        "outstanding points by age and expiry month per currency (IFRS 15 breakage inputs)",
        "Outstanding points in member wallets per currency, by age and by expiry month, with the check\n"
        "that the open lots add up to the wallets (exit status 1 when they do not).",
        "  coalition-finance outstanding\n"
        "  coalition-finance outstanding --as-of 2026-11-30T23:59:59+01:00 --currency PTS --csv",
    ),
    "audit": (
        "check the ledger's invariants for settlement",
        "Check that every currency sums to zero and that the outstanding points computed from the flows\n"
        "equal the member wallets. Exit status 1 when an invariant is broken.",
        "  coalition-finance audit",
    ),
    "periods": (
        "list the closed periods, newest first",
        "List the closed periods (id, window, operator net), newest first: the next close starts where\n"
        "the first one listed ends.",
        "  coalition-finance periods",
    ),
}

MAIN_EPILOG = """examples (see COMMAND --help for each command):
  coalition-finance preview 2026-11
  coalition-finance close 2026-11                 # a dry run; add --yes to close
  coalition-finance export 2026-11 --format beancount
  coalition-finance periods

settings: COALITION_SETTLEMENT_ADDRESS (default: where COALITION_SETTLEMENT_LISTEN_ADDRESS listens,
127.0.0.1:50053), COALITION_ADMIN_API_KEY, and the
client certificate (COALITION_CLIENT_TLS_CERT_PATH, ..._KEY_PATH, COALITION_TLS_CA_PATH); in
development COALITION_ENV=development uses var/tls/operator.*. Exit status: 0 done, 1 a check failed
or a dry run, 2 refused (the error reason is printed in brackets). docs/FINANCE.md has the details."""


def _command(commands, name: str) -> argparse.ArgumentParser:
    short, description, examples = COMMANDS[name]
    return commands.add_parser(
        name,
        help=short,
        description=description or RECONCILE_FILE_HELP,
        epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__.split("\n")[0],
        epilog=MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in ("preview", "close", "export", "reconcile"):
        command = _command(commands, name)
        if name == "preview":  # without a period: this month in the coalition's time zone
            command.add_argument(
                "period", nargs="?", help="YYYY-MM (default: this month), or any id with --start and --end"
            )
        else:
            command.add_argument("period", help="YYYY-MM (a calendar month), or any id with --start and --end")
        command.add_argument("--start", help="ISO 8601 with offset, inclusive")
        command.add_argument("--end", help="ISO 8601 with offset, exclusive")
        if name == "close":
            command.add_argument("--yes", action="store_true", help="close for real (without it: a dry run)")
        if name == "export":
            command.add_argument("--format", choices=sorted(FORMATS), required=True)
            command.add_argument("--partner", default="", help="one partner's statement or lines")
            command.add_argument("--output", help="file to write (default: the suggested file name)")
        if name == "reconcile":
            command.add_argument("--partner", required=True)
            command.add_argument(
                "--file", required=True, type=Path, help="the partner's CSV (format above: with a currency column)"
            )
            command.add_argument("--id", required=True, help="reconciliation id (idempotency)")
    agreement = _command(commands, "set-agreement")
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
    report = _command(commands, "outstanding")
    report.add_argument("--as-of", help="ISO 8601 with offset (default: now)")
    report.add_argument("--currency", default="", help="one currency (default: all)")
    report.add_argument("--csv", action="store_true", help="CSV on standard output instead of a table")
    _command(commands, "audit")
    _command(commands, "periods")
    cli_corrections.add_commands(commands)
    return parser


def print_warnings(warnings) -> None:
    for warning in warnings:
        kind = pb.PeriodWarningKind.Name(warning.kind).removeprefix("PERIOD_WARNING_KIND_")
        print(f"WARNING {kind}: {warning.message}")


def contiguity_hint(info) -> str:
    """The command to run instead of a close refused as PERIOD_NOT_CONTIGUOUS (from its metadata)."""
    suggested = info.metadata.get("suggested_period_id", "")
    if not suggested:
        return f"hint: the window is settled already; `{PROG} periods` lists the closed periods"
    command = f"{PROG} close {suggested}"
    start, end = info.metadata.get("suggested_start_time", ""), info.metadata.get("suggested_end_time", "")
    if not MONTH.fullmatch(suggested):
        command += f" --start {start} --end {end}"
    return f"hint: close the window from {start} to {end} instead (add --yes to close it):\n  {command}"


def run(args, stub, metadata) -> int:
    call = {"metadata": metadata, "timeout": CALL_DEADLINE_SECONDS}
    code = cli_corrections.run(args, stub, call)
    if code is not None:
        return code
    if args.command == "preview":
        response = stub.PreviewStatement(pb.PreviewStatementRequest(period=_selector(args)), **call)
        print_warnings(response.warnings)
        print_settlement(response.settlement)
    elif args.command == "close":
        request = pb.ClosePeriodRequest(period=_selector(args), validate_only=not args.yes)
        response = stub.ClosePeriod(request, **call)
        print_warnings(response.warnings)
        if not args.yes and response.settlement.state != pb.PERIOD_STATE_CLOSED:
            print(f"dry run: {args.period} is NOT closed. Closing it would freeze these figures and post the nets:")
            print_settlement(response.settlement)
            print(f"to close {args.period} irreversibly, run the same command with --yes")
            return 1
        print("closed now" if response.closed_now else "already closed; stored figures:")
        print_settlement(response.settlement)
    elif args.command == "export":
        request = pb.ExportReportRequest(period=_selector(args), format=FORMATS[args.format], partner_id=args.partner)
        response = stub.ExportReport(request, **call)
        print_warnings(response.warnings)
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
            window = f"{_utc(period.start_time)} .. {_utc(period.end_time)}"
            print(f"{period.period_id:<20}{window:<56}{eur(period.operator_net_cents):>20}")
    return 0


def current_month(now: datetime | None = None) -> str:
    """This month (YYYY-MM) in the coalition's time zone (COALITION_TIME_ZONE), as periods are cut."""
    zone = settings_or_exit(lambda: zone_of(env_str("COALITION_TIME_ZONE", DEFAULT_TIME_ZONE)))
    return (now or datetime.now(UTC)).astimezone(zone).strftime("%Y-%m")


# A refusal exits 2 here, not cli.EXIT_REFUSED: `outstanding` and `audit` already answer 1 for a
# report that found a problem, and scripts tell the two apart.
REFUSED_EXIT_STATUS = 2


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "preview" and not args.period:
        args.period = current_month()
    metadata = cli.admin_metadata()
    with cli.operator_channel("settlement") as channel:
        try:
            return run(args, settlement_pb2_grpc.SettlementServiceStub(channel), metadata)
        except grpc.RpcError as error:
            cli.print_refusal(error)
            info = error_info_of(error)
            if info is not None and info.reason == "PERIOD_NOT_CONTIGUOUS":
                print(contiguity_hint(info), file=sys.stderr)
            return REFUSED_EXIT_STATUS


if __name__ == "__main__":
    sys.exit(main())
