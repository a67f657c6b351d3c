"""The three real services on one backend, shared by the tests of one module."""

from __future__ import annotations

import logging

import pytest
import structlog

from services.common import interceptor, logs
from tests.fuzz.harness import running_stack


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def stack(request, tmp_path_factory):
    with running_stack(request.param, tmp_path_factory.mktemp(request.param)) as running:
        yield running


@pytest.fixture
def rpc_log(monkeypatch) -> list[dict]:
    """Every event the instrumentation logs from now on, at every level.

    The module's logger is swapped for a capturing one: structlog caches loggers on first use,
    so reconfiguring structlog would not reach it.
    """
    capture = structlog.testing.LogCapture()
    logger = structlog.wrap_logger(
        structlog.PrintLogger(),
        processors=[logs.merge_request_context, structlog.processors.add_log_level, capture],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    )
    monkeypatch.setattr(interceptor, "_log", logger)
    return capture.entries
