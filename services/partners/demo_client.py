"""`make demo`: a small POS client that walks the demo coalition end to end and says what happened.

Needs `make run` (ledger and partners with the demo seed) in another terminal.
"""

from __future__ import annotations

import sys
import uuid

import grpc

from coalition.partners.v1 import partners_pb2 as pb
from coalition.partners.v1 import partners_pb2_grpc
from services.common.addresses import dial_address
from services.common.config import settings_or_exit
from services.common.errors import error_info_of
from services.common.tls import Transport, client_transport
from services.partners.demo import DEMO_CARDS, DEMO_KEYS

CALL_DEADLINE_SECONDS = 5


class Pos:
    def __init__(self, stub: partners_pb2_grpc.PartnersServiceStub, partner_id: str, store_id: str, terminal_id: str):
        self.stub = stub
        self.partner_id = partner_id
        self.key = DEMO_KEYS[partner_id]
        self.point_of_sale = pb.PointOfSale(store_id=store_id, terminal_id=terminal_id)

    def __call__(self, method: str, request):
        metadata = (("authorization", f"Bearer {self.key}"), ("x-request-id", uuid.uuid4().hex))
        return getattr(self.stub, method)(request, metadata=metadata, timeout=CALL_DEADLINE_SECONDS)


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _card(number: str) -> pb.MemberIdentity:
    return pb.MemberIdentity(alias=pb.Alias(kind=pb.ALIAS_KIND_CARD, value=number))


def _show_balances(pos: Pos, card: str) -> None:
    response = pos("GetMemberBalance", pb.GetMemberBalanceRequest(member=_card(card)))
    for item in response.balances:
        figures = f"posted {item.posted:>8}  held {item.pending:>6}  available {item.available:>8}"
        print(f"    {item.currency_code:<9} {figures}")


def run(address: str, transport: Transport) -> None:
    with transport.channel(address) as channel:
        stub = partners_pb2_grpc.PartnersServiceStub(channel)
        supermarket = Pos(stub, "fresh-mart", "fm-berlin-01", "till-1")
        fuel = Pos(stub, "fuelco", "fc-a9-01", "pump-1")
        hotel = Pos(stub, "grand-hotels", "gh-paris-01", "desk-1")
        card = DEMO_CARDS[0]

        print(f"1. Earn at FreshMart, card {card}")
        receipt = _id("fm-receipt")
        basket = [
            pb.BasketLine(line_number=1, sku="apples", category="fresh", quantity=2000, amount=1_250),
            pb.BasketLine(line_number=2, sku="coffee", category="grocery", quantity=1000, amount=3_599),
            pb.BasketLine(line_number=3, sku="cigarettes", category="tobacco", quantity=1000, amount=890),
            pb.BasketLine(line_number=4, sku="wine", category="grocery", quantity=1000, amount=1_499),
        ]
        proforma = supermarket("QuoteEarn", pb.QuoteEarnRequest(point_of_sale=supermarket.point_of_sale, lines=basket))
        print(f"   proforma: {proforma.pricing.points} PTS (exact {proforma.pricing.exact_points})")
        earn = pb.EarnRequest(
            request_id=_id("earn"),
            point_of_sale=supermarket.point_of_sale,
            receipt_id=receipt,
            member=_card(card),
            lines=basket,
        )
        earned = supermarket("Earn", earn)
        supermarket("Earn", earn)  # a retry after a timeout is harmless
        pricing = earned.pricing
        print(f"   earned {pricing.points} PTS (bonus {pricing.bonus_points}), per line:")
        for line in pricing.lines:
            note = " (excluded)" if line.excluded else ""
            print(f"     line {line.line_number}: {line.points} PTS{note}")

        print("2. Pay with points at FuelCo: hold 20 PTS, capture 15")
        hold = fuel(
            "AuthorizeRedemption",
            pb.AuthorizeRedemptionRequest(
                request_id=_id("hold"),
                point_of_sale=fuel.point_of_sale,
                receipt_id=_id("fc-receipt"),
                member=_card(card),
                currency_code="PTS",
                amount=20,
                hold_timeout_seconds=600,
            ),
        ).redemption
        print(f"   held {hold.held_amount} PTS as {hold.redemption_id}")
        captured = fuel(
            "CaptureRedemption",
            pb.CaptureRedemptionRequest(request_id=_id("capture"), redemption_id=hold.redemption_id, amount=15),
        ).redemption
        print(f"   captured {captured.captured_amount} PTS, the rest released")

        print("3. Return the coffee (line 2) at FreshMart")
        returned = supermarket(
            "Return",
            pb.ReturnRequest(
                request_id=_id("return"), point_of_sale=supermarket.point_of_sale, receipt_id=receipt, line_numbers=[2]
            ),
        )
        print(
            f"   due {returned.earned_points_due}, reversed {returned.earned_points_reversed},"
            f" shortfall {returned.shortfall_points} PTS"
        )

        print("4. A hotel stay earns HOTELPTS, then 60,000 HOTELPTS convert to AIRMILES")
        hotel(
            "Earn",
            pb.EarnRequest(
                request_id=_id("stay"),
                point_of_sale=hotel.point_of_sale,
                receipt_id=_id("folio"),
                member=_card(card),
                lines=[pb.BasketLine(line_number=1, sku="suite", category="room", quantity=5000, amount=600_000)],
            ),
        )
        quote = hotel(
            "QuoteConversion",
            pb.QuoteConversionRequest(
                member=_card(card), from_currency_code="HOTELPTS", to_currency_code="AIRMILES", from_amount=60_000
            ),
        ).quote
        print(
            f"   quote {quote.quote_id}: {quote.from_amount} HOTELPTS -> {quote.to_amount} AIRMILES"
            f" ({quote.base_to_amount} at {quote.from_units}:{quote.to_units} + {quote.bonus_to_amount} bonus)"
        )
        done = hotel(
            "ExecuteConversion", pb.ExecuteConversionRequest(request_id=_id("convert"), quote_id=quote.quote_id)
        )
        print(f"   executed as {done.conversion.conversion_id}")

        # A partner sees PTS and its own programme currency only, so ask each programme.
        print(f"5. Balances of card {card}, as FreshMart, Grand Hotels and SkyAir see them")
        for pos in (supermarket, hotel, Pos(stub, "skyair", "sa-web", "web-1")):
            print(f"   {pos.partner_id}:")
            _show_balances(pos, card)


def main() -> None:
    address = dial_address("partners")
    transport = settings_or_exit(client_transport)
    try:
        run(address, transport)
    except grpc.RpcError as error:
        info = error_info_of(error)
        reason = f" [{info.reason}]" if info else ""
        print(f"demo failed: {error.code().name}{reason}: {error.details()}", file=sys.stderr)
        if error.code() == grpc.StatusCode.UNAVAILABLE:
            print("is `make run` running?", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
