"""Operating the ledger: graceful shutdown of a real process on SIGTERM, one JSON log line per
RPC, gRPC health checking and server reflection.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from coalition.ledger.v1 import ledger_pb2 as pb
from coalition.ledger.v1 import ledger_pb2_grpc
from tests.ledger.helpers import CREATED, TIMEOUT, account, create_accounts, posted, register_currency
from tests.support.servers import REPO_ROOT, free_port, start_ledger_process, wait_until_serving
from tests.support.tls import channel as tls_channel

LEDGER_SERVICE = "coalition.ledger.v1.LedgerService"
GRACE_PERIOD_SECONDS = 1
# Python start-up, migrations and pool close come on top of the grace period.
EXIT_SLACK_SECONDS = 15


class LoggedLedgerProcess:
    """The ledger as `python -m services.ledger.server`, its stderr (the logs) captured to a file.

    A file rather than a pipe: an undrained pipe would block a chatty server once it fills.
    """

    def __init__(self, database_url: str, log_path, **env: str) -> None:
        port = free_port()
        self.address = f"127.0.0.1:{port}"
        self.log_path = log_path
        self._log_file = open(log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.ledger.server"],
            env={
                **os.environ,
                "COALITION_LEDGER_DATABASE_URL": database_url,
                "COALITION_LEDGER_LISTEN_ADDRESS": self.address,
                "COALITION_GRPC_GRACE_PERIOD_SECONDS": str(GRACE_PERIOD_SECONDS),
                **env,
            },
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=self._log_file,
        )
        try:
            wait_until_serving(self.address)
        except TimeoutError:
            self.kill()
            raise RuntimeError(self.log_text()[-4000:]) from None

    def terminate(self, timeout_seconds: float) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_seconds)
        finally:
            self._log_file.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self._log_file.close()

    def log_text(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as log:
            return log.read()


@pytest.fixture
def logged_ledger(ledger_database_url, tmp_path):
    started: list[LoggedLedgerProcess] = []

    def start(**env: str) -> LoggedLedgerProcess:
        server = LoggedLedgerProcess(ledger_database_url, tmp_path / f"ledger-{len(started)}.log", **env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


def health_status(address: str, service: str = "") -> health_pb2.HealthCheckResponse.ServingStatus:
    with tls_channel(address) as channel:
        return (
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status
        )


# --- graceful shutdown ---------------------------------------------------------------------------


def test_sigterm_stops_the_ledger_process_with_exit_code_zero_and_stops_serving(ledger_database_url):
    server = start_ledger_process(ledger_database_url)
    try:
        assert health_status(server.address) == health_pb2.HealthCheckResponse.SERVING
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        # The production default grace period is 10 s; an idle server must not need it.
        exit_code = server.process.wait(timeout=10 + EXIT_SLACK_SECONDS)
        assert exit_code == 0, server.process.stderr.read().decode()[-4000:]
        assert time.monotonic() - started < 10
    finally:
        if server.process.poll() is None:
            server.process.kill()
        server.process.stderr.close()
    with pytest.raises(grpc.RpcError) as caught:
        health_status(server.address)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_sigterm_lets_an_in_flight_batch_finish_and_commit(ledger_database_url):
    """A batch already being written when SIGTERM arrives completes and answers its caller.

    The signal must land after the 8,000-item request has arrived and before its batch (about
    0.8 s) commits. Over TLS the request's arrival time varies; a signal that beat it is refused
    whole (GOAWAY, nothing written), which proves nothing either way, so the scenario is run
    again with a longer wait, on a fresh currency's accounts.
    """
    for attempt, wait_seconds in enumerate((0.3, 0.5, 0.7)):
        outcome = _sigterm_during_a_batch(ledger_database_url, f"a{attempt}", wait_seconds)
        if outcome == "reached":
            return
        assert outcome == "never arrived", outcome
    raise AssertionError("the 8,000-item call never reached the server before SIGTERM in three attempts")


def _sigterm_during_a_batch(ledger_database_url: str, prefix: str, wait_seconds: float) -> str:
    server = start_ledger_process(ledger_database_url)
    issuance, wallet = f"{prefix}-iss", f"{prefix}-wal"
    try:
        with tls_channel(server.address) as channel:
            stub = ledger_pb2_grpc.LedgerServiceStub(channel)
            register_currency(stub)
            create_accounts(stub, account(issuance, pb.ACCOUNT_SIDE_DEBIT), account(wallet, pb.ACCOUNT_SIDE_CREDIT))
            items = [posted(f"{prefix}-inflight-{n}", issuance, wallet, 1) for n in range(8_000)]
            future = stub.CreateTransfers.future(pb.CreateTransfersRequest(transfers=items), timeout=60)
            time.sleep(wait_seconds)
            server.process.send_signal(signal.SIGTERM)
            try:
                results = future.result().results
            except grpc.RpcError as error:
                results = None
                refused = error.code() == grpc.StatusCode.UNAVAILABLE and "shutdown" in (error.details() or "")
        assert server.process.wait(timeout=10 + EXIT_SLACK_SECONDS) == 0
    finally:
        if server.process.poll() is None:
            server.process.kill()
        server.process.stderr.close()
    restarted = start_ledger_process(ledger_database_url)
    try:
        with tls_channel(restarted.address) as channel:
            stub = ledger_pb2_grpc.LedgerServiceStub(channel)
            balance = stub.GetBalances(pb.GetBalancesRequest(account_ids=[wallet]), timeout=TIMEOUT).balances[0]
    finally:
        assert restarted.stop() == 0
    if results is None:
        # Refused before it arrived: then nothing of it may have been written.
        assert refused and balance.posted == 0, (refused, balance.posted)
        return "never arrived"
    assert len(results) == 8_000 and all(r.status == CREATED for r in results)
    assert balance.posted == 8_000
    return "reached"


def test_sigterm_turns_health_not_serving_and_cuts_open_streams_after_the_grace_period(logged_ledger):
    server = logged_ledger(COALITION_LOG_LEVEL="info", COALITION_LOG_FORMAT="json")
    with tls_channel(server.address) as channel:
        health_watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=30)
        assert next(health_watch).status == health_pb2.HealthCheckResponse.SERVING
        # A follower that never ends on its own: shutdown must not wait for it beyond the grace period.
        transfers_watch = ledger_pb2_grpc.LedgerServiceStub(channel).WatchTransfers(
            pb.WatchTransfersRequest(), timeout=30
        )
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert next(health_watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        health_watch.cancel()
        exit_code = server.terminate(timeout_seconds=GRACE_PERIOD_SECONDS + EXIT_SLACK_SECONDS)
        assert exit_code == 0, server.log_text()[-4000:]
        assert time.monotonic() - started < GRACE_PERIOD_SECONDS + EXIT_SLACK_SECONDS
        with pytest.raises(grpc.RpcError) as caught:
            next(transfers_watch)
        assert caught.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
    events = [json.loads(line)["event"] for line in server.log_text().splitlines() if line.strip()]
    assert events.index("shutdown_requested") < events.index("server_stopped")


# --- logs -------------------------------------------------------------------------------------------


def test_json_logs_have_one_line_per_rpc_with_method_request_id_peer_status_and_duration(logged_ledger):
    server = logged_ledger(COALITION_LOG_LEVEL="info", COALITION_LOG_FORMAT="json")
    with tls_channel(server.address) as channel:
        ledger = ledger_pb2_grpc.LedgerServiceStub(channel)
        register_currency(ledger)
        create_accounts(ledger, account("issuance:p-1", pb.ACCOUNT_SIDE_DEBIT), account("wallet:m-1"))
        response = ledger.CreateTransfers(
            pb.CreateTransfersRequest(transfers=[posted("earn-1", "issuance:p-1", "wallet:m-1", 10)]),
            timeout=TIMEOUT,
            metadata=(("x-request-id", "my-req-1"),),
        )
        assert response.results[0].status == CREATED
        with pytest.raises(grpc.RpcError) as caught:
            ledger.CreateTransfers(
                pb.CreateTransfersRequest(transfers=[posted("earn-2", "issuance:p-1", "wallet:m-1", 0)]),
                timeout=TIMEOUT,
                metadata=(("x-request-id", "my-req-2"),),
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert server.terminate(timeout_seconds=GRACE_PERIOD_SECONDS + EXIT_SLACK_SECONDS) == 0

    lines = [line for line in server.log_text().splitlines() if line.strip()]
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"a log line is not JSON: {line!r}")
    finished = [r for r in records if r.get("event") == "rpc_finished"]
    # RegisterCurrency, CreateAccounts and the two CreateTransfers; health checks are not ours to log.
    assert len(finished) == 4, finished

    [ok] = [r for r in finished if r.get("request_id") == "my-req-1"]
    assert ok["rpc_method"].endswith("/CreateTransfers")
    assert ok["rpc_method"] == f"/{LEDGER_SERVICE}/CreateTransfers"
    assert ok["status"] == "OK"
    assert "reason" not in ok
    assert isinstance(ok["duration_ms"], int | float) and ok["duration_ms"] >= 0
    assert "127.0.0.1" in ok["peer"]
    assert ok["level"] == "info"
    assert ok["timestamp"]

    [refused] = [r for r in finished if r.get("request_id") == "my-req-2"]
    assert refused["rpc_method"] == f"/{LEDGER_SERVICE}/CreateTransfers"
    assert refused["status"] == "INVALID_ARGUMENT"
    assert refused["reason"] == "INVALID_AMOUNT"
    assert isinstance(refused["duration_ms"], int | float)

    # Without x-request-id the server makes one up, so every line can still be correlated.
    others = [r for r in finished if r.get("request_id") not in ("my-req-1", "my-req-2")]
    assert {r["rpc_method"].rsplit("/", 1)[1] for r in others} == {"RegisterCurrency", "CreateAccounts"}
    assert all(r["request_id"] and r["status"] == "OK" for r in others)


# --- health and reflection -------------------------------------------------------------------------


def test_health_check_reports_serving_for_the_server_and_the_ledger_service(ledger_server):
    assert health_status(ledger_server.address) == health_pb2.HealthCheckResponse.SERVING
    assert health_status(ledger_server.address, LEDGER_SERVICE) == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as caught:
        health_status(ledger_server.address, "coalition.nothing.v1.NoService")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_server_reflection_lists_and_describes_the_ledger_service(ledger_server):
    with tls_channel(ledger_server.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=LEDGER_SERVICE),
        ]
        listed, described = list(stub.ServerReflectionInfo(iter(requests), timeout=TIMEOUT))
    names = {service.name for service in listed.list_services_response.service}
    assert LEDGER_SERVICE in names
    assert "grpc.health.v1.Health" in names
    files = described.file_descriptor_response.file_descriptor_proto
    assert files, described
    descriptors = [descriptor_pb2.FileDescriptorProto.FromString(raw) for raw in files]
    ledger_file = next(d for d in descriptors if d.package == "coalition.ledger.v1")
    assert "LedgerService" in [s.name for s in ledger_file.service]
