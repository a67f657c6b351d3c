"""The demo seed is idempotent and the demo POS client runs end to end against it."""

from __future__ import annotations

import asyncio
import dataclasses

from services.partners import demo_client, server
from tests.support.databases import new_database_url
from tests.support.servers import ThreadedServer, start_ledger_thread


def test_demo_seed_twice_then_the_demo_client_runs(tmp_path, capsys):
    ledger_url, _ = new_database_url("sqlite", tmp_path, "ledger")
    partners_url, _ = new_database_url("sqlite", tmp_path, "partners")
    ledger = start_ledger_thread(ledger_url)
    settings = dataclasses.replace(
        server.PartnersSettings.from_env(),
        database_url=partners_url,
        listen_address="127.0.0.1:0",
        ledger_address=ledger.address,
        grpc_grace_period_seconds=1,
    )
    partners = ThreadedServer(lambda: server.start(settings))
    try:
        for _ in range(2):
            asyncio.run_coroutine_threadsafe(server.seed_demo(), partners._loop).result(timeout=60)
        demo_client.run(partners.address)
        demo_client.run(partners.address)
    finally:
        partners.stop()
        ledger.stop()
    output = capsys.readouterr().out
    assert "demo-fresh-mart-key" in output
    assert "60000 HOTELPTS -> 25000 AIRMILES" in output
    assert "AIRMILES" in output.split("5. Balances")[-1]
