"""Fixtures of the ledger's expiry tests: an operator's stub and the ledger's clock, moved by the test."""

from __future__ import annotations

import pytest

from coalition.ledger.v1 import ledger_pb2_grpc
from services.ledger import store
from tests.support.tls import channel as tls_channel


@pytest.fixture
def clock(monkeypatch):
    """Moves the ledger's clock forward (`store.clock_offset_us`, which has no setting: tests
    only); restored after the test."""

    class Clock:
        def advance(self, microseconds: int) -> None:
            monkeypatch.setattr(store, "clock_offset_us", store.clock_offset_us + microseconds)

    monkeypatch.setattr(store, "clock_offset_us", 0)
    return Clock()


@pytest.fixture
def operator(ledger_server):
    with tls_channel(ledger_server.address) as channel:
        yield ledger_pb2_grpc.LedgerServiceStub(channel)
