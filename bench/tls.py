"""Bench servers and clients speak mutual TLS, as production does, with a CA made for the run.

Baselines too: the empty handlers serve the same mutual TLS, so every ratio compares like with like.
"""

from __future__ import annotations

import os
import tempfile

import grpc

from services.common.tls import OPERATOR, Transport


def use_development_pki() -> None:
    """Development mode and a fresh CA for every process this bench starts (they inherit the environment)."""
    os.environ["COALITION_ENV"] = "development"
    os.environ.pop("COALITION_DEV_PLAINTEXT", None)
    if not os.environ.get("COALITION_DEV_PKI_DIR"):
        os.environ["COALITION_DEV_PKI_DIR"] = tempfile.mkdtemp(prefix="coalition-bench-pki-")


def aio_channel(address: str, identity: str = OPERATOR, options=()) -> grpc.aio.Channel:
    return Transport.development(identity).aio_channel(address, options)
