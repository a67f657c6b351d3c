"""Every limit of the ledger in one place (TIGER_STYLE: put a limit on everything)."""

BATCH_ITEMS_MAX = 8_189
AMOUNT_MAX = 10**15  # minor units per transfer; keeps sums of a day's traffic far inside int64
BALANCE_MAX = 2**63 - 1
ID_LENGTH_MAX = 128
OWNER_ID_LENGTH_MAX = 128
ACCOUNT_KIND_LENGTH_MAX = 64
METADATA_LENGTH_MAX = 128
CURRENCY_CODE_LENGTH_MAX = 16
CURRENCY_SCALE_MAX = 6
HOLD_TIMEOUT_SECONDS_MAX = 30 * 24 * 3600
LOOKUP_IDS_MAX = 1_000
# Bounds one GetActivitySummary splits reversals by (each a branch of a CASE tree; 16 bytes on the
# wire, within the default request size next to 1,000 account ids).
REVERSAL_ORIGINAL_TIME_BOUNDS_MAX = 1_000
PAGE_SIZE_DEFAULT = 100
PAGE_SIZE_MAX = 1_000
WATCH_PAGE_TRANSFERS_MAX = 1_000
WATCH_POLL_SECONDS = 0.2
WATCH_PAGE_NOTICES_MAX = 1_000  # expiry notices per WatchExpiryNotices message
# Notices are recorded by the expiry pass (every LOT_EXPIRY_INTERVAL_SECONDS and on RunExpiry):
# an idle notice stream polls once a second, not five times like the journal's.
WATCH_NOTICES_POLL_SECONDS = 1.0
EXPIRY_SWEEP_SECONDS = 1.0
EXPIRY_SWEEP_HOLDS_MAX = 1_000  # per sweep transaction; the sweeper loops while pages come back full
EXPIRY_RUN_WALLETS_MAX = 500  # wallets one lot-expiry transaction looks at; a run loops while pages are full
LOT_EXPIRY_INTERVAL_SECONDS = 60  # how often the ledger expires due lots in the background
# The expiry pass records a lot's notice up to this long before its notice period begins, so a
# pass that comes on time never pushes the expiry date back (expire_time is notice + period).
NOTICE_LOOKAHEAD_US = 2 * LOT_EXPIRY_INTERVAL_SECONDS * 1_000_000
EXPIRED_HOLDS_PER_BATCH_MAX = 100_000  # expired holds one batch releases on the accounts it touches
EXPIRY_LOOKAHEAD_US = 5_000_000  # a batch that waits longer than this on a lock may release fewer holds
QUEUED_TRANSFERS_MAX = 200_000  # items waiting for a writer; beyond it calls get UNAVAILABLE
WATCH_STREAMS_MAX = 64  # WatchTransfers and WatchExpiryNotices streams together
# Calendar months one GetOutstandingSummary groups expiries into (each a branch of a CASE tree):
# policies last at most 600 months, so this allows 150 years of history before a refusal.
OUTSTANDING_MONTHS_MAX = 2_400

# Request sizes, computed from the limits above; the wire cost of a field is its tag (1 byte),
# a length prefix (1-3 bytes) and the value. Text is counted at 4 UTF-8 bytes per character.
# A transfer: 5 ids (id, debit, credit, pending, reversed) at 1 + 2 + 128 = 655; currency
# 1 + 1 + 16 = 18; amount, timeout, kind and code at 1 + 10 = 44; linked 2; metadata of 5 texts
# at 1 + 2 + 128 * 4 plus its own 3 = 2,578; its place in the batch 3. Sum: 3,300.
TRANSFER_INPUT_BYTES_MAX = 5 * (3 + ID_LENGTH_MAX) + (2 + CURRENCY_CODE_LENGTH_MAX) + 4 * 11 + 2
TRANSFER_INPUT_BYTES_MAX += 5 * (3 + 4 * METADATA_LENGTH_MAX) + 3 + 3
# An account: id 131, currency 18, side and overdraft 13, owner 1 + 2 + 128 * 4, kind
# 1 + 2 + 64 * 4, create_time and balance (ignored, but a client may echo an account) 256: 1,192.
ACCOUNT_INPUT_BYTES_MAX = (3 + ID_LENGTH_MAX) + (2 + CURRENCY_CODE_LENGTH_MAX) + 13
ACCOUNT_INPUT_BYTES_MAX += (3 + 4 * OWNER_ID_LENGTH_MAX) + (3 + 4 * ACCOUNT_KIND_LENGTH_MAX) + 256
# 8,189 * 3,300 = 27,023,700 bytes (25.8 MiB): the largest request of the ledger.
CREATE_TRANSFERS_REQUEST_BYTES_MAX = BATCH_ITEMS_MAX * TRANSFER_INPUT_BYTES_MAX
CREATE_ACCOUNTS_REQUEST_BYTES_MAX = BATCH_ITEMS_MAX * ACCOUNT_INPUT_BYTES_MAX  # 9,761,288
# Every other request: at most 1,000 ids of up to 160 characters (GetTransfers) plus 1 KiB.
REQUEST_BYTES_MAX_DEFAULT = LOOKUP_IDS_MAX * (3 + ID_LENGTH_MAX + 32) + 1_024  # 164,024
REQUEST_BYTES_MAX_BY_METHOD = {
    "CreateTransfers": CREATE_TRANSFERS_REQUEST_BYTES_MAX,
    "CreateAccounts": CREATE_ACCOUNTS_REQUEST_BYTES_MAX,
}
STREAMS_PER_PEER_HOST_MAX = 16  # streams (WatchTransfers, WatchExpiryNotices) one client host may hold
