"""Random sequences of POS operations on one member against a simple model of the wallet
(hypothesis stateful testing, over real gRPC): the balance always matches the model and
available points never go below zero, whatever the order of earns, holds, captures, voids and returns."""

from __future__ import annotations

import grpc
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from coalition.partners.v1 import partners_pb2 as pb
from tests.partners.conftest import unique


class WalletMachine(RuleBasedStateMachine):
    coalition = None  # set by the test

    @initialize()
    def setup(self):
        self.shop = self.coalition.register_partner()
        self.member_id, _ = self.coalition.enroll()
        self.posted = 0
        self.holds: dict[str, int] = {}  # open holds: redemption id -> held points
        self.receipts: list[tuple[str, int]] = []  # not yet returned: receipt id, earned points

    @property
    def available(self) -> int:
        return self.posted - sum(self.holds.values())

    @rule(cents=st.integers(0, 20_000))
    def earn(self, cents):
        response, request = self.coalition.earn(self.shop, self.member_id, [cents])
        assert response.pricing.points == cents // 200
        self.posted += response.pricing.points
        self.receipts.append((request.receipt_id, response.pricing.points))

    @rule(points=st.integers(1, 150))
    def hold(self, points):
        request = pb.AuthorizeRedemptionRequest(
            request_id=unique("h"),
            point_of_sale=self.shop.pos(),
            receipt_id=unique("r"),
            member=pb.MemberIdentity(member_id=self.member_id),
            currency_code="PTS",
            amount=points,
        )
        try:
            redemption = self.coalition.call("AuthorizeRedemption", request, self.shop.key).redemption
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and points > self.available
            return
        assert points <= self.available
        self.holds[redemption.redemption_id] = points

    @precondition(lambda self: self.holds)
    @rule(data=st.data())
    def capture(self, data):
        redemption_id = data.draw(st.sampled_from(sorted(self.holds)))
        amount = data.draw(st.integers(0, self.holds[redemption_id]))
        request = pb.CaptureRedemptionRequest(request_id=unique("c"), redemption_id=redemption_id, amount=amount)
        captured = self.coalition.call("CaptureRedemption", request, self.shop.key).redemption.captured_amount
        assert captured == (amount or self.holds[redemption_id])
        self.posted -= captured
        del self.holds[redemption_id]

    @precondition(lambda self: self.holds)
    @rule(data=st.data())
    def void(self, data):
        redemption_id = data.draw(st.sampled_from(sorted(self.holds)))
        request = pb.VoidRedemptionRequest(request_id=unique("v"), redemption_id=redemption_id)
        self.coalition.call("VoidRedemption", request, self.shop.key)
        del self.holds[redemption_id]

    @precondition(lambda self: self.receipts)
    @rule(data=st.data())
    def return_receipt(self, data):
        receipt_id, points = data.draw(st.sampled_from(self.receipts))
        request = pb.ReturnRequest(
            request_id=unique("ret"), point_of_sale=self.shop.pos(), receipt_id=receipt_id, line_numbers=[1]
        )
        response = self.coalition.call("Return", request, self.shop.key)
        expected = min(points, max(0, self.available))
        assert (response.earned_points_reversed, response.shortfall_points) == (expected, points - expected)
        self.posted -= expected
        self.receipts.remove((receipt_id, points))

    @invariant()
    def balance_matches_the_model(self):
        if not hasattr(self, "member_id"):
            return
        balance = self.coalition.balance(self.member_id)
        assert (balance.posted, balance.pending, balance.available) == (
            self.posted,
            sum(self.holds.values()),
            self.available,
        )
        assert balance.available >= 0


def test_random_pos_sequences_keep_the_wallet_consistent(coalition):
    WalletMachine.coalition = coalition
    run_state_machine_as_test(
        WalletMachine,
        settings=settings(
            max_examples=12,
            stateful_step_count=15,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
