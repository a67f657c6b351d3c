"""Concurrent earns are merged: one partners transaction records them, one ledger call posts them,
and each caller still gets its own answer. One earn's bad data (an unknown member, a receipt
already earned, a transfer the ledger refuses) never fails the earns merged with it, and a retry
of every request answers exactly as the first time.

The ledger is real; for chosen earn ids its client answers a per-item refusal instead of sending
them (the ledger refuses content partners never produces), while the rest of the same call goes
to the ledger as one CreateTransfers.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from sqlalchemy import func, select

from coalition.ledger.v1 import ledger_pb2
from coalition.partners.v1 import partners_pb2 as pb
from services.common.errors import error_info_of
from services.common.ledger_client import Failure
from services.partners import deferred_marks, model, recovery, server
from services.partners.store.tables import earns
from tests.partners.conftest import ADMIN_KEY, Coalition, MovableClock, unique
from tests.support.databases import new_database_url
from tests.support.servers import start_ledger_thread, start_partners_thread

CALLERS = 48


@pytest.fixture(params=["sqlite", "postgres"])
def merged(request, tmp_path):
    ledger_url, ledger_cleanup = new_database_url(request.param, tmp_path, "ledger")
    partners_url, partners_cleanup = new_database_url(request.param, tmp_path, "partners")
    ledger = start_ledger_thread(ledger_url)
    clock = MovableClock()
    partners = start_partners_thread(partners_url, ledger.address, ADMIN_KEY, clock)
    app = server._current
    real = app.ledger.create_transfers
    refuse: set[str] = set()
    call_sizes: list[int] = []

    async def create_transfers(transfers):
        call_sizes.append(len(transfers))
        sent = [transfer for transfer in transfers if transfer.id not in refuse]
        answers = iter(await real(sent) if sent else [])
        refused = ledger_pb2.CreateTransferResult(
            status=ledger_pb2.ITEM_STATUS_FAILED, failure_reason=Failure.FAILURE_REASON_CURRENCY_MISMATCH
        )
        return [refused if transfer.id in refuse else next(answers) for transfer in transfers]

    app.ledger.create_transfers = create_transfers
    client = Coalition(partners.address, clock, ledger.address)
    yield client, refuse, call_sizes
    client.close()
    partners.stop()
    ledger.stop()
    partners_cleanup()
    ledger_cleanup()


def _request(shop, member_id: str, receipt_id: str, amount: int = 2000) -> pb.EarnRequest:
    return pb.EarnRequest(
        request_id=unique("earn"),
        point_of_sale=shop.pos(),
        receipt_id=receipt_id,
        member=pb.MemberIdentity(member_id=member_id),
        lines=[pb.BasketLine(line_number=1, sku="a", category="grocery", quantity=1000, amount=amount)],
    )


def _send_all_at_once(client: Coalition, requests: list[pb.EarnRequest], key: str) -> list[tuple[str, object]]:
    start = threading.Barrier(len(requests))

    def send(request):
        start.wait()
        try:
            return "ok", client.call("Earn", request, key).pricing.points
        except grpc.RpcError as error:
            info = error_info_of(error)
            return error.code().name, info.reason if info else ""

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(send, requests))


def test_merged_earns_answer_each_caller_and_one_bad_earn_fails_only_itself(merged):
    client, refuse, call_sizes = merged
    shop = client.register_partner(base_rate="0.5")
    members = [client.enroll()[0] for _ in range(4)]
    for member_id in members:  # wallets exist, so every earn below is one transfer
        client.earn(shop, member_id, [1000])
    call_sizes.clear()
    requests, expected = [], []
    shared_receipt = unique("r")
    for number in range(CALLERS):
        member_id = members[number % len(members)]
        kind = number % 8
        if kind == 1:
            requests.append(_request(shop, f"m-nobody-{number}", unique("r")))
            expected.append(("NOT_FOUND", "MEMBER_NOT_FOUND"))
        elif kind == 2:
            requests.append(_request(shop, member_id, shared_receipt))
            expected.append("shared receipt")
        elif kind == 3:
            request = _request(shop, member_id, unique("r"))
            refuse.add(model.earn_transfer_id(shop.partner_id, request.request_id))
            requests.append(request)
            expected.append(("FAILED_PRECONDITION", "LEDGER_REFUSED"))
        elif kind == 5:  # the same request again at once: a retry racing its first send
            requests.append(requests[-1])
            expected.append(("ok", 10))
        else:
            requests.append(_request(shop, member_id, unique("r")))
            expected.append(("ok", 10))
    before = {member_id: client.balance(member_id).posted for member_id in members}

    answers = _send_all_at_once(client, requests, shop.key)

    shared = [answer for answer, wanted in zip(answers, expected, strict=True) if wanted == "shared receipt"]
    assert sorted(shared) == [("ALREADY_EXISTS", "RECEIPT_ALREADY_EARNED")] * (len(shared) - 1) + [("ok", 10)]
    for answer, wanted in zip(answers, expected, strict=True):
        if wanted != "shared receipt":
            assert answer == wanted
    assert max(call_sizes) > 1, f"no ledger call carried more than one earn: {call_sizes}"
    assert len(call_sizes) < CALLERS

    credited = {member_id: 0 for member_id in members}
    earned = {
        request.request_id: request for request, answer in zip(requests, answers, strict=True) if answer[0] == "ok"
    }
    for request in earned.values():  # a request sent twice earns once
        credited[request.member.member_id] += 10
    assert {m: client.balance(m).posted - before[m] for m in members} == credited

    retried = _send_all_at_once(client, requests, shop.key)  # every retry answers as the first time
    assert retried == answers
    assert {m: client.balance(m).posted - before[m] for m in members} == credited


def test_merged_holds_answer_each_caller_and_one_refusal_fails_only_itself(merged):
    """AuthorizeRedemption calls merge the same way: one transaction, one ledger call. A hold over
    the member's points is refused by the real ledger (INSUFFICIENT_POINTS), an unknown member is
    NOT_FOUND, a request sent twice holds once, and everything else is authorized."""
    client, _refuse, call_sizes = merged
    shop = client.register_partner(base_rate="0.5")
    members = [client.enroll()[0] for _ in range(4)]
    for member_id in members:
        client.earn(shop, member_id, [20_000])  # 100 points each
    call_sizes.clear()
    requests, expected = [], []
    for number in range(CALLERS):
        member_id = members[number % len(members)]
        amount = 1
        if number % 8 == 1:
            member_id, wanted = f"m-nobody-{number}", ("NOT_FOUND", "MEMBER_NOT_FOUND")
        elif number % 8 == 3:
            amount, wanted = 1_000, ("FAILED_PRECONDITION", "INSUFFICIENT_POINTS")
        elif number % 8 == 5:
            requests.append(requests[-1])
            expected.append(expected[-1])
            continue
        else:
            wanted = ("ok", "authorized")
        requests.append(
            pb.AuthorizeRedemptionRequest(
                request_id=unique("hold"),
                point_of_sale=shop.pos(),
                receipt_id=unique("r"),
                member=pb.MemberIdentity(member_id=member_id),
                currency_code="PTS",
                amount=amount,
            )
        )
        expected.append(wanted)
    start = threading.Barrier(len(requests))

    def send(request):
        start.wait()
        try:
            held = client.call("AuthorizeRedemption", request, shop.key).redemption
            return ("ok", "authorized") if held.state == pb.REDEMPTION_STATE_AUTHORIZED else ("ok", held.state)
        except grpc.RpcError as error:
            info = error_info_of(error)
            return error.code().name, info.reason if info else ""

    with ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(send, requests))
    assert answers == expected
    start = threading.Barrier(len(requests))
    with ThreadPoolExecutor(len(requests)) as pool:
        assert list(pool.map(send, requests)) == expected  # every retry answers as the first time
    assert max(call_sizes) > 1, f"no ledger call carried more than one hold: {call_sizes}"
    held = {r.request_id: r for r, a in zip(requests, answers, strict=True) if a[0] == "ok"}
    for member_id in members:
        wanted = sum(r.amount for r in held.values() if r.member.member_id == member_id)
        assert client.balance(member_id).pending == wanted  # a request sent twice holds once


def test_a_merged_batch_of_earns_is_one_partners_transaction_with_the_posted_marks_of_the_one_before(
    merged, monkeypatch
):
    """A batch's earns are recorded, and the earns the batches before it posted are marked posted,
    in one transaction: recording what the ledger answered takes no second one. Marks no batch
    carried are written by a flush within deferred_marks.FLUSH_SECONDS, and then every earn reads
    posted."""
    client, _refuse, _call_sizes = merged
    app = server._current

    async def no_background_write(_app) -> None:  # the recovery pass's one write: not an earn's
        return None

    monkeypatch.setattr(recovery, "forget_expired_secrets", no_background_write)
    shop = client.register_partner()
    members = [client.enroll()[0] for _ in range(CALLERS)]
    for member_id in members:  # wallets made beforehand: a new wallet is a write of its own
        client.earn(shop, member_id, [200])
    transactions = sum(app.mergers["write"].group_sizes.values())
    batches = sum(app.mergers["earn"].batch_sizes.values())
    flushes = app.posted_earns.flush_writes

    for _burst in range(3):
        requests = [_request(shop, member_id, unique("r"), amount=1_000) for member_id in members]
        assert _send_all_at_once(client, requests, shop.key) == [("ok", 5)] * CALLERS

    transactions = sum(app.mergers["write"].group_sizes.values()) - transactions
    batches = sum(app.mergers["earn"].batch_sizes.values()) - batches
    flushes = app.posted_earns.flush_writes - flushes
    assert batches < 3 * CALLERS, "the earns were not merged"
    assert transactions <= batches + flushes, (transactions, batches, flushes)
    deadline = time.monotonic() + 10 * deferred_marks.FLUSH_SECONDS
    while len(app.posted_earns) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(app.posted_earns) == 0
    pending = app.database.read(
        lambda connection: connection.execute(select(func.count()).where(earns.c.state == "pending")).scalar_one()
    )
    assert pending == 0
    assert [client.balance(member_id).posted for member_id in members[:3]] == [16, 16, 16]


def test_an_earn_whose_posted_mark_this_batch_carries_reads_as_posted(tmp_path):
    """The marks are written after the batch's read, in its one write: the read must still see
    the earns they name as posted, or a retry among them would be sent to the ledger again
    (and answered UNAVAILABLE if the ledger were away) instead of getting its first answer."""
    from services.common.db import DatabaseOptions, open_migrated
    from services.partners.server import MIGRATIONS
    from services.partners.store import earns as earn_store
    from services.partners.store.tables import earns

    database = open_migrated(DatabaseOptions(f"sqlite:///{tmp_path}/marks.db"), MIGRATIONS, "alembic_version_partners")
    values = dict(
        partner_id="shop",
        request_id="r1",
        fingerprint="f",
        receipt_id="receipt-1",
        store_id="s",
        terminal_id="t",
        member_id="m-1",
        currency_code="PTS",
        points=5,
        exact_points="5",
        bonus_points=0,
        promotion_applied=False,
        capped=False,
        rule_version=1,
        state="pending",
        occur_time_us=1,
        create_time_us=1,
    )
    from tests.support.migrations import insert_partner_and_member

    def seed(connection):
        insert_partner_and_member(connection)
        connection.execute(earns.insert(), [{**values, "earn_id": "earn:shop:r1"}])

    database.write(seed)
    requests, receipts = {("shop", "r1")}, {("shop", "receipt-1")}
    read = database.read(lambda c: earn_store.earns_by_requests_or_receipts(c, requests, receipts, {"earn:shop:r1"}))
    assert read[0][("shop", "r1")].state == "posted" and read[1][("shop", "receipt-1")].state == "posted"
    unmarked = database.read(lambda c: earn_store.earns_by_requests_or_receipts(c, requests, receipts))
    assert unmarked[0][("shop", "r1")].state == "pending"
    database.dispose()


def test_a_batch_of_new_earns_does_not_read_for_earlier_ones_and_a_retry_among_them_still_answers_first(merged):
    """New requests are inserted without first reading for earns recorded under their ids (the
    unique keys refuse a batch that holds one); a batch that meets a retry or a used receipt
    runs again, reading, so every answer is as before, and the batches after it read first."""
    from sqlalchemy import event

    from services.partners import earning

    client, _refuse, _call_sizes = merged
    app = server._current
    shop = client.register_partner(base_rate="0.5")
    members = [client.enroll()[0] for _ in range(4)]
    for member_id in members:
        client.earn(shop, member_id, [1000])
    reads: list[str] = []

    def count_reads(_connection, _cursor, statement, _parameters, _context, _executemany):
        if statement.lstrip().upper().startswith(("SELECT", "BEGIN ISOLATION LEVEL READ COMMITTED;SELECT")) and (
            "FROM earns" in statement
        ):
            reads.append(statement)

    event.listen(app.database.writer, "before_cursor_execute", count_reads)
    try:
        app.earn_batches_reading_first = 0
        new = [_request(shop, members[n % 4], unique("r")) for n in range(CALLERS)]
        assert _send_all_at_once(client, new, shop.key) == [("ok", 10)] * CALLERS
        assert reads == [], "a batch of new earns read for earlier ones"
        assert app.earn_batches_reading_first == 0

        used = new[0].receipt_id
        again = [*new[:8], *[_request(shop, members[n % 4], unique("r")) for n in range(8)]]
        again.append(_request(shop, members[0], used))  # a new request for a receipt already earned
        answers = _send_all_at_once(client, again, shop.key)
        assert answers == [("ok", 10)] * 16 + [("ALREADY_EXISTS", "RECEIPT_ALREADY_EARNED")]
        assert reads, "the batch that met earlier earns did not read them"
        assert app.earn_batches_reading_first > 0
    finally:
        event.remove(app.database.writer, "before_cursor_execute", count_reads)
    balances = {member_id: client.balance(member_id).posted for member_id in members}
    assert sum(balances.values()) == 4 * 5 + (CALLERS + 8) * 10  # each retry earned once
    assert earning.READ_FIRST_BATCHES_AFTER_CONFLICT > 0


def test_a_retry_a_new_earn_would_be_refused_for_still_answers_with_its_recorded_earn(merged):
    """Inserted without the read, a retry is priced as a new earn would be; a refusal there (here:
    the partner's earn rule ended since the first send) must not be its answer. The batch runs
    again, reading, and the retry gets the earn recorded the first time."""
    from services.common.timeconv import timestamp_from_micros

    client, _refuse, _call_sizes = merged
    app = server._current
    shop = client.register_partner(base_rate="0.5", valid_to_time=timestamp_from_micros(client.clock() + 60_000_000))
    member_id = client.enroll()[0]
    first, request = client.earn(shop, member_id, [2000])
    client.clock.advance(120)  # the rule has ended: a new earn now is NO_EARN_RULE
    with pytest.raises(grpc.RpcError) as refused:
        client.earn(shop, member_id, [2000])
    assert error_info_of(refused.value).reason == "NO_EARN_RULE"
    app.earn_batches_reading_first = 0
    again = client.call("Earn", request, shop.key)
    assert again.earn_id == first.earn_id and again.pricing.points == first.pricing.points == 10
    assert client.balance(member_id).posted == 10
