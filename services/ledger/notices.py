"""Expiry notices: "these points expire soon", recorded once per lot and expiry date.

Plain Python, no SQL. The expiry pass (expiry.py) decides, under the wallets' locks, which open
lots have entered their notice period (their expiry date minus the policy's notice days) and
have no notice for that date yet, and records one. The notice is also the evidence the expiry
needs: a lot expires only once the notice for its current round and date exists and its
expire_time has come, and that time is never less than a full notice period after the notice
was recorded. So points never expire unannounced, even when the ledger was down during the
notice period, or a lot is given back (restored, reinstated) after its date had passed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from services.ledger import lots

NoticeKey = tuple[str, str, int, int]  # (wallet, lot, expiry round, due date in µs)


@dataclass(frozen=True, slots=True)
class ExpiryNotice:
    account_id: str
    lot_id: str
    expiry_round: int
    due_at_us: int  # the lot's expiry date the notice is for (what the policy gave it)
    owner_id: str
    currency_code: str
    amount: int  # the lot's open minor units when noticed
    expires_at_us: int  # when the points expire: max(due, noticed + notice period)
    noticed_at_us: int
    notice_sequence: int = 0  # set when written

    @property
    def key(self) -> NoticeKey:
        return (self.account_id, self.lot_id, self.expiry_round, self.due_at_us)

    def numbered(self, sequence: int) -> ExpiryNotice:
        return replace(self, notice_sequence=sequence)


def notice_key(lot: lots.Lot, due_at_us: int) -> NoticeKey:
    return (lot.account_id, lot.lot_id, lot.expiry_round, due_at_us)


def notice_due(
    lot: lots.Lot, due_at_us: int, now_us: int, lookahead_us: int, owner_id: str, currency_code: str
) -> ExpiryNotice | None:
    """A notice for `lot`, due at `due_at_us`, if its notice period begins by now + lookahead: a
    notice a pass records a little early keeps the expiry on its date; one recorded late (the
    ledger was down, or the lot came back after its date) moves it to a notice period later."""
    notice_us = lot.notice_days * lots.US_PER_DAY
    if lot.open_amount <= 0 or due_at_us - notice_us > now_us + lookahead_us:
        return None
    return ExpiryNotice(
        account_id=lot.account_id,
        lot_id=lot.lot_id,
        expiry_round=lot.expiry_round,
        due_at_us=due_at_us,
        owner_id=owner_id,
        currency_code=currency_code,
        amount=lot.open_amount,
        expires_at_us=max(due_at_us, now_us + notice_us),
        noticed_at_us=now_us,
    )


def may_expire(notice: ExpiryNotice | None, as_of_us: int) -> bool:
    """Whether the lot the notice is for may expire at as_of: only once announced long enough."""
    return notice is not None and notice.expires_at_us <= as_of_us
