"""With tracing on, W3C trace context goes from partners into the ledger: one Earn is one trace,
the ledger's server span a child of partners' client span. Earns merged into one batch are each
linked from the batch's span, under which the ledger call is traced. Off (the default), nothing
is made."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from coalition.partners.v1 import partners_pb2 as pb
from services.common.config import ConfigError
from services.common.tracing import TracingSettings, tracer_provider
from tests.partners.conftest import ADMIN_KEY, Coalition, MovableClock, unique
from tests.support.databases import new_database_url
from tests.support.servers import start_ledger_thread, start_partners_thread

EARN = "/coalition.partners.v1.PartnersService/Earn"
CREATE_TRANSFERS = "/coalition.ledger.v1.LedgerService/CreateTransfers"


@pytest.fixture
def traced(tmp_path):
    """A ledger and a partners server with tracing on, each with its spans in memory; a client."""
    ledger_url, ledger_cleanup = new_database_url("sqlite", tmp_path, "ledger")
    partners_url, partners_cleanup = new_database_url("sqlite", tmp_path, "partners")
    ledger_spans, partners_spans = InMemorySpanExporter(), InMemorySpanExporter()
    ledger = start_ledger_thread(ledger_url, span_processor=SimpleSpanProcessor(ledger_spans))
    partners = start_partners_thread(
        partners_url, ledger.address, ADMIN_KEY, MovableClock(), span_processor=SimpleSpanProcessor(partners_spans)
    )
    client = Coalition(partners.address, MovableClock(), ledger.address)
    try:
        yield client, ledger_spans, partners_spans
    finally:
        client.close()
        partners.stop()
        ledger.stop()
        partners_cleanup()
        ledger_cleanup()


def test_an_earn_is_one_trace_from_partners_into_the_ledger(traced):
    client, ledger_spans, partners_spans = traced
    partner = client.register_partner()
    member_id, _ = client.enroll()
    ledger_spans.clear()
    partners_spans.clear()
    client.earn(partner, member_id, [1_000])

    (earn,) = [s for s in partners_spans.get_finished_spans() if s.name == EARN]
    assert earn.kind == SpanKind.SERVER
    assert earn.resource.attributes["service.name"] == "coalition-partners"
    calls = [
        s
        for s in partners_spans.get_finished_spans()
        if s.kind == SpanKind.CLIENT and s.context.trace_id == earn.context.trace_id
    ]
    assert calls, "partners made no traced ledger call under the earn"
    served = [s for s in ledger_spans.get_finished_spans() if s.kind == SpanKind.SERVER and s.name == CREATE_TRANSFERS]
    assert served, "the ledger served no CreateTransfers span"
    (posted,) = [s for s in served if s.context.trace_id == earn.context.trace_id]
    assert posted.resource.attributes["service.name"] == "coalition-ledger"
    assert posted.parent is not None and posted.parent.is_remote
    (parent,) = [c for c in calls if c.context.span_id == posted.parent.span_id]
    assert parent.name == CREATE_TRANSFERS
    assert parent.parent is not None and parent.parent.trace_id == earn.context.trace_id


def test_merged_earns_are_each_linked_from_their_batch_span_and_the_ledger_call_is_under_it(traced):
    client, _, partners_spans = traced
    partner = client.register_partner()
    member_id, _ = client.enroll()
    client.earn(partner, member_id, [1_000])  # the wallet exists: the earns below only earn
    partners_spans.clear()
    sent = [
        client.stub.Earn.future(
            pb.EarnRequest(
                request_id=unique("e"),
                point_of_sale=partner.pos(),
                receipt_id=unique("r"),
                member=pb.MemberIdentity(member_id=member_id),
                lines=[pb.BasketLine(line_number=1, sku="s", category="grocery", quantity=1000, amount=1_000)],
            ),
            metadata=(("authorization", f"Bearer {partner.key}"),),
            timeout=30,
        )
        for _ in range(12)
    ]
    for call in sent:
        call.result()
    spans = partners_spans.get_finished_spans()
    earns = [s for s in spans if s.name == EARN]
    batches = [s for s in spans if s.name == "merged earn"]
    assert len(earns) == 12 and batches
    assert len(batches) < len(earns)  # merged: some batch carried more than one earn
    linked = [link.context.span_id for batch in batches for link in batch.links]
    assert sorted(linked) == sorted(earn.context.span_id for earn in earns)  # each earn in exactly one batch
    for batch in batches:  # in the trace of one of its own earns, not of whichever started its task
        assert batch.parent.span_id in {link.context.span_id for link in batch.links}
    ledger_batches = {s.context.span_id: s for s in spans if s.name == "merged ledger CreateTransfers"}
    calls = [s for s in spans if s.kind == SpanKind.CLIENT and s.name == CREATE_TRANSFERS]
    for batch in batches:
        # The batch's ledger call: under a merged ledger call that is the batch's child or links to it.
        assert any(
            call.parent is not None
            and call.parent.span_id in ledger_batches
            and (
                ledger_batches[call.parent.span_id].parent.span_id == batch.context.span_id
                or batch.context.span_id in {link.context.span_id for link in ledger_batches[call.parent.span_id].links}
            )
            for call in calls
        ), f"no ledger call traced under {batch.context.span_id:x}"


def test_tracing_is_off_unless_an_exporter_is_set(monkeypatch):
    monkeypatch.delenv("COALITION_TRACING_EXPORTER", raising=False)
    assert tracer_provider(TracingSettings.from_env(), "ledger") is None
    monkeypatch.setenv("COALITION_TRACING_EXPORTER", "console")
    monkeypatch.setenv("COALITION_TRACING_SERVICE_NAME", "ledger-eu-1")
    provider = tracer_provider(TracingSettings.from_env(), "ledger")
    try:
        assert provider.resource.attributes["service.name"] == "ledger-eu-1"
    finally:
        provider.shutdown()
    monkeypatch.setenv("COALITION_TRACING_EXPORTER", "jaeger")
    with pytest.raises(ConfigError, match="COALITION_TRACING_EXPORTER"):
        TracingSettings.from_env()
