"""A log line names the request it belongs to, or none: never another caller's.

Concurrent calls are merged into batches that run in a task of their own (services/common/
coalescer.py). That task's lines are the batch's, so they carry the batch's name and no request
id; what a call did (its hold, its capture) goes on that call's own `rpc_finished` line."""

from __future__ import annotations

import asyncio
import json
import logging

import structlog

from coalition.partners.v1 import partners_pb2 as pb
from services.common import logs
from services.common.coalescer import Coalescer
from tests.partners.conftest import ADMIN_KEY, Coalition, MovableClock, unique
from tests.support.databases import new_database_url
from tests.support.servers import ProcessServer, free_port, start_ledger_thread


def test_a_merged_batch_logs_under_its_own_name_and_each_caller_under_its_own_request():
    capture = structlog.testing.LogCapture()
    logger = structlog.wrap_logger(
        structlog.PrintLogger(),
        processors=[logs.merge_request_context, capture],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    )

    async def handle(items: list[int]) -> list[int]:
        await asyncio.sleep(0.01)  # the other callers queue behind the first batch
        logger.info("batch_ran", items=len(items))
        return [item * 10 for item in items]

    async def main() -> None:
        coalescer: Coalescer[int, int] = Coalescer("sums", handle, 100, 1_000)

        async def request(number: int) -> None:
            logs.start_request(request_id=f"request-{number}")
            answer = await coalescer.submit(number)
            logger.info("answered", answer=answer)

        await asyncio.gather(*(asyncio.create_task(request(number)) for number in range(6)))
        assert sum(coalescer.batch_sizes.values()) < 6  # merged: some batch ran more than one call

    asyncio.run(main())
    batch_lines = [entry for entry in capture.entries if entry["event"] == "batch_ran"]
    assert batch_lines and all(entry.get("batch") == "sums" for entry in batch_lines)
    assert not any("request_id" in entry for entry in batch_lines)
    answers = {entry["request_id"]: entry["answer"] for entry in capture.entries if entry["event"] == "answered"}
    assert answers == {f"request-{number}": number * 10 for number in range(6)}


def test_every_partners_log_line_naming_a_redemption_carries_a_request_for_that_redemption(tmp_path):
    """Holds and captures sent together (merged into batches): each call's line names its own
    redemption and amount, and no line names a redemption under another call's request id."""
    ledger = start_ledger_thread(new_database_url("sqlite", tmp_path, "ledger")[0])
    port = free_port()
    log_path = tmp_path / "partners.log"
    partners = ProcessServer(
        "services.partners.server",
        {
            "COALITION_PARTNERS_DATABASE_URL": new_database_url("sqlite", tmp_path, "partners")[0],
            "COALITION_PARTNERS_LISTEN_ADDRESS": f"127.0.0.1:{port}",
            "COALITION_LEDGER_ADDRESS": ledger.address,
            "COALITION_ADMIN_API_KEY": ADMIN_KEY,
            "COALITION_LOG_LEVEL": "info",
            "COALITION_LOG_FORMAT": "json",
        },
        f"127.0.0.1:{port}",
        str(log_path),
    )
    client = Coalition(partners.address, MovableClock(), ledger.address)
    holds = 24
    try:
        shop = client.register_partner()
        member_id, _ = client.enroll()
        client.earn(shop, member_id, [100_000])  # 500 points: room for every hold

        def metadata(request_id: str):
            return (("authorization", f"Bearer {shop.key}"), ("x-request-id", request_id))

        authorizing = {
            f"hold-{number}": client.stub.AuthorizeRedemption.future(
                pb.AuthorizeRedemptionRequest(
                    request_id=unique("h"),
                    point_of_sale=shop.pos(),
                    receipt_id=unique("r"),
                    member=pb.MemberIdentity(member_id=member_id),
                    currency_code="PTS",
                    amount=number + 1,
                ),
                metadata=metadata(f"hold-{number}"),
                timeout=30,
            )
            for number in range(holds)
        }
        held = {request_id: call.result().redemption for request_id, call in authorizing.items()}
        capturing = {
            f"capture-{number}": client.stub.CaptureRedemption.future(
                pb.CaptureRedemptionRequest(request_id=unique("c"), redemption_id=held[f"hold-{number}"].redemption_id),
                metadata=metadata(f"capture-{number}"),
                timeout=30,
            )
            for number in range(holds)
        }
        for call in capturing.values():
            assert call.result().redemption.state == pb.REDEMPTION_STATE_CAPTURED
    finally:
        client.close()
        partners.stop()
        ledger.stop()
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    requests_of = {redemption.redemption_id: {request_id} for request_id, redemption in held.items()}
    for number in range(holds):
        requests_of[held[f"hold-{number}"].redemption_id].add(f"capture-{number}")
    naming = [line for line in lines if "redemption_id" in line]
    assert naming
    for line in naming:
        assert line.get("request_id") in requests_of[line["redemption_id"]], line
    finished = {line["request_id"]: line for line in lines if line["event"] == "rpc_finished"}
    for number in range(holds):
        redemption = held[f"hold-{number}"]
        hold, capture = finished[f"hold-{number}"], finished[f"capture-{number}"]
        assert (hold["redemption_id"], hold["amount"]) == (redemption.redemption_id, number + 1)
        assert (capture["redemption_id"], capture["captured_amount"]) == (redemption.redemption_id, number + 1)
    assert not any("request_id" in line for line in lines if "batch" in line)
