"""A caller's mistake, or a refusal from the ledger, is never INTERNAL at settlement.

Timestamps are checked at the boundary (years 0001..9999, nanos 0..999,999,999: INVALID_ARGUMENT
INVALID_TIMESTAMP). What the ledger refuses comes back under the one status policy of
services/common/ledger_client.py: its INVALID_ARGUMENT as INVALID_ARGUMENT with the ledger's
reason, an overload (RESOURCE_EXHAUSTED) as UNAVAILABLE.
"""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import any_pb2, timestamp_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from coalition.settlement.v1 import settlement_pb2 as spb
from services.common.errors import InvalidArgument, Unavailable, error_info_of
from services.common.ledger_client import LedgerRefused, ledger_error
from services.common.timeconv import check_timestamp, timestamp_from_micros
from services.settlement.server import start
from tests.settlement import scripted_month as month
from tests.settlement.conftest import AdminStub, settlement_settings
from tests.support.servers import ThreadedServer, start_ledger_thread
from tests.support.tls import channel as tls_channel

FORMATS = (spb.REPORT_FORMAT_CSV, spb.REPORT_FORMAT_HTML, spb.REPORT_FORMAT_PDF)


def _refusal(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    info = error_info_of(caught.value)
    return caught.value.code(), info.reason if info else ""


def _window(start: timestamp_pb2.Timestamp, end: timestamp_pb2.Timestamp) -> spb.PeriodSelector:
    return spb.PeriodSelector(period_id="edge", start_time=start, end_time=end)


def _ts(seconds: int, nanos: int = 0) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


BAD_TIMESTAMPS = [
    _ts(2**63 - 1),
    _ts(-(2**63)),
    _ts(253_402_300_800),  # 10000-01-01
    _ts(-62_135_596_801),  # one second before 0001-01-01
    _ts(0, -1),
    _ts(0, 1_000_000_000),
]


@pytest.mark.parametrize("bad", BAD_TIMESTAMPS, ids=lambda t: f"{t.seconds}s{t.nanos}ns")
def test_timestamps_outside_the_protobuf_range_are_invalid_argument(settlement, bad):
    agreement = month.agreement("edge-v1", "fuel", 0, [("PTS", "0.01", "0.008")])
    agreement.valid_from_time.CopyFrom(bad)
    assert _refusal(lambda: settlement.SetPriceAgreement(spb.SetPriceAgreementRequest(agreement=agreement))) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_TIMESTAMP",
    )
    good = _ts(1_800_000_000)
    for period in (_window(bad, good), _window(good, bad)):
        assert _refusal(lambda p=period: settlement.PreviewStatement(spb.PreviewStatementRequest(period=p))) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_TIMESTAMP",
        )
        for fmt in FORMATS:
            request = spb.ExportReportRequest(period=period, format=fmt)
            assert _refusal(lambda r=request: settlement.ExportReport(r)) == (
                grpc.StatusCode.INVALID_ARGUMENT,
                "INVALID_TIMESTAMP",
            )


def test_the_widest_valid_window_is_previewed_and_exported(settlement, ledger_stub):
    """0001-01-01 to 9999-12-31 is a valid window: shown in any time zone, never INTERNAL."""
    month.setup_ledger(ledger_stub)
    period = _window(_ts(-62_135_596_800), _ts(253_402_300_799, 999_999_999))
    preview = settlement.PreviewStatement(spb.PreviewStatementRequest(period=period))
    assert preview.settlement.period_id == "edge"
    for fmt in FORMATS:
        document = settlement.ExportReport(spb.ExportReportRequest(period=period, format=fmt))
        assert document.content


def test_a_partner_id_the_ledger_refuses_is_invalid_argument_with_the_ledgers_reason(settlement, ledger_stub):
    month.setup_ledger(ledger_stub)
    start = month.tick()
    end = month.tick()
    request = spb.ReconcileRequest(
        reconciliation_id="rec-bad-partner",
        partner_id="fuel\x01",
        period=_window(timestamp_from_micros(start), timestamp_from_micros(end)),
        file_csv=b"receipt_id,store_id,terminal_id,time,type,points\n",
    )
    assert _refusal(lambda: settlement.Reconcile(request)) == (grpc.StatusCode.INVALID_ARGUMENT, "VALUE_NOT_PRINTABLE")


@pytest.fixture
def overloaded(ledger_database_url, settlement_database_url):
    """A real ledger that admits no unary call: every one is RESOURCE_EXHAUSTED (streams have their own pool)."""
    ledger = start_ledger_thread(ledger_database_url, grpc_concurrent_rpcs_max=0)
    settlement_server = ThreadedServer(lambda: start(settlement_settings(settlement_database_url, ledger.address)))
    with tls_channel(settlement_server.address) as channel:
        yield AdminStub(channel)
    settlement_server.stop()
    ledger.stop()


def test_an_overloaded_ledger_is_unavailable_at_settlement(overloaded):
    period = _window(_ts(1_800_000_000), _ts(1_800_003_600))
    assert _refusal(lambda: overloaded.PreviewStatement(spb.PreviewStatementRequest(period=period))) == (
        grpc.StatusCode.UNAVAILABLE,
        "LEDGER_UNAVAILABLE",
    )


def _ledger_failure(code: grpc.StatusCode, reason: str = "") -> grpc.aio.AioRpcError:
    trailing = ()
    if reason:
        info = any_pb2.Any()
        info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain="coalition.exchange", metadata={"field": "x"}))
        status = status_pb2.Status(code=getattr(code_pb2, code.name), message="refused", details=[info])
        trailing = (("grpc-status-details-bin", status.SerializeToString()),)
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing), details="refused")


@pytest.mark.parametrize(
    ("ledger_code", "expected_code", "expected_reason"),
    [
        (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE, "LEDGER_UNAVAILABLE"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE, "LEDGER_UNAVAILABLE"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE, "LEDGER_UNAVAILABLE"),
        (grpc.StatusCode.ABORTED, grpc.StatusCode.UNAVAILABLE, "LEDGER_UNAVAILABLE"),
        (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INVALID_ARGUMENT, "VALUE_NOT_PRINTABLE"),
        (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.FAILED_PRECONDITION, "VALUE_NOT_PRINTABLE"),
        (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION, "VALUE_NOT_PRINTABLE"),
        (grpc.StatusCode.INTERNAL, grpc.StatusCode.INTERNAL, "LEDGER_FAILED"),
    ],
)
def test_the_one_status_policy_for_ledger_answers(ledger_code, expected_code, expected_reason):
    error = ledger_error(_ledger_failure(ledger_code, "VALUE_NOT_PRINTABLE"), "ListAccounts")
    assert (error.code, error.reason) == (expected_code, expected_reason)
    assert error.metadata["ledger_method"] == "ListAccounts"
    if isinstance(error, LedgerRefused):
        assert error.invalid_argument == (ledger_code == grpc.StatusCode.INVALID_ARGUMENT)
        if ledger_code != grpc.StatusCode.INTERNAL:
            assert error.metadata["field"] == "x"  # the ledger's metadata travels with its reason
    else:
        assert isinstance(error, Unavailable)


def test_a_ledger_refusal_without_error_info_keeps_a_generic_reason():
    error = ledger_error(_ledger_failure(grpc.StatusCode.INVALID_ARGUMENT), "GetBalances")
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "LEDGER_REFUSED")


def test_check_timestamp_accepts_the_whole_protobuf_range():
    for good in (_ts(-62_135_596_800), _ts(253_402_300_799, 999_999_999), _ts(0)):
        check_timestamp(good, "t")
    for bad in BAD_TIMESTAMPS:
        with pytest.raises(InvalidArgument):
            check_timestamp(bad, "t")
