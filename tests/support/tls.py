"""Clients of the test servers: mutual TLS with the session's development CA, as production dials.

tests/conftest.py points COALITION_DEV_PKI_DIR at a CA made for the test session, so every
server a test starts (threads and processes alike) serves mutual TLS with it.
"""

from __future__ import annotations

import grpc

from services.common.tls import OPERATOR, Transport


def transport(identity: str = OPERATOR) -> Transport:
    return Transport.development(identity)


def channel(address: str, identity: str = OPERATOR, options=()) -> grpc.Channel:
    return transport(identity).channel(address, options)


def aio_channel(address: str, identity: str = OPERATOR, options=()) -> grpc.aio.Channel:
    return transport(identity).aio_channel(address, options)
