"""Each service serves its Prometheus series on its own port, from its own registry: the core
series move after calls (RPC counts and latencies, the ledger's batches, database pools, the
partners recovery backlog, settlement close durations); settings turn the endpoint off."""

from __future__ import annotations

import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from coalition.partners.v1 import partners_pb2 as pb
from coalition.settlement.v1 import settlement_pb2 as spb
from services.common.config import ConfigError
from services.common.metrics import metrics_address_setting
from services.common.timeconv import timestamp_from_micros
from services.settlement.server import start as start_settlement
from tests.partners.conftest import ADMIN_KEY, Coalition, MovableClock
from tests.settlement.conftest import AdminStub, settlement_settings
from tests.support.databases import new_database_url
from tests.support.servers import ThreadedServer, start_ledger_thread, start_partners_thread
from tests.support.tls import channel as tls_channel

ON = "127.0.0.1:0"
EARN = "/coalition.partners.v1.PartnersService/Earn"
CREATE_TRANSFERS = "/coalition.ledger.v1.LedgerService/CreateTransfers"
HOUR_US = 3_600 * 1_000_000


def scrape(server: ThreadedServer) -> dict[tuple[str, frozenset], float]:
    """Every sample of the server's endpoint, by (name, labels), read over HTTP as Prometheus would."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.running.metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_each_service_serves_its_series_and_they_move_after_calls(backend, tmp_path):
    urls = [new_database_url(backend, tmp_path, name) for name in ("ledger", "partners", "settlement")]
    ledger = start_ledger_thread(urls[0][0], metrics_address=ON)
    partners = start_partners_thread(
        urls[1][0],
        ledger.address,
        ADMIN_KEY,
        MovableClock(),
        metrics_address=ON,
        pending_earn_recovery_interval_seconds=1,
    )
    settings = settlement_settings(urls[2][0], ledger.address)
    settlement = ThreadedServer(lambda: start_settlement(type(settings)(**{
        **{name: getattr(settings, name) for name in settings.__slots__}, "metrics_address": ON,
    })))  # fmt: skip
    client = Coalition(partners.address, MovableClock(), ledger.address)
    try:
        assert len({ledger.running.metrics_port, partners.running.metrics_port, settlement.running.metrics_port}) == 3
        before_ledger, before_partners = scrape(ledger), scrape(partners)
        assert value(before_partners, "coalition_rpc_requests_total", method=EARN, code="OK") == 0

        partner = client.register_partner()
        member_id, _ = client.enroll()
        client.earn(partner, member_id, [1_000])

        after_partners, after_ledger = scrape(partners), scrape(ledger)
        assert value(after_partners, "coalition_rpc_requests_total", method=EARN, code="OK") == 1
        assert value(after_partners, "coalition_rpc_duration_seconds_count", method=EARN) == 1
        assert value(after_partners, "coalition_rpc_duration_seconds_sum", method=EARN) > 0
        assert value(after_ledger, "coalition_rpc_requests_total", method=CREATE_TRANSFERS, code="OK") >= 1
        assert value(after_ledger, "coalition_ledger_batch_calls_count") > value(
            before_ledger, "coalition_ledger_batch_calls_count"
        )
        assert value(after_ledger, "coalition_ledger_batch_transfers_sum") > 0
        assert value(after_ledger, "coalition_ledger_batch_commit_duration_seconds_count") >= 1
        assert ("coalition_ledger_queued_transfers", frozenset()) in after_ledger
        assert ("coalition_db_transaction_retries_total", frozenset()) in after_ledger
        for samples in (after_ledger, after_partners):
            assert value(samples, "coalition_db_pool_checked_out_connections", pool="writer") >= 0
            assert value(samples, "coalition_db_pool_size_connections", pool="writer") >= 2
        # A refused call is counted under its status code. An abort sends the status before the
        # handler's bookkeeping ends, so the count may land just after the client has its answer.
        code, _ = client.error("Earn", pb.EarnRequest(), key=None)
        deadline = time.monotonic() + 5
        while value(scrape(partners), "coalition_rpc_requests_total", method=EARN, code=code.name) != 1:
            assert time.monotonic() < deadline, "the refused Earn was not counted"
            time.sleep(0.05)

        now_us = time.time_ns() // 1000
        period = spb.PeriodSelector(
            period_id="metrics-p1",
            start_time=timestamp_from_micros(now_us - 2 * HOUR_US),
            end_time=timestamp_from_micros(now_us - HOUR_US),
        )
        with tls_channel(settlement.address) as channel:
            AdminStub(channel).ClosePeriod(spb.ClosePeriodRequest(period=period))
        closed = scrape(settlement)
        assert value(closed, "coalition_settlement_close_duration_seconds_count", outcome="ok") == 1
        assert value(closed, "coalition_rpc_requests_total", method=_settlement("ClosePeriod"), code="OK") == 1
        assert ("coalition_settlement_reconcile_duration_seconds_count", frozenset({("outcome", "ok")})) not in closed
        # The recovery pass (every second here) counts what it has left, per kind.
        deadline = time.monotonic() + 10
        while ("coalition_partners_recovery_backlog", frozenset({("kind", "earn")})) not in scrape(partners):
            assert time.monotonic() < deadline, "no recovery backlog series after the first pass"
            time.sleep(0.2)
        assert value(scrape(partners), "coalition_partners_recovery_backlog", kind="hold") == 0
    finally:
        client.close()
        settlement.stop()
        partners.stop()
        ledger.stop()
        for _, cleanup in urls:
            cleanup()


def _settlement(method: str) -> str:
    return f"/coalition.settlement.v1.SettlementService/{method}"


def test_the_metrics_address_setting(monkeypatch):
    monkeypatch.delenv("COALITION_LEDGER_METRICS_ADDRESS", raising=False)
    assert metrics_address_setting("ledger") == "127.0.0.1:9151"
    for off in ("off", "OFF", ""):
        monkeypatch.setenv("COALITION_PARTNERS_METRICS_ADDRESS", off)
        assert metrics_address_setting("partners") == ""
    monkeypatch.delenv("COALITION_PARTNERS_METRICS_ADDRESS")
    assert metrics_address_setting("partners") == "127.0.0.1:9152"
    monkeypatch.setenv("COALITION_SETTLEMENT_METRICS_ADDRESS", "[::1]:0")
    assert metrics_address_setting("settlement") == "[::1]:0"
    for bad in ("9153", "localhost:http", "127.0.0.1:70000"):
        monkeypatch.setenv("COALITION_SETTLEMENT_METRICS_ADDRESS", bad)
        with pytest.raises(ConfigError, match="COALITION_SETTLEMENT_METRICS_ADDRESS"):
            metrics_address_setting("settlement")


def test_transaction_retries_and_pool_use_are_counted_per_database(tmp_path):
    from sqlalchemy import exc as sa_exc
    from sqlalchemy import text

    from services.common.db import Database, DatabaseOptions
    from services.common.metrics import Metrics

    database = Database(DatabaseOptions(url=f"sqlite:///{tmp_path}/retries.db", pool_size=2))
    metrics, other = Metrics("ledger"), Metrics("partners")
    metrics.watch_database(database)
    attempts = []

    def work(connection):
        attempts.append(1)
        in_use = {
            s.labels.get("pool"): s.value
            for f in metrics.registry.collect()
            for s in f.samples
            if s.name == "coalition_db_pool_checked_out_connections"
        }
        assert in_use == {"writer": 1, "reader": 0}  # read from the pools when scraped
        if len(attempts) == 1:
            raise sa_exc.OperationalError("BEGIN", {}, Exception("database is locked"))
        return connection.execute(text("SELECT 1")).scalar_one()

    try:
        assert database.write(work) == 1
    finally:
        database.dispose()
    samples = {s.name: s.value for family in metrics.registry.collect() for s in family.samples}
    assert samples["coalition_db_transaction_retries_total"] == 1
    assert {s.name: s.value for f in other.registry.collect() for s in f.samples}[
        "coalition_db_transaction_retries_total"
    ] == 0
