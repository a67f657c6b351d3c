"""The fuzz run: the three real services on one backend, seeded, then every RPC sent hostile input.

Checks, per call: never INTERNAL or UNKNOWN; a refusal by our code carries an ErrorInfo reason; a
refused call changes no table of any service's database (every table snapshotted before and after);
and every service's health stays SERVING.
"""

from __future__ import annotations

import collections
import dataclasses
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
from google.protobuf import descriptor as pd
from grpc_health.v1 import health_pb2, health_pb2_grpc

from coalition.ledger.v1 import ledger_pb2
from coalition.partners.v1 import partners_pb2 as ppb
from coalition.settlement.v1 import settlement_pb2 as spb
from services.common.errors import error_info_of
from tests.fuzz.generator import Pools, RequestGenerator, page_tokens
from tests.support.databases import new_database_url
from tests.support.servers import ThreadedServer, start_ledger_thread
from tests.support.snapshot import snapshot
from tests.support.tls import channel as tls_channel

ADMIN_KEY = "fuzz-admin-key"
SERVICE_DESCRIPTORS = tuple(
    module.DESCRIPTOR.services_by_name[name]
    for module, name in (
        (ledger_pb2, "LedgerService"),
        (ppb, "PartnersService"),
        (spb, "SettlementService"),
    )
)
# Codes our handlers answer for a caller's mistake: each must say why in an ErrorInfo reason.
REASONED_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.OUT_OF_RANGE,
}
FORBIDDEN_CODES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
STREAM_READ_SECONDS = 0.3
# Mostly calls that pass authentication, so the fuzz reaches validation and the use cases behind it.
CREDENTIALS = ("admin", "partner", "none", "bogus")
CREDENTIAL_WEIGHTS = (40, 35, 15, 10)
UNARY_DEADLINE_SECONDS = 20


@dataclasses.dataclass
class Finding:
    service: str
    method: str
    shape: str
    credentials: str
    problem: str
    request_hex: str


@dataclasses.dataclass
class FuzzReport:
    codes: dict[str, collections.Counter] = dataclasses.field(default_factory=dict)
    findings: list[Finding] = dataclasses.field(default_factory=list)
    requests: int = 0

    def count(self, service: str, code: grpc.StatusCode) -> None:
        self.codes.setdefault(service, collections.Counter())[code.name] += 1

    def table(self) -> str:
        names = sorted({name for counter in self.codes.values() for name in counter})
        header = ["service", *names]
        rows = [[service, *(str(counter.get(name, 0)) for name in names)] for service, counter in self.codes.items()]
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        table = [header, *rows]
        lines = ("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in table)
        return "\n".join(lines)


class Stack:
    """Ledger, partners and settlement on one backend, each with its own database."""

    def __init__(self, backend: str, directory) -> None:
        from services.partners import server as partners_server
        from services.partners.server import PartnersSettings
        from services.partners.server import start as start_partners
        from services.settlement.server import SettlementSettings
        from services.settlement.server import start as start_settlement

        self._cleanups = []
        urls = {}
        for name in ("ledger", "partners", "settlement"):
            urls[name], cleanup = new_database_url(backend, directory, name)
            self._cleanups.append(cleanup)
        self.database_urls = urls
        self.ledger = start_ledger_thread(urls["ledger"])
        partners_settings = dataclasses.replace(
            PartnersSettings.from_env(),
            database_url=urls["partners"],
            listen_address="127.0.0.1:0",
            ledger_address=self.ledger.address,
            admin_api_key=ADMIN_KEY,
            grpc_grace_period_seconds=1,
            # No background pass during the run: a refused call must be the only thing that could write.
            pending_earn_recovery_interval_seconds=3_600,
        )
        self.partners = ThreadedServer(lambda: start_partners(partners_settings))
        self.partners_app = partners_server._current
        settlement_settings = dataclasses.replace(
            SettlementSettings.from_env(),
            database_url=urls["settlement"],
            listen_address="127.0.0.1:0",
            ledger_address=self.ledger.address,
            admin_api_key=ADMIN_KEY,
            close_delay_seconds=0,
            audit_lag_seconds=0,
            grpc_grace_period_seconds=1,
        )
        self.settlement = ThreadedServer(lambda: start_settlement(settlement_settings))
        self.addresses = {
            "coalition.ledger.v1.LedgerService": self.ledger.address,
            "coalition.partners.v1.PartnersService": self.partners.address,
            "coalition.settlement.v1.SettlementService": self.settlement.address,
        }
        self.channels = {name: tls_channel(address) for name, address in self.addresses.items()}

    def snapshot(self) -> dict:
        # Earns posted by calls already answered are marked posted shortly after
        # (services/partners/deferred_marks.py): written now, so they are not taken for a later call's write.
        self.partners.run(self.partners_app.posted_earns.flush())
        return {name: snapshot(url) for name, url in self.database_urls.items()}

    def unhealthy(self) -> list[str]:
        bad = []
        for name, channel in self.channels.items():
            try:
                status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
            except grpc.RpcError as error:
                bad.append(f"{name}: health check failed with {error.code().name}")
                continue
            if status != health_pb2.HealthCheckResponse.SERVING:
                bad.append(f"{name}: health {health_pb2.HealthCheckResponse.ServingStatus.Name(status)}")
        return bad

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()
        for server in (self.settlement, self.partners, self.ledger):
            server.stop()
        for cleanup in self._cleanups:
            cleanup()


@contextmanager
def running_stack(backend: str, directory) -> Iterator[Stack]:
    stack = Stack(backend, directory)
    try:
        yield stack
    finally:
        stack.close()


def seed(stack: Stack) -> tuple[Pools, dict[str, str]]:
    """A small coalition through the public APIs; returns the values fuzzed fields draw from, and the keys."""
    from tests.partners.conftest import Coalition, MovableClock

    coalition = Coalition(stack.partners.address, MovableClock(), stack.ledger.address)
    coalition.call = _with_key(coalition.call)
    retailer = coalition.register_partner()
    hotel = coalition.register_partner(kind=ppb.PARTNER_KIND_HOTEL, currency="FZHOTEL", base_rate="10")
    members = [coalition.enroll() for _ in range(2)]
    for member_id, _card in members:
        coalition.earn(retailer, member_id, [10_000, 2_500])
        coalition.earn(hotel, member_id, [5_000])
    hold = coalition.call(
        "AuthorizeRedemption",
        ppb.AuthorizeRedemptionRequest(
            request_id=f"fz-hold-{uuid.uuid4().hex[:8]}",
            point_of_sale=retailer.pos(),
            receipt_id="fz-r-hold",
            member=ppb.MemberIdentity(member_id=members[0][0]),
            currency_code="PTS",
            amount=10,
            hold_timeout_seconds=3_600,
        ),
        retailer.key,
    ).redemption
    coalition.close()
    now = int(time.time())
    pools = Pools(now_seconds=now)
    partner_ids = [retailer.partner_id, hotel.partner_id]
    member_ids = [member_id for member_id, _ in members]
    pools.add("partner_id", *partner_ids)
    pools.add("owner_id", *partner_ids, *member_ids)
    pools.add("member_id", *member_ids)
    pools.add("store_id", retailer.store_id, hotel.store_id)
    pools.add("terminal_id", retailer.terminal_id)
    pools.add("currency_code", "PTS", "FZHOTEL", "EUR")
    pools.add("code", "PTS", "FZHOTEL", "EUR")
    pools.add("redemption_id", hold.redemption_id)
    pools.add("key_id", retailer.key_id, hotel.key_id)
    pools.add("value", *(card for _, card in members))
    pools.add("period_id", time.strftime("%Y-%m", time.gmtime(now)), "2026-01", "2025-12")
    pools.add("page_token", *page_tokens())
    pools.add(
        "account_id",
        *(f"wallet:PTS:{member_id}" for member_id in member_ids),
        *(f"issuance:PTS:{partner_id}" for partner_id in partner_ids),
        f"redemption:PTS:{retailer.partner_id}",
        "breakage:PTS",
    )
    pools.add("request_id", *(f"fz-{index}" for index in range(5)))
    for name in ("hold_timeout_seconds", "timeout_seconds"):
        # Only timeouts that are refused or outlive the run: an expiring hold would write on its own.
        pools.add(name, 3_600, 0, -1, 3_601, 2**31 - 1)
    for name in ("issue_price_per_point", "reimbursement_price_per_point", "price_per_unit", "base_rate"):
        pools.add(name, "0.0100", "0", "1000.0000000001", "1e-13")
    keys = {"none": "", "admin": ADMIN_KEY, "partner": retailer.key, "bogus": "not-a-key"}
    return pools, keys


def _with_key(call):
    from tests.partners import conftest

    def call_with_fuzz_admin(method, request, key=conftest.ADMIN_KEY, timeout=10):
        return call(method, request, ADMIN_KEY if key == conftest.ADMIN_KEY else key, timeout)

    return call_with_fuzz_admin


def run(stack: Stack, requests_per_service: int, seed_value: int = 7) -> FuzzReport:
    pools, keys = seed(stack)
    generator = RequestGenerator(seed_value, pools)
    report = FuzzReport()
    before = stack.snapshot()
    for round_index in range(requests_per_service):
        for service in SERVICE_DESCRIPTORS:
            method = service.methods[round_index % len(service.methods)]
            shape, body = generator.request_bytes(method.input_type)
            credentials = generator.random.choices(CREDENTIALS, CREDENTIAL_WEIGHTS)[0]
            code, problem = _call(stack.channels[service.full_name], service, method, body, keys[credentials])
            report.requests += 1
            report.count(service.name, code)
            after = stack.snapshot()
            if not problem and code not in (grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED):
                changed = _changed_tables(before, after)
                problem = f"refused with {code.name} but changed {changed}" if changed else ""
            if problem:
                finding = Finding(service.name, method.name, shape, credentials, problem, body.hex()[:400])
                report.findings.append(finding)
            before = after
        if round_index % 25 == 24:
            report.findings += [Finding("-", "-", "-", "-", problem, "") for problem in stack.unhealthy()]
    report.findings += [Finding("-", "-", "-", "-", problem, "") for problem in stack.unhealthy()]
    return report


def _call(channel, service: pd.ServiceDescriptor, method: pd.MethodDescriptor, body: bytes, key: str):
    path = f"/{service.full_name}/{method.name}"
    metadata = (("authorization", f"Bearer {key}"),) if key else ()
    try:
        if method.server_streaming:
            stream = channel.unary_stream(path)(body, metadata=metadata, timeout=STREAM_READ_SECONDS)
            for _ in zip(range(3), stream, strict=False):
                pass
            stream.cancel()
        else:
            channel.unary_unary(path)(body, metadata=metadata, timeout=UNARY_DEADLINE_SECONDS)
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as error:
        code = error.code()
        if method.server_streaming and code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return grpc.StatusCode.OK, ""  # a stream that is still open when we stop reading is healthy
        if code == grpc.StatusCode.CANCELLED and method.server_streaming:
            return grpc.StatusCode.OK, ""
        if code in FORBIDDEN_CODES:
            return code, f"{code.name}: {error.details()}"
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return code, f"DEADLINE_EXCEEDED after {UNARY_DEADLINE_SECONDS} s"
        if code in REASONED_CODES and not _reason(error):
            return code, f"{code.name} without an ErrorInfo reason: {error.details()}"
        return code, ""


def _reason(error: grpc.RpcError) -> str:
    try:
        info = error_info_of(error)
    except Exception:  # a malformed status detail is itself a finding
        return ""
    return info.reason if info else ""


def _changed_tables(before: dict, after: dict) -> list[str]:
    changed = []
    for service, tables in after.items():
        old = before.get(service, {})
        for table in sorted(set(tables) | set(old)):
            if tables.get(table) != old.get(table):
                changed.append(f"{service}.{table}")
    return changed
