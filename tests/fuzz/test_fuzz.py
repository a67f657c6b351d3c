"""Every RPC of every service, found from the descriptors, sent random, mutated and undecodable input.

A short run here (COALITION_FUZZ_REQUESTS_PER_SERVICE, default 200); `make fuzz` runs 10,000 per
service per backend and prints the status-code table.
"""

from __future__ import annotations

import os

import pytest

from tests.fuzz.harness import SERVICE_DESCRIPTORS, run, running_stack


def requests_per_service() -> int:
    return int(os.environ.get("COALITION_FUZZ_REQUESTS_PER_SERVICE", "200"))


def test_every_rpc_is_enumerated_from_the_descriptors():
    methods = {service.name: len(service.methods) for service in SERVICE_DESCRIPTORS}
    assert set(methods) == {"LedgerService", "PartnersService", "SettlementService"}
    assert all(count > 5 for count in methods.values()), methods


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_hostile_requests_never_fail_internally_nor_write_when_refused(backend, tmp_path):
    count = max(requests_per_service(), max(len(s.methods) for s in SERVICE_DESCRIPTORS))
    seed = int(os.environ.get("COALITION_FUZZ_SEED", "7"))
    with running_stack(backend, tmp_path) as stack:
        report = run(stack, count, seed)
    print(f"\nfuzz {backend}: {report.requests} requests, seed {seed}\n{report.table()}")
    for finding in report.findings[:40]:
        print(finding)
    assert not report.findings, f"{len(report.findings)} findings; first: {report.findings[0]}"
