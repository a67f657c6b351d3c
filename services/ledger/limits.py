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
PAGE_SIZE_DEFAULT = 100
PAGE_SIZE_MAX = 1_000
WATCH_PAGE_TRANSFERS_MAX = 1_000
WATCH_POLL_SECONDS = 0.2
EXPIRY_SWEEP_SECONDS = 1.0
EXPIRY_SWEEP_HOLDS_MAX = 1_000  # per sweep transaction; the sweeper loops while pages come back full
EXPIRED_HOLDS_PER_BATCH_MAX = 100_000  # expired holds one batch releases on the accounts it touches
EXPIRY_LOOKAHEAD_US = 5_000_000  # a batch that waits longer than this on a lock may release fewer holds
QUEUED_TRANSFERS_MAX = 200_000  # items waiting for a writer; beyond it calls get UNAVAILABLE
WATCH_STREAMS_MAX = 64
