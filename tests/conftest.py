import os
import tempfile

import pytest

# Every server a test starts (in a thread or as a process) runs in development mode and serves
# mutual TLS with a CA made for this session; clients dial with tests/support/tls.py.
os.environ["COALITION_ENV"] = "development"
os.environ.pop("COALITION_DEV_PLAINTEXT", None)
os.environ["COALITION_DEV_PKI_DIR"] = tempfile.mkdtemp(prefix="coalition-test-pki-")
# No metrics endpoint on the fixed default ports (several servers, and several test runs, share the
# machine); tests/common/test_metrics.py serves them on port 0.
os.environ["COALITION_LEDGER_METRICS_ADDRESS"] = "off"
os.environ["COALITION_PARTNERS_METRICS_ADDRESS"] = "off"
os.environ["COALITION_SETTLEMENT_METRICS_ADDRESS"] = "off"

from coalition.ledger.v1 import ledger_pb2_grpc
from services.common.logs import configure_logging
from tests.support.databases import new_database_url
from tests.support.servers import start_ledger_thread
from tests.support.tls import channel as tls_channel

configure_logging("console", "warning")


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request) -> str:
    return request.param


@pytest.fixture
def ledger_database_url(backend, tmp_path):
    url, cleanup = new_database_url(backend, tmp_path, "ledger")
    yield url
    cleanup()


@pytest.fixture
def ledger_server(ledger_database_url):
    server = start_ledger_thread(ledger_database_url)
    yield server
    server.stop()


@pytest.fixture
def ledger(ledger_server):
    with tls_channel(ledger_server.address) as channel:
        yield ledger_pb2_grpc.LedgerServiceStub(channel)
