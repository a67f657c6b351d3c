from coalition.ledger.v1 import ledger_pb2 as pb
from tests.ledger.helpers import CREATED, EXISTS, FAILED, balance, pending, post, posted, setup_pts, transfer, void


def test_earn_hold_capture_and_void_move_balances(ledger):
    issuance, (wallet, shop) = setup_pts(ledger)
    [earn] = transfer(ledger, posted("earn-1", issuance, wallet, 500))
    assert earn.status == CREATED and earn.transfer.commit_sequence > 0
    [hold] = transfer(ledger, pending("hold-1", wallet, shop, 200))
    assert hold.status == CREATED
    wallet_balance = balance(ledger, wallet)
    assert (wallet_balance.posted, wallet_balance.pending, wallet_balance.available) == (500, 200, 300)
    [capture] = transfer(ledger, post("capture-1", "hold-1", 150))
    assert capture.status == CREATED, capture
    wallet_balance = balance(ledger, wallet)
    assert (wallet_balance.posted, wallet_balance.pending, wallet_balance.available) == (350, 0, 350)
    [again] = transfer(ledger, void("void-1", "hold-1"))
    assert again.status == FAILED and again.failure_reason == pb.FAILURE_REASON_PENDING_TRANSFER_ALREADY_POSTED
    [retry] = transfer(ledger, posted("earn-1", issuance, wallet, 500))
    assert retry.status == EXISTS
    trial = ledger.GetTrialBalance(pb.GetTrialBalanceRequest())
    assert trial.balanced
