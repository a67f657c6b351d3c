"""INSUFFICIENT_POINTS: the member's available points do not cover a hold or a conversion.

The refusal says how many points were asked for and how many the wallet has available, so a
till can offer the rest in another tender. The ledger decides the refusal inside its batch; the
available figure is read afterwards (one balance read, on the refusal path only), so it is the
wallet's available points when the answer is sent.
"""

from __future__ import annotations

from services.common.errors import FailedPrecondition, ServiceError
from services.partners import model
from services.partners.app import App


class InsufficientPoints(FailedPrecondition):
    """FAILED_PRECONDITION `INSUFFICIENT_POINTS` with `requested`, `available` and `currency`."""

    REASON = "INSUFFICIENT_POINTS"

    def __init__(self, what: str, member_id: str, currency: str, requested: int, available: int | None = None) -> None:
        self.member_id, self.currency, self.requested = member_id, currency, requested
        figures = {"requested": requested, "currency": currency}
        if available is not None:
            figures["available"] = available
        super().__init__(self.REASON, f"the member's available points do not cover the {what}", **figures)
        self.what = what


async def with_available(app: App, error: ServiceError) -> ServiceError:
    """The same refusal, now saying how many points the wallet has available (0 without a wallet)."""
    if not isinstance(error, InsufficientPoints) or "available" in error.metadata:
        return error
    wallet = model.wallet_account_id(error.currency, error.member_id)
    try:
        balances = await app.ledger.get_balances([wallet])
    except ServiceError:  # no wallet yet (nothing to spend) or the ledger gone: the refusal stands
        balances = []
    available = max(0, balances[0].available) if balances else 0
    return InsufficientPoints(error.what, error.member_id, error.currency, error.requested, available)
