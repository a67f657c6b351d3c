"""Issue 7 point 11: no unauthenticated client can exhaust a service.

(a) Calls that open a stream and never send their message hold no call slot: N + 10 of them
    (N = the service's concurrent-call limit), then a legitimate call still succeeds.
    Before: they filled grpc's maximum_concurrent_rpcs and legitimate calls got RESOURCE_EXHAUSTED.
(b) 70 idle WatchTransfers streams from one host take that host's share of the ledger's stream
    pool only: unary ledger calls, a settlement preview and a WatchTransfers from another host (as
    settlement's ledger client streams late arrivals) still work.
    Before: 64 idle streams used up the ledger's limit and the next stream was refused.
(c) A request above its method's size is RESOURCE_EXHAUSTED before authentication and before it
    is parsed: an Earn of 8 million empty lines (16 MB) no longer costs ~700 MB of memory.
"""

from __future__ import annotations

import os
import threading
import time

import grpc
import pytest
from google.protobuf import timestamp_pb2

from coalition.ledger.v1 import ledger_pb2 as lpb
from coalition.ledger.v1 import ledger_pb2_grpc
from coalition.partners.v1 import partners_pb2 as ppb
from coalition.settlement.v1 import settlement_pb2 as spb
from services.common.errors import error_info_of
from services.ledger import limits as ledger_limits
from tests.common.rawh2 import RawGrpcConnection
from tests.fuzz.harness import ADMIN_KEY
from tests.ledger.helpers import DEBIT, account, create_accounts, posted, register_currency, transfer, unique

ADMIN = (("authorization", f"Bearer {ADMIN_KEY}"),)
STREAMS_PER_RAW_CONNECTION = 90  # below the server's 100 streams per connection
LEDGER = "coalition.ledger.v1.LedgerService"
PARTNERS = "coalition.partners.v1.PartnersService"
SETTLEMENT = "coalition.settlement.v1.SettlementService"


def _legitimate_call(stack, service: str):
    channel = stack.channels[service]
    if service == LEDGER:
        return channel.unary_unary(
            f"/{LEDGER}/ListCurrencies",
            request_serializer=lpb.ListCurrenciesRequest.SerializeToString,
            response_deserializer=lpb.ListCurrenciesResponse.FromString,
        )(lpb.ListCurrenciesRequest(), timeout=10)
    if service == PARTNERS:
        return channel.unary_unary(
            f"/{PARTNERS}/ListPartners",
            request_serializer=ppb.ListPartnersRequest.SerializeToString,
            response_deserializer=ppb.ListPartnersResponse.FromString,
        )(ppb.ListPartnersRequest(), timeout=10, metadata=ADMIN)
    return channel.unary_unary(
        f"/{SETTLEMENT}/ListPeriods",
        request_serializer=spb.ListPeriodsRequest.SerializeToString,
        response_deserializer=spb.ListPeriodsResponse.FromString,
    )(spb.ListPeriodsRequest(), timeout=10, metadata=ADMIN)


def _unary_calls_max(service: str) -> int:
    """The limit the stack's servers run with: their settings from the environment."""
    from services.ledger.server import LedgerSettings
    from services.partners.server import PartnersSettings
    from services.settlement.server import SettlementSettings

    settings = {LEDGER: LedgerSettings, PARTNERS: PartnersSettings, SETTLEMENT: SettlementSettings}[service]
    return settings.from_env().grpc_concurrent_rpcs_max


def _server(stack, service: str):
    return {LEDGER: stack.ledger, PARTNERS: stack.partners, SETTLEMENT: stack.settlement}[service]


def _stall(address: str, path: str, count: int, source_host: str = "127.0.0.1") -> list[RawGrpcConnection]:
    connections = []
    while count > 0:
        connection = RawGrpcConnection(address, source_host)
        for _ in range(min(count, STREAMS_PER_RAW_CONNECTION)):
            connection.open_call(path)  # headers only: the request message never comes
        count -= STREAMS_PER_RAW_CONNECTION
        connections.append(connection)
    return connections


@pytest.mark.parametrize("service", [LEDGER, PARTNERS, SETTLEMENT])
def test_calls_that_never_send_their_request_hold_no_slot(stack, service):
    server = _server(stack, service)
    limit = _unary_calls_max(service)
    method = {LEDGER: "ListCurrencies", PARTNERS: "ListPartners", SETTLEMENT: "ListPeriods"}[service]
    connections = _stall(server.address, f"/{service}/{method}", limit + 10)
    try:
        time.sleep(0.5)  # let the server take in every stalled call's headers
        assert not any(connection.terminated.is_set() for connection in connections)
        _legitimate_call(stack, service)  # raises RESOURCE_EXHAUSTED if a stalled call holds a slot
        assert server.running.instrumented.admission.unary_calls == 0
    finally:
        for connection in connections:
            connection.close()


def test_idle_watch_streams_from_one_host_starve_neither_unary_calls_nor_settlement(stack):
    ledger = ledger_pb2_grpc.LedgerServiceStub(stack.channels[LEDGER])
    register_currency(ledger, "ADMISSION")
    issuance, wallet = unique("issuance"), unique("wallet")
    create_accounts(ledger, account(issuance, DEBIT, currency="ADMISSION"), account(wallet, currency="ADMISSION"))
    [posted_result] = transfer(ledger, posted(unique("admission"), issuance, wallet, 5, currency="ADMISSION"))
    request = lpb.WatchTransfersRequest(after_commit_sequence=2**62).SerializeToString()
    connection = RawGrpcConnection(stack.ledger.address, source_host="127.0.0.2")
    try:
        streams = [connection.open_call(f"/{LEDGER}/WatchTransfers", request) for _ in range(70)]
        _wait_for(lambda: len(connection.closed_streams) >= 70 - ledger_limits.WATCH_STREAMS_MAX)

        _legitimate_call(stack, LEDGER)
        window = spb.PeriodSelector(
            period_id="idle-streams",
            start_time=timestamp_pb2.Timestamp(seconds=1_800_000_000),
            end_time=timestamp_pb2.Timestamp(seconds=1_800_003_600),
        )
        preview = stack.channels[SETTLEMENT].unary_unary(
            f"/{SETTLEMENT}/PreviewStatement",
            request_serializer=spb.PreviewStatementRequest.SerializeToString,
            response_deserializer=spb.PreviewStatementResponse.FromString,
        )
        preview(spb.PreviewStatementRequest(period=window), timeout=30, metadata=ADMIN)
        # A stream from the settlement's host (127.0.0.1) is admitted and delivers.
        sequence = posted_result.transfer.commit_sequence
        watch = ledger.WatchTransfers(lpb.WatchTransfersRequest(after_commit_sequence=sequence - 1), timeout=30)
        assert next(watch).transfers[0].commit_sequence == sequence
        watch.cancel()

        _wait_for(lambda: len(connection.closed_streams) >= 70 - ledger_limits.STREAMS_PER_PEER_HOST_MAX)
        refused = {connection.closed_streams[s].get("grpc-status") for s in streams if s in connection.closed_streams}
        assert refused == {str(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])}
        admission = stack.ledger.running.instrumented.admission
        # The host's share stays open and idle.
        assert admission.streams_by_peer_host["ipv4:127.0.0.2"] == ledger_limits.STREAMS_PER_PEER_HOST_MAX
    finally:
        connection.close()
    admission = stack.ledger.running.instrumented.admission
    _wait_for(lambda: admission.streams == 0)  # closing the connection gives every slot back
    assert admission.streams == 0 and not admission.streams_by_peer_host


def _wait_for(condition, timeout_seconds: float = 10) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)


class _ResidentMemory:
    """Peak growth of this process's resident memory while the block runs (sampled every 5 ms)."""

    def __enter__(self):
        self._page = os.sysconf("SC_PAGE_SIZE")
        self.baseline = self._resident()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _resident(self) -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * self._page

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._resident())
            time.sleep(0.005)

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.baseline) / 1e6


def test_an_oversized_earn_is_refused_before_authentication_without_parsing_it(stack):
    # Field 5 (lines), each an empty BasketLine: 2 bytes a line, 8 million lines, no credentials.
    body = b"\x2a\x00" * 8_000_000
    earn = stack.channels[PARTNERS].unary_unary(f"/{PARTNERS}/Earn")
    with _ResidentMemory() as memory, pytest.raises(grpc.RpcError) as caught:
        earn(body, timeout=60)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info_of(caught.value).reason == "REQUEST_TOO_LARGE"
    # The bytes themselves pass through client and server a few times (16 MB each); parsing them
    # would add hundreds of MB.
    print(f"\nresident memory grew by {memory.growth_mb:.0f} MB")
    assert memory.growth_mb < 150, f"resident memory grew by {memory.growth_mb:.0f} MB"


@pytest.mark.parametrize(
    ("service", "method", "size"),
    [
        (LEDGER, "GetAccount", 1_000_000),  # above the ledger's default request size, below its largest
        (SETTLEMENT, "Reconcile", 11 * 1024 * 1024),  # above the largest: refused by gRPC itself
        (PARTNERS, "GetPartner", 1_000_000),
    ],
)
def test_a_request_above_its_methods_size_is_resource_exhausted(stack, service, method, size):
    call = stack.channels[service].unary_unary(f"/{service}/{method}")
    with pytest.raises(grpc.RpcError) as caught:
        call(b"\x0a" + _varint(size - 4) + b"a" * (size - 4), timeout=60)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)
