"""Issue 7 point 10: unknown method names are answered UNIMPLEMENTED and never remembered.

Before: the handler-wrapping cache kept an entry per name anyone sent (10,000 bogus 4 KB names
added 44 MB to the ledger, never freed).
"""

from __future__ import annotations

import grpc

from tests.fuzz.harness import SERVICE_DESCRIPTORS

BOGUS_NAMES_PER_SERVICE = 300


def _cached_names(server) -> int:
    return sum(len(handler.wrapped) for handler in server.running.instrumented.generic_handlers)


def test_bogus_method_names_are_unimplemented_and_the_handler_cache_stays_bounded(stack):
    servers = {
        "LedgerService": stack.ledger,
        "PartnersService": stack.partners,
        "SettlementService": stack.settlement,
    }
    for service in SERVICE_DESCRIPTORS:
        channel = stack.channels[service.full_name]
        codes = set()
        for number in range(BOGUS_NAMES_PER_SERVICE):
            bogus = f"/{service.full_name}/Bogus{number:04d}{'x' * 1_000}"
            try:
                channel.unary_unary(bogus)(b"", timeout=10)
            except grpc.RpcError as error:
                codes.add(error.code())
        assert codes == {grpc.StatusCode.UNIMPLEMENTED}
        server = servers[service.name]
        assert server.running.instrumented.generic_handlers, "the service's generic handler is instrumented"
        assert _cached_names(server) <= len(service.methods), _cached_names(server)
