"""LedgerService servicer: proto in, command, use case, proto out. Nothing else lives here."""

from __future__ import annotations

import asyncio
import itertools

from coalition.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from services.common.db import Database
from services.common.errors import InvalidArgument, Unavailable
from services.common.timeconv import timestamp_from_micros
from services.ledger import accounts, expiry_policies, liability, limits, lots, queries, validation, wire
from services.ledger.authorization import authorize
from services.ledger.batcher import TransferBatcher
from services.ledger.lots import LotRules
from services.ledger.transfers import run_expiry


class LedgerApi(ledger_pb2_grpc.LedgerServiceServicer):
    def __init__(self, database: Database, batcher: TransferBatcher, rules: LotRules) -> None:
        self._database = database
        self._batcher = batcher
        self._rules = rules
        self._watch_streams = 0

    async def RegisterCurrency(self, request, context):
        authorize(context, "RegisterCurrency")
        code, scale, owner_id = validation.currency_from_proto(request.currency)
        row, created = await asyncio.to_thread(accounts.register_currency, self._database, code, scale, owner_id)
        return ledger_pb2.RegisterCurrencyResponse(currency=wire.currency_message(row), created=created)

    async def ListCurrencies(self, request, context):
        authorize(context, "ListCurrencies")
        rows = await asyncio.to_thread(self._database.read, queries.store.list_currencies)
        return ledger_pb2.ListCurrenciesResponse(currencies=[wire.currency_message(row) for row in rows])

    async def CreateAccounts(self, request, context):
        grant = authorize(context, "CreateAccounts")
        validation.check_batch_size(len(request.accounts), "account")
        requested = [validation.account_from_proto(a, i) for i, a in enumerate(request.accounts)]
        for index, account in enumerate(requested):
            denied = grant.account_denial(account, index)
            if denied is not None:
                raise denied
        outcomes = await asyncio.to_thread(accounts.create_accounts, self._database, requested)
        response = ledger_pb2.CreateAccountsResponse()
        for index, outcome in enumerate(outcomes):
            result = response.results.add(index=index, status=int(outcome.status))
            if outcome.failure is not None:
                result.failure_reason = int(outcome.failure)
                result.failure_field = outcome.failure_field
            if outcome.account is not None:
                result.account.CopyFrom(wire.account_message(outcome.account))
        return response

    async def GetAccount(self, request, context):
        authorize(context, "GetAccount")
        validation.check_id(request.account_id, "account_id")
        view = await asyncio.to_thread(queries.get_account, self._database, request.account_id)
        message = wire.account_message(view.account)
        message.balance.CopyFrom(wire.balance_message(view.account, view.balance, view.as_of_us))
        return ledger_pb2.GetAccountResponse(account=message)

    async def ListAccounts(self, request, context):
        authorize(context, "ListAccounts")
        validation.check_length(request.owner_id, "owner_id", limits.OWNER_ID_LENGTH_MAX)
        validation.check_length(request.kind, "kind", limits.ACCOUNT_KIND_LENGTH_MAX)
        page_size = validation.page_size(request.page_size)
        found, token = await asyncio.to_thread(
            queries.list_accounts, self._database, request.owner_id, request.kind, page_size, request.page_token
        )
        return ledger_pb2.ListAccountsResponse(accounts=[wire.account_message(a) for a in found], next_page_token=token)

    async def CreateTransfers(self, request, context):
        grant = authorize(context, "CreateTransfers")
        validation.check_batch_size(len(request.transfers), "transfer")
        commands = [validation.transfer_from_proto(item, index) for index, item in enumerate(request.transfers)]
        outcomes = await self._batcher.submit(commands, grant)
        return ledger_pb2.CreateTransfersResponse(
            results=[wire.transfer_result(index, outcome) for index, outcome in enumerate(outcomes)]
        )

    async def GetTransfers(self, request, context):
        authorize(context, "GetTransfers")
        validation.check_lookup_size(len(request.ids), "ids")
        for transfer_id in request.ids:
            validation.check_length(transfer_id, "ids", limits.ID_LENGTH_MAX + 32)
        found = await asyncio.to_thread(queries.get_transfers, self._database, list(request.ids))
        return ledger_pb2.GetTransfersResponse(transfers=[wire.transfer_message(t) for t in found])

    async def GetBalances(self, request, context):
        authorize(context, "GetBalances")
        validation.check_lookup_size(len(request.account_ids), "account_ids")
        for account_id in request.account_ids:
            validation.check_id(account_id, "account_ids")
        as_of_us = (
            validation.check_timestamp(request.as_of_time, "as_of_time") if request.HasField("as_of_time") else None
        )
        views = await asyncio.to_thread(queries.get_balances, self._database, list(request.account_ids), as_of_us)
        return ledger_pb2.GetBalancesResponse(
            balances=[wire.balance_message(v.account, v.balance, v.as_of_us) for v in views]
        )

    async def ListAccountEntries(self, request, context):
        authorize(context, "ListAccountEntries")
        validation.check_id(request.account_id, "account_id")
        start_us, end_us = _window(request, required=False)
        page_size = validation.page_size(request.page_size)
        views, token = await asyncio.to_thread(
            queries.list_entries, self._database, request.account_id, start_us, end_us, page_size, request.page_token
        )
        response = ledger_pb2.ListAccountEntriesResponse(next_page_token=token)
        for view in views:
            response.entries.add(
                transfer=wire.transfer_message(view.transfer),
                account_id=view.account.id,
                side=int(view.side),
                posted_amount=view.posted_amount,
                pending_change=view.pending_change,
                balance_after=wire.balance_message(view.account, view.balance_after, view.as_of_us),
            )
        return response

    async def GetTrialBalance(self, request, context):
        authorize(context, "GetTrialBalance")
        rows, sequence = await asyncio.to_thread(queries.trial_balance, self._database)
        response = ledger_pb2.GetTrialBalanceResponse(commit_sequence=sequence, balanced=True)
        for code, debits_posted, credits_posted, debits_pending, credits_pending, count in rows:
            balanced = debits_posted == credits_posted and debits_pending == credits_pending
            response.balanced = response.balanced and balanced
            response.currencies.add(
                currency_code=code,
                debits_posted=debits_posted,
                credits_posted=credits_posted,
                debits_pending=debits_pending,
                credits_pending=credits_pending,
                balanced=balanced,
                account_count=count,
            )
        return response

    async def GetActivitySummary(self, request, context):
        authorize(context, "GetActivitySummary")
        start_us, end_us = _window(request, required=True)
        if len(request.account_ids) > limits.LOOKUP_IDS_MAX:
            raise InvalidArgument("INVALID_LOOKUP_SIZE", f"at most {limits.LOOKUP_IDS_MAX} account_ids")
        for index, account_id in enumerate(request.account_ids):
            validation.check_id(account_id, f"account_ids[{index}]")
        validation.check_length(request.owner_id, "owner_id", limits.OWNER_ID_LENGTH_MAX)
        bounds = _reversal_original_time_bounds(request.reversal_original_time_bounds)
        rows, last_sequence = await asyncio.to_thread(
            queries.activity_summary,
            self._database,
            start_us,
            end_us,
            list(request.account_ids),
            request.owner_id,
            request.include_tier_bonus_points,
            request.group_by_store,
            bounds,
        )
        response = ledger_pb2.GetActivitySummaryResponse(last_commit_sequence=last_sequence)
        for row in rows:
            response.lines.add(
                account_id=row.account_id,
                code=row.code,
                currency_code=row.currency_code,
                debits_posted=int(row.debits_posted),
                credits_posted=int(row.credits_posted),
                transfer_count=int(row.transfer_count),
                owner_id=row.owner_id,
                kind=row.kind,
                tier_bonus_points=int(row.tier_bonus_points),
                store_id=getattr(row, "store_id", ""),
                reversal_original_window=int(getattr(row, "reversal_original_window", 0)),
            )
        return response

    async def WatchTransfers(self, request, context):
        authorize(context, "WatchTransfers")
        if request.after_commit_sequence < 0:
            raise InvalidArgument("INVALID_CURSOR", "after_commit_sequence must be >= 0", field="after_commit_sequence")
        pages = self._follow(
            lambda cursor: queries.transfers_after(self._database, cursor, limits.WATCH_PAGE_TRANSFERS_MAX),
            lambda transfer: transfer.sequence,
            request.after_commit_sequence,
            limits.WATCH_PAGE_TRANSFERS_MAX,
            limits.WATCH_POLL_SECONDS,
        )
        async for found in pages:
            yield ledger_pb2.WatchTransfersResponse(transfers=[wire.transfer_message(t) for t in found])

    async def WatchExpiryNotices(self, request, context):
        authorize(context, "WatchExpiryNotices")
        if request.after_notice_sequence < 0:
            raise InvalidArgument("INVALID_CURSOR", "after_notice_sequence must be >= 0", field="after_notice_sequence")
        pages = self._follow(
            lambda cursor: queries.notices_after(self._database, cursor, limits.WATCH_PAGE_NOTICES_MAX),
            lambda notice: notice.notice_sequence,
            request.after_notice_sequence,
            limits.WATCH_PAGE_NOTICES_MAX,
            limits.WATCH_NOTICES_POLL_SECONDS,
        )
        async for found in pages:
            yield ledger_pb2.WatchExpiryNoticesResponse(notices=[wire.expiry_notice_message(n) for n in found])

    async def _follow(self, read_after, cursor_of, cursor: int, page_max: int, poll_seconds: float):
        """Pages of `read_after(cursor)` forever, the cursor moved to `cursor_of` the page's last
        item; a short page means the stream has caught up, so it waits `poll_seconds`."""
        if self._watch_streams >= limits.WATCH_STREAMS_MAX:
            raise Unavailable("TOO_MANY_STREAMS", f"at most {limits.WATCH_STREAMS_MAX} watch streams at once")
        self._watch_streams += 1
        try:
            while True:
                found = await asyncio.to_thread(read_after, cursor)
                if found:
                    cursor = cursor_of(found[-1])
                    yield found
                if len(found) < page_max:
                    await asyncio.sleep(poll_seconds)
        finally:
            self._watch_streams -= 1

    async def SetExpiryPolicy(self, request, context):
        authorize(context, "SetExpiryPolicy")
        policy, given = validation.expiry_policy_from_proto(request.policy)
        recorded, created = await asyncio.to_thread(expiry_policies.set_policy, self._database, policy, given)
        return ledger_pb2.SetExpiryPolicyResponse(policy=wire.expiry_policy_message(recorded), created=created)

    async def ListExpiryPolicies(self, request, context):
        authorize(context, "ListExpiryPolicies")
        validation.check_currency_code(request.currency_code)
        found = await asyncio.to_thread(expiry_policies.list_policies, self._database, request.currency_code)
        return ledger_pb2.ListExpiryPoliciesResponse(policies=[wire.expiry_policy_message(p) for p in found])

    async def ListLots(self, request, context):
        authorize(context, "ListLots")
        validation.check_id(request.account_id, "account_id")
        found = await asyncio.to_thread(
            expiry_policies.wallet_lots, self._database, request.account_id, self._rules.zone
        )
        response = ledger_pb2.ListLotsResponse(
            lots=[wire.lot_message(lot, found.inactivity_expires_us) for lot in found.lots],
            expiring=[ledger_pb2.ExpiringMonth(month=month, amount=amount) for month, amount in found.expiring],
            open_total=sum(lot.open_amount for lot in found.lots),
            exempt=found.exempt,
        )
        if found.inactivity_expires_us is not None:
            response.inactivity_expire_time.CopyFrom(timestamp_from_micros(found.inactivity_expires_us))
        return response

    async def RunExpiry(self, request, context):
        authorize(context, "RunExpiry")
        as_of_us = (
            validation.check_timestamp(request.as_of_time, "as_of_time") if request.HasField("as_of_time") else None
        )
        totals = await asyncio.to_thread(run_expiry, self._database, as_of_us, self._rules)
        return ledger_pb2.RunExpiryResponse(
            transfers_posted=totals.posted,
            amount_expired=totals.amount_expired,
            wallets_deferred=totals.deferred,
            notices_recorded=totals.notices_recorded,
        )

    async def ListExpiringSoon(self, request, context):
        authorize(context, "ListExpiringSoon")
        validation.check_currency_code(request.currency_code)
        if not 0 <= request.within_days <= 365:
            raise InvalidArgument("INVALID_WITHIN_DAYS", "within_days must be 0..365 (0: 30)", field="within_days")
        page_size = validation.page_size(request.page_size)
        found, token = await asyncio.to_thread(
            expiry_policies.expiring_soon,
            self._database,
            request.currency_code,
            request.within_days or lots.NOTICE_DAYS_DEFAULT,
            page_size,
            request.page_token,
            self._rules.zone,
        )
        return ledger_pb2.ListExpiringSoonResponse(
            wallets=[
                ledger_pb2.ExpiringWallet(
                    account_id=w.account_id,
                    owner_id=w.owner_id,
                    amount=w.amount,
                    first_expire_time=timestamp_from_micros(w.first_expires_us),
                )
                for w in found
            ],
            next_page_token=token,
        )

    async def SetExpiryExemption(self, request, context):
        authorize(context, "SetExpiryExemption")
        if not 1 <= len(request.owner_id) <= limits.OWNER_ID_LENGTH_MAX:
            raise InvalidArgument(
                "INVALID_OWNER_ID", f"owner_id must be 1..{limits.OWNER_ID_LENGTH_MAX} characters", field="owner_id"
            )
        exempt = await asyncio.to_thread(
            expiry_policies.set_exemption, self._database, request.owner_id, request.exempt
        )
        return ledger_pb2.SetExpiryExemptionResponse(owner_id=request.owner_id, exempt=exempt)

    async def GetBreakageSummary(self, request, context):
        authorize(context, "GetBreakageSummary")
        start_us, end_us = _window(request, required=True)
        lines, last_sequence = await asyncio.to_thread(liability.breakage_summary, self._database, start_us, end_us)
        return wire.breakage_summary_message(lines, last_sequence)

    async def GetOutstandingSummary(self, request, context):
        authorize(context, "GetOutstandingSummary")
        as_of_us = (
            validation.check_timestamp(request.as_of_time, "as_of_time") if request.HasField("as_of_time") else None
        )
        if request.currency_code:
            validation.check_currency_code(request.currency_code)
        summary = await asyncio.to_thread(
            liability.outstanding_summary, self._database, as_of_us, request.currency_code, self._rules.zone
        )
        return wire.outstanding_summary_message(summary)


def _window(request, required: bool) -> tuple[int | None, int | None]:
    has_start, has_end = request.HasField("start_time"), request.HasField("end_time")
    if required and not (has_start and has_end):
        raise InvalidArgument("MISSING_FIELD", "start_time and end_time are required", field="start_time")
    start_us = validation.check_timestamp(request.start_time, "start_time") if has_start else None
    end_us = validation.check_timestamp(request.end_time, "end_time") if has_end else None
    if start_us is not None and end_us is not None and end_us <= start_us:
        raise InvalidArgument("INVALID_TIME_RANGE", "end_time must be after start_time", field="end_time")
    return start_us, end_us


def _reversal_original_time_bounds(timestamps) -> list[int]:
    """GetActivitySummary's bounds: at most REVERSAL_ORIGINAL_TIME_BOUNDS_MAX, strictly ascending."""
    if len(timestamps) > limits.REVERSAL_ORIGINAL_TIME_BOUNDS_MAX:
        raise InvalidArgument(
            "INVALID_LOOKUP_SIZE",
            f"at most {limits.REVERSAL_ORIGINAL_TIME_BOUNDS_MAX} reversal_original_time_bounds",
            field="reversal_original_time_bounds",
        )
    bounds = [
        validation.check_timestamp(timestamp, f"reversal_original_time_bounds[{index}]")
        for index, timestamp in enumerate(timestamps)
    ]
    if any(later <= earlier for earlier, later in itertools.pairwise(bounds)):
        raise InvalidArgument(
            "INVALID_TIME_BOUNDS",
            "reversal_original_time_bounds must be strictly ascending",
            field="reversal_original_time_bounds",
        )
    return bounds
