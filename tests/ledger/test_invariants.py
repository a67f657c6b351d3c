"""Property-based: random operation sequences against the real ledger and a simple model.

After every step the ledger must agree with the model (posted and pending per account), every
currency must sum to zero, and no no-overdraft wallet may show a negative available balance.
"""

from __future__ import annotations

import uuid

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

from coalition.ledger.v1 import ledger_pb2 as pb
from tests.ledger.helpers import CREATED, CREDIT, DEBIT, account, create_accounts, register_currency

WALLETS = 3


def make_machine(ledger):
    class LedgerMachine(RuleBasedStateMachine):
        @initialize()
        def open_accounts(self):
            run = uuid.uuid4().hex[:8]
            register_currency(ledger)
            self.issuance = f"iss-{run}"
            self.shop = f"shop-{run}"
            self.wallets = [f"w{n}-{run}" for n in range(WALLETS)]
            create_accounts(
                ledger,
                account(self.issuance, DEBIT),
                account(self.shop, CREDIT),
                *(account(w, CREDIT, no_overdraft=True) for w in self.wallets),
            )
            self.accounts = [self.issuance, self.shop, *self.wallets]
            # model: account -> [debits_posted, credits_posted, debits_pending, credits_pending]
            self.model = {a: [0, 0, 0, 0] for a in self.accounts}
            self.holds = {}  # pending id -> (debit, credit, amount)
            self.posted = {}  # transfer id -> (debit, credit, amount, reversed)
            self.counter = 0

        def _id(self, prefix):
            self.counter += 1
            return f"{prefix}-{self.counter}-{uuid.uuid4().hex[:6]}"

        def _available(self, account_id):
            dp, cp, dpe, _ = self.model[account_id]
            return cp - dp - dpe

        def _send(self, *items):
            return list(ledger.CreateTransfers(pb.CreateTransfersRequest(transfers=list(items)), timeout=30).results)

        def _apply_posted(self, debit, credit, amount):
            self.model[debit][0] += amount
            self.model[credit][1] += amount

        @rule(wallet=st.integers(0, WALLETS - 1), amount=st.integers(1, 500))
        def earn(self, wallet, amount):
            transfer_id = self._id("earn")
            item = pb.TransferInput(
                id=transfer_id,
                debit_account_id=self.issuance,
                credit_account_id=self.wallets[wallet],
                amount=amount,
                currency_code="PTS",
                kind=pb.TRANSFER_KIND_POSTED,
                code=pb.TRANSFER_CODE_EARN,
            )
            [result] = self._send(item)
            assert result.status == CREATED
            self._apply_posted(self.issuance, self.wallets[wallet], amount)
            self.posted[transfer_id] = [self.issuance, self.wallets[wallet], amount, 0]

        @rule(source=st.integers(0, WALLETS - 1), destination=st.integers(0, WALLETS), amount=st.integers(1, 700))
        def spend_or_move(self, source, destination, amount):
            debit = self.wallets[source]
            credit = self.shop if destination == WALLETS else self.wallets[destination]
            if debit == credit:
                return
            transfer_id = self._id("move")
            [result] = self._send(
                pb.TransferInput(
                    id=transfer_id,
                    debit_account_id=debit,
                    credit_account_id=credit,
                    amount=amount,
                    currency_code="PTS",
                    kind=pb.TRANSFER_KIND_POSTED,
                    code=pb.TRANSFER_CODE_REDEEM,
                )
            )
            expected_ok = self._available(debit) >= amount
            assert (result.status == CREATED) == expected_ok, (result, self.model[debit])
            if expected_ok:
                self._apply_posted(debit, credit, amount)
                self.posted[transfer_id] = [debit, credit, amount, 0]
            else:
                assert result.failure_reason == pb.FAILURE_REASON_INSUFFICIENT_FUNDS

        @rule(source=st.integers(0, WALLETS - 1), amount=st.integers(1, 400))
        def hold(self, source, amount):
            debit = self.wallets[source]
            transfer_id = self._id("hold")
            [result] = self._send(
                pb.TransferInput(
                    id=transfer_id,
                    debit_account_id=debit,
                    credit_account_id=self.shop,
                    amount=amount,
                    currency_code="PTS",
                    kind=pb.TRANSFER_KIND_PENDING,
                    timeout_seconds=3600,
                    code=pb.TRANSFER_CODE_REDEEM,
                )
            )
            expected_ok = self._available(debit) >= amount
            assert (result.status == CREATED) == expected_ok
            if expected_ok:
                self.model[debit][2] += amount
                self.model[self.shop][3] += amount
                self.holds[transfer_id] = (debit, self.shop, amount)

        @precondition(lambda self: self.holds)
        @rule(data=st.data(), void=st.booleans())
        def resolve_hold(self, data, void):
            pending_id = data.draw(st.sampled_from(sorted(self.holds)))
            debit, credit, amount = self.holds.pop(pending_id)
            post_amount = 0 if void else data.draw(st.integers(1, amount))
            item = pb.TransferInput(
                id=self._id("resolve"),
                pending_id=pending_id,
                amount=post_amount,
                kind=pb.TRANSFER_KIND_VOID_PENDING if void else pb.TRANSFER_KIND_POST_PENDING,
            )
            [result] = self._send(item)
            assert result.status == CREATED, result
            self.model[debit][2] -= amount
            self.model[credit][3] -= amount
            if post_amount:
                self._apply_posted(debit, credit, post_amount)
                self.posted[item.id] = [debit, credit, post_amount, 0]

        @precondition(lambda self: self.posted)
        @rule(data=st.data())
        def reverse(self, data):
            original_id = data.draw(st.sampled_from(sorted(self.posted)))
            debit, credit, amount, reversed_amount = self.posted[original_id]
            remaining = amount - reversed_amount
            ask = data.draw(st.integers(1, amount))
            [result] = self._send(
                pb.TransferInput(
                    id=self._id("rev"),
                    debit_account_id=credit,
                    credit_account_id=debit,
                    amount=ask,
                    currency_code="PTS",
                    kind=pb.TRANSFER_KIND_POSTED,
                    code=pb.TRANSFER_CODE_REVERSAL,
                    reverses_transfer_id=original_id,
                )
            )
            within_bounds = credit not in self.wallets or self._available(credit) >= ask
            expected_ok = ask <= remaining and within_bounds
            assert (result.status == CREATED) == expected_ok, (result, ask, remaining)
            if expected_ok:
                self._apply_posted(credit, debit, ask)
                self.posted[original_id][3] += ask

        @rule(source=st.integers(0, WALLETS - 1), amount=st.integers(1, 300))
        def linked_pair(self, source, amount):
            """Two wallets pay the shop together, or neither does."""
            first, second = self.wallets[source], self.wallets[(source + 1) % WALLETS]
            items = [
                pb.TransferInput(
                    id=self._id("pair"),
                    debit_account_id=wallet,
                    credit_account_id=self.shop,
                    amount=amount,
                    currency_code="PTS",
                    kind=pb.TRANSFER_KIND_POSTED,
                    code=pb.TRANSFER_CODE_REDEEM,
                    linked=linked,
                )
                for wallet, linked in ((first, True), (second, False))
            ]
            results = self._send(*items)
            expected_ok = self._available(first) >= amount and self._available(second) >= amount
            assert all((r.status == CREATED) == expected_ok for r in results), results
            if expected_ok:
                for wallet, item in ((first, items[0]), (second, items[1])):
                    self._apply_posted(wallet, self.shop, amount)
                    self.posted[item.id] = [wallet, self.shop, amount, 0]

        @invariant()
        def ledger_matches_model_and_balances(self):
            response = ledger.GetBalances(pb.GetBalancesRequest(account_ids=self.accounts), timeout=30)
            for found in response.balances:
                expected = self.model[found.account_id]
                actual = [found.debits_posted, found.credits_posted, found.debits_pending, found.credits_pending]
                assert actual == expected, found.account_id
                if found.account_id in self.wallets:
                    assert found.available >= 0
            trial = ledger.GetTrialBalance(pb.GetTrialBalanceRequest(), timeout=30)
            assert trial.balanced, trial

    return LedgerMachine


def test_random_operation_sequences_keep_the_ledger_balanced_and_equal_to_the_model(ledger):
    machine = make_machine(ledger)
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=15,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
