"""An earn the ledger refuses is final (the ledger remembers a refused transfer id forever):
it is marked failed with the reason, every retry answers with that failure, and the
recovery pass neither retries nor re-logs it."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from sqlalchemy import select

from coalition.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from coalition.partners.v1 import partners_pb2 as pb
from services.common.errors import Unavailable, error_info_of
from services.common.ledger_client import Failure, LedgerRefused
from services.common.timeconv import timestamp_from_micros
from services.partners import earn_pricing, model, recovery, server
from services.partners.store import earns as earn_store
from services.partners.store import recovery as recovery_store
from services.partners.store import rules as rule_store
from services.partners.store import tables
from tests.ledger.helpers import posted
from tests.partners.conftest import ADMIN_KEY, Coalition, MovableClock, unique
from tests.support.databases import new_database_url
from tests.support.servers import start_ledger_thread, start_partners_thread
from tests.support.tls import channel as tls_channel


@pytest.fixture(params=["sqlite", "postgres"])
def refusing(request, tmp_path):
    """Real servers whose ledger client refuses (or cannot reach the ledger for) chosen earns."""
    ledger_url, ledger_cleanup = new_database_url(request.param, tmp_path, "ledger")
    partners_url, partners_cleanup = new_database_url(request.param, tmp_path, "partners")
    ledger = start_ledger_thread(ledger_url)
    clock = MovableClock()
    partners = start_partners_thread(
        partners_url, ledger.address, ADMIN_KEY, clock, pending_earn_recovery_interval_seconds=0.1
    )
    app = server._current
    real = app.ledger.create_transfers
    outcomes: dict[str, str] = {}  # earn id -> "refuse", "unavailable", "internal" or "crash"
    attempts: dict[str, int] = {}

    async def create_transfers(transfers):
        outcome = outcomes.get(transfers[0].id)
        if outcome is None:
            return await real(transfers)
        attempts[transfers[0].id] = attempts.get(transfers[0].id, 0) + 1
        if outcome == "unavailable":
            raise Unavailable("LEDGER_UNAVAILABLE", "the ledger is unreachable")
        if outcome == "crash":
            raise RuntimeError("simulated: a defect that fails this earn on every attempt")
        if outcome == "internal":
            raise LedgerRefused("simulated: ledger CreateTransfers failed: INTERNAL", code="INTERNAL")
        return [
            ledger_pb2.CreateTransferResult(
                status=ledger_pb2.ITEM_STATUS_FAILED, failure_reason=Failure.FAILURE_REASON_CURRENCY_MISMATCH
            )
        ]

    app.ledger.create_transfers = create_transfers
    client = Coalition(partners.address, clock, ledger.address)
    client.app = app
    yield client, outcomes, attempts
    client.close()
    partners.stop()
    ledger.stop()
    partners_cleanup()
    ledger_cleanup()


def _earn_request(shop, member_id):
    return pb.EarnRequest(
        request_id=unique("earn"),
        point_of_sale=shop.pos(),
        receipt_id=unique("r"),
        member=pb.MemberIdentity(member_id=member_id),
        lines=[pb.BasketLine(line_number=1, category="grocery", quantity=1000, amount=4000)],
    )


def _refusal(client, request, key):
    with pytest.raises(grpc.RpcError) as raised:
        client.call("Earn", request, key)
    info = error_info_of(raised.value)
    return raised.value.code(), info.reason, info.metadata["failure"]


def test_a_refused_earn_is_failed_and_its_retry_returns_the_same_failure(refusing):
    client, outcomes, attempts = refusing
    shop = client.register_partner()
    member_id, _ = client.enroll()
    client.earn(shop, member_id, [1000])  # 5 points; the wallet exists
    request = _earn_request(shop, member_id)
    earn_id = model.earn_transfer_id(shop.partner_id, request.request_id)
    outcomes[earn_id] = "refuse"
    refused = (grpc.StatusCode.FAILED_PRECONDITION, "LEDGER_REFUSED", "CURRENCY_MISMATCH")
    assert _refusal(client, request, shop.key) == refused
    assert _refusal(client, request, shop.key) == refused
    assert attempts[earn_id] == 1  # the retry answered from the failed earn, without the ledger
    assert client.balance(member_id).posted == 5
    back = pb.ReturnRequest(
        request_id=unique("ret"), point_of_sale=shop.pos(), receipt_id=request.receipt_id, line_numbers=[1]
    )
    assert client.error("Return", back, shop.key) == (grpc.StatusCode.FAILED_PRECONDITION, "EARN_FAILED")


def test_a_refused_earn_takes_back_the_qualifying_points_it_counted(refusing):
    """A refused earn uses up nothing: the tier's qualifying total is what the posted earns gave."""
    client, outcomes, _ = refusing
    shop = client.register_partner()
    levels = [pb.TierLevel(name="Base", threshold=0, earn_multiplier="1")]
    levels.append(pb.TierLevel(name="Silver", threshold=100, earn_multiplier="1.5"))
    definition = pb.TierDefinition(
        currency_code="PTS",
        measure=pb.TIER_MEASURE_QUALIFYING_POINTS,
        window=pb.TIER_WINDOW_CALENDAR_YEAR,
        levels=levels,
    )
    client.call("SetTierDefinition", pb.SetTierDefinitionRequest(definition=definition))
    member_id, _ = client.enroll()
    client.earn(shop, member_id, [4000])  # 20 qualifying points
    request = _earn_request(shop, member_id)
    outcomes[model.earn_transfer_id(shop.partner_id, request.request_id)] = "refuse"
    assert _refusal(client, request, shop.key)[1] == "LEDGER_REFUSED"
    tier = pb.GetMemberTierRequest(member=pb.MemberIdentity(member_id=member_id), currency_code="PTS")
    status = client.call("GetMemberTier", tier, shop.key)
    assert (status.tier.name, status.qualifying_amount, status.next_tier_needed_amount) == ("Base", 20, 80)


def test_a_pending_earn_the_ledger_refuses_is_failed_by_recovery_once(refusing):
    """The ledger was unreachable, the till gave up; when the recovery pass finds the ledger
    refusing the earn it marks it failed, and later passes leave it alone."""
    client, outcomes, attempts = refusing
    shop = client.register_partner()
    member_id, _ = client.enroll()
    client.earn(shop, member_id, [1000])
    request = _earn_request(shop, member_id)
    earn_id = model.earn_transfer_id(shop.partner_id, request.request_id)
    outcomes[earn_id] = "unavailable"
    assert client.error("Earn", request, shop.key) == (grpc.StatusCode.UNAVAILABLE, "LEDGER_UNAVAILABLE")
    outcomes[earn_id] = "refuse"
    attempts[earn_id] = 0
    client.clock.advance(recovery.AGE_SECONDS_MIN + 1)
    deadline = time.monotonic() + 15
    while attempts[earn_id] == 0:
        assert time.monotonic() < deadline, "the recovery pass never tried the earn"
        time.sleep(0.05)
    time.sleep(0.5)  # several more recovery passes
    assert attempts[earn_id] == 1
    refused = (grpc.StatusCode.FAILED_PRECONDITION, "LEDGER_REFUSED", "CURRENCY_MISMATCH")
    assert _refusal(client, request, shop.key) == refused
    assert attempts[earn_id] == 1
    assert client.balance(member_id).posted == 5


def _earn_state(client, shop, request_id: str):
    return client.app.database.read(
        lambda connection: earn_store.earn_by_request(connection, shop.partner_id, request_id)
    )


def test_an_earn_the_ledger_finds_invalid_fails_alone_and_later_earns_still_post(refusing):
    """Review proof: the recovery pass caught only FailedPrecondition, so one pending earn the
    ledger refuses with INVALID_ARGUMENT (amount above its AMOUNT_MAX, recorded before earns
    were bounded) aborted every pass before the earns recorded after it. Now that earn fails
    with its reason, an unexpected error on another only defers that one, and the rest post."""
    client, outcomes, _ = refusing
    shop = client.register_partner()
    member_id, _ = client.enroll()
    client.earn(shop, member_id, [1000])  # 5 points; the wallet exists
    poison, stuck, normal = (_earn_request(shop, member_id) for _ in range(3))
    for request in (poison, stuck, normal):
        outcomes[model.earn_transfer_id(shop.partner_id, request.request_id)] = "unavailable"
        assert client.error("Earn", request, shop.key) == (grpc.StatusCode.UNAVAILABLE, "LEDGER_UNAVAILABLE")
        client.clock.advance(0.01)  # recorded in this order; the pass takes the oldest first
    # As if recorded before pricing was bounded: the real ledger refuses it with INVALID_ARGUMENT.
    poison_id = model.earn_transfer_id(shop.partner_id, poison.request_id)
    client.app.database.write(
        lambda connection: connection.execute(
            tables.earns.update().where(tables.earns.c.earn_id == poison_id).values(points=2 * model.LEDGER_AMOUNT_MAX)
        )
    )
    del outcomes[poison_id]
    outcomes[model.earn_transfer_id(shop.partner_id, stuck.request_id)] = "internal"
    del outcomes[model.earn_transfer_id(shop.partner_id, normal.request_id)]
    client.clock.advance(recovery.AGE_SECONDS_MIN + 1)
    deadline = time.monotonic() + 15
    while _earn_state(client, shop, normal.request_id).state != "posted":
        assert time.monotonic() < deadline, "the recovery pass never reached the earn after the poison one"
        time.sleep(0.05)
    failed = _earn_state(client, shop, poison.request_id)
    assert (failed.state, failed.failure_reason) == ("failed", "INVALID_ARGUMENT")
    assert _earn_state(client, shop, stuck.request_id).state == "pending"  # tried again next pass
    assert client.balance(member_id).posted == 5 + 20
    # The till's retry of the invalid earn gets a client error, not INTERNAL.
    assert _refusal(client, poison, shop.key) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "LEDGER_REFUSED",
        "INVALID_ARGUMENT",
    )


def test_an_earn_rule_that_could_price_beyond_the_ledger_maximum_is_refused(refusing):
    client, _, _ = refusing
    shop = client.register_partner(base_rate=None)
    huge = dict(
        base_rate="1000000", category_multipliers=[pb.CategoryMultiplier(category="grocery", multiplier="1000")]
    )
    code, reason = client.error(
        "CreateEarnRule",
        pb.CreateEarnRuleRequest(
            rule=pb.EarnRule(partner_id=shop.partner_id, currency_code="PTS", basis=pb.EARN_BASIS_AMOUNT, **huge),
            request_id=unique("rule"),
        ),
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_EARN_RULE")
    client.create_earn_rule(shop.partner_id, cap_points_per_transaction=model.LEDGER_AMOUNT_MAX, **huge)  # capped: fine


def test_a_basket_priced_beyond_the_ledger_maximum_is_refused_at_the_till_and_per_offline_item(refusing):
    """A rule stored before rules were bounded can still price a basket beyond what one ledger
    transfer carries: the till gets FAILED_PRECONDITION EARN_TOO_LARGE (nothing recorded), and
    an offline batch reports that item alone."""
    client, _, _ = refusing
    shop = client.register_partner()
    member_id, _ = client.enroll()
    now = client.clock()
    rule = earn_pricing.EarnRule(
        partner_id=shop.partner_id,
        version=99,
        currency_code="PTS",
        basis=earn_pricing.BASIS_AMOUNT,
        base_rate=model.BASE_RATE_MAX,
        category_multipliers={"luxury": model.MULTIPLIER_MAX},
        valid_from_micros=now - 3_600_000_000,
    )
    client.app.database.write(
        lambda connection: connection.execute(
            tables.earn_rules.insert().values(**rule_store.earn_rule_values(rule, now))
        )
    )
    big = _earn_request(shop, member_id)
    del big.lines[:]
    big.lines.extend(
        pb.BasketLine(line_number=n, category="luxury", quantity=1000, amount=model.LINE_AMOUNT_MAX) for n in (1, 2)
    )
    assert client.error("Earn", big, shop.key) == (grpc.StatusCode.FAILED_PRECONDITION, "EARN_TOO_LARGE")
    assert _earn_state(client, shop, big.request_id) is None
    quote = pb.QuoteEarnRequest(point_of_sale=shop.pos(), lines=big.lines)
    assert client.error("QuoteEarn", quote, shop.key) == (grpc.StatusCode.FAILED_PRECONDITION, "EARN_TOO_LARGE")
    small = _earn_request(shop, member_id)
    batch = pb.UploadOfflineBatchRequest(
        earns=[pb.OfflineEarn(earn=request, occur_time=timestamp_from_micros(now)) for request in (big, small)]
    )
    response = client.call("UploadOfflineBatch", batch, shop.key)
    assert (response.succeeded_count, response.failed_count) == (1, 1)
    assert response.results[0].error_reason == "EARN_TOO_LARGE"
    assert response.results[1].error_reason == "" and response.results[1].earn.pricing.points > 0


def _recovery_of(client, earn_id: str):
    return client.app.database.read(lambda connection: recovery_store.attempts_of(connection, "earn", earn_id))


def _wait(condition, what: str) -> None:
    deadline = time.monotonic() + 15
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_an_earn_that_keeps_failing_waits_behind_the_others_with_its_attempts_counted(refusing, monkeypatch):
    """With room for one earn per pass, an earn whose every attempt fails is put off (each attempt
    counted on its row, the next one 10 s, then 20 s away; an attempt that found the ledger away
    not counted) and the earns recorded after it are posted meanwhile; once it stops failing it
    is posted too."""
    client, outcomes, attempts = refusing
    monkeypatch.setattr(recovery, "ROWS_PER_PASS_MAX", 1)
    shop = client.register_partner()
    member_id, _ = client.enroll()
    client.earn(shop, member_id, [1000])  # 5 points; the wallet exists
    requests = [_earn_request(shop, member_id) for _ in range(4)]  # 20 points each
    ids = [model.earn_transfer_id(shop.partner_id, request.request_id) for request in requests]
    for request, earn_id in zip(requests, ids, strict=True):
        outcomes[earn_id] = "unavailable"
        assert client.error("Earn", request, shop.key) == (grpc.StatusCode.UNAVAILABLE, "LEDGER_UNAVAILABLE")
    poison, *others = ids
    outcomes[poison] = "crash"
    attempts[poison] = 0
    for earn_id in others:
        del outcomes[earn_id]
    client.clock.advance(recovery.AGE_SECONDS_MIN + 1)
    _wait(lambda: client.balance(member_id).posted == 5 + 3 * 20, "the earns behind the failing one were never posted")
    first = _recovery_of(client, poison)
    assert (first.state, first.recovery_attempts, attempts[poison]) == ("pending", 1, 1)
    assert first.next_recovery_us >= client.clock() + (recovery.BACKOFF_SECONDS_MIN - 1) * 1_000_000
    time.sleep(0.5)  # several passes: it is not due yet
    assert attempts[poison] == 1
    # An attempt that finds the ledger away is not the earn's fault: it is not counted.
    outcomes[poison] = "unavailable"
    client.clock.advance(recovery.BACKOFF_SECONDS_MIN + 1)
    _wait(lambda: attempts[poison] == 2, "the failing earn was never tried again")
    _wait(lambda: _recovery_of(client, poison).next_recovery_us < client.clock() + 2_000_000, "not made due again")
    assert _recovery_of(client, poison).recovery_attempts == 1
    outcomes[poison] = "crash"
    _wait(lambda: attempts[poison] == 3, "the earn was not tried again after the ledger came back")
    second = _recovery_of(client, poison)
    assert second.recovery_attempts == 2
    assert second.next_recovery_us >= client.clock() + (2 * recovery.BACKOFF_SECONDS_MIN - 1) * 1_000_000
    del outcomes[poison]
    client.clock.advance(2 * recovery.BACKOFF_SECONDS_MIN + 1)
    _wait(lambda: _recovery_of(client, poison).state == "posted", "the earn was never posted once it stopped failing")
    assert client.balance(member_id).posted == 5 + 4 * 20


def test_a_refused_earn_uses_up_nothing_its_receipt_earns_under_a_new_request_id(refusing):
    """DOMAIN.md: a receipt whose earn was refused may be earned again with a new request id.
    The refused request keeps answering its refusal, the receipt's new earn is the one a return
    reverses, and a third request id for the receipt is refused as already earned."""
    client, outcomes, _ = refusing
    shop = client.register_partner()
    member_id, _ = client.enroll()
    client.earn(shop, member_id, [1000])  # 5 points; the wallet exists
    refused_request = _earn_request(shop, member_id)
    outcomes[model.earn_transfer_id(shop.partner_id, refused_request.request_id)] = "refuse"
    refused = (grpc.StatusCode.FAILED_PRECONDITION, "LEDGER_REFUSED", "CURRENCY_MISMATCH")
    assert _refusal(client, refused_request, shop.key) == refused
    again = _earn_request(shop, member_id)
    again.receipt_id = refused_request.receipt_id
    assert client.call("Earn", again, shop.key).pricing.points == 20
    assert client.call("Earn", again, shop.key).pricing.points == 20  # its retry
    assert _refusal(client, refused_request, shop.key) == refused  # the first request's answer stays
    third = _earn_request(shop, member_id)
    third.receipt_id = refused_request.receipt_id
    assert client.error("Earn", third, shop.key) == (grpc.StatusCode.ALREADY_EXISTS, "RECEIPT_ALREADY_EARNED")
    assert client.balance(member_id).posted == 5 + 20
    back = pb.ReturnRequest(
        request_id=unique("ret"), point_of_sale=shop.pos(), receipt_id=again.receipt_id, line_numbers=[1]
    )
    assert client.call("Return", back, shop.key).earned_points_reversed == 20
    assert client.balance(member_id).posted == 5


def test_two_earns_of_a_refused_receipt_at_once_earn_it_once(refusing):
    """The receipt freed by a refusal is still earned at most once, however many tills race for it."""
    client, outcomes, _ = refusing
    shop = client.register_partner()
    member_id, _ = client.enroll()
    client.earn(shop, member_id, [1000])
    refused_request = _earn_request(shop, member_id)
    outcomes[model.earn_transfer_id(shop.partner_id, refused_request.request_id)] = "refuse"
    _refusal(client, refused_request, shop.key)
    racers = []
    for _ in range(8):
        racer = _earn_request(shop, member_id)
        racer.receipt_id = refused_request.receipt_id
        racers.append(racer)
    start = threading.Barrier(len(racers))

    def send(request):
        start.wait()
        try:
            return client.call("Earn", request, shop.key).pricing.points
        except grpc.RpcError as error:
            return error_info_of(error).reason

    with ThreadPoolExecutor(len(racers)) as pool:
        answers = sorted(map(str, pool.map(send, racers)))
    assert answers == ["20"] + ["RECEIPT_ALREADY_EARNED"] * 7
    assert client.balance(member_id).posted == 5 + 20


def test_an_earn_the_ledger_refuses_but_holds_under_its_id_keeps_its_receipt(refusing):
    """If the ledger already holds a different transfer under an earn's id (a restored partners
    database, say), its refusal is not taken as final: the earn stays pending and its receipt
    taken, so the points the ledger holds are never issued a second time under a new request id."""
    client, _, _ = refusing
    shop = client.register_partner()
    member_id, _ = client.enroll()
    client.earn(shop, member_id, [1000])  # 5 points; the wallet exists
    request = _earn_request(shop, member_id)
    earn_id = model.earn_transfer_id(shop.partner_id, request.request_id)
    with tls_channel(client.ledger_address) as channel:
        ledger = ledger_pb2_grpc.LedgerServiceStub(channel)
        held = posted(
            earn_id, model.issuance_account_id("PTS", shop.partner_id), model.wallet_account_id("PTS", member_id), 7
        )
        ledger.CreateTransfers(ledger_pb2.CreateTransfersRequest(transfers=[held]), timeout=10)
    code, reason = client.error("Earn", request, shop.key)
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "EARN_CONFLICTS_WITH_LEDGER")
    assert _earn_state(client, shop, request.request_id).state == "pending"
    again = _earn_request(shop, member_id)
    again.receipt_id = request.receipt_id
    assert client.error("Earn", again, shop.key) == (grpc.StatusCode.ALREADY_EXISTS, "RECEIPT_ALREADY_EARNED")
    assert client.balance(member_id).posted == 5 + 7


def test_a_sealed_key_secret_is_erased_once_its_retry_window_ends(refusing):
    """The secret of an issued key is kept (sealed) only for its retry window; the recovery pass
    erases it when the window ends, even if no other key is ever issued."""
    client, _, _ = refusing
    client.register_partner()  # issues a key

    def sealed() -> list:
        query = select(tables.admin_requests.c.sealed_secret).where(
            tables.admin_requests.c.operation == "issue_api_key"
        )
        return client.app.database.read(lambda connection: connection.execute(query).scalars().all())

    assert sealed() and all(secret is not None for secret in sealed())
    time.sleep(0.5)  # several passes: the window has not ended
    assert all(secret is not None for secret in sealed())
    client.clock.advance(model.API_KEY_RETRY_WINDOW_SECONDS + 1)
    _wait(lambda: all(secret is None for secret in sealed()), "the sealed secret outlived its retry window")
