-- Webhooks (SQLite): endpoints, the transactional outbox, delivery attempts. Mirrors
-- migrations/postgres/0003_webhooks.sql.

-- The safe ledger (source tip - FINALITY_DEPTH) as the ingestor last saw it, committed with the
-- cursor: a dispatcher in any process sends a delivery only once its ledger is at or below it.
ALTER TABLE ingest_cursor ADD COLUMN safe_ledger INTEGER;

-- Registered receivers. The secret is `whsec_<base64>`; during a rotation the previous one is kept
-- (and signed with too) until previous_secret_expires_at.
CREATE TABLE webhook_endpoints (
    id                          TEXT    PRIMARY KEY,           -- ep_<32 hex>
    url                         TEXT    NOT NULL,
    description                 TEXT    NOT NULL DEFAULT '',
    event_types                 TEXT    NOT NULL DEFAULT '[]', -- JSON array; empty = every type
    stream_ids                  TEXT    NOT NULL DEFAULT '[]', -- JSON array of decimal strings; empty = all
    addresses                   TEXT    NOT NULL DEFAULT '[]', -- JSON array of strkeys (sender or recipient); empty = all
    enabled                     BOOLEAN NOT NULL,
    disabled_reason             TEXT,
    secret                      TEXT    NOT NULL,
    previous_secret             TEXT,
    previous_secret_expires_at  INTEGER,                       -- unix ms
    failing_since               INTEGER,                       -- unix ms of the first failure of the current run
    created_at                  INTEGER NOT NULL,
    updated_at                  INTEGER NOT NULL
);

-- The outbox: one row per (event, matching endpoint), written in the transaction that appends
-- the event; plus stream.reverted, replay and ping rows. Rows of one (endpoint, order_key) form a
-- line that goes out in id order: only its first pending row has `head` set, and only heads are
-- claimed, so a claim costs what it takes, not the backlog. Every write that adds, removes or
-- finishes rows of a line sets `head` on the line's first pending row again.
CREATE TABLE webhook_deliveries (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id      TEXT    NOT NULL UNIQUE,                  -- dlv_<32 hex>: x-fluxora-delivery-id, webhook-id
    endpoint_id      TEXT    NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
    kind             TEXT    NOT NULL,                         -- event | replay | reverted | ping
    event_type       TEXT    NOT NULL,                         -- stream.created, …, stream.reverted, webhook.ping
    event_id         TEXT,
    position         INTEGER,
    ledger           INTEGER NOT NULL,                         -- 0: not gated by the safe ledger
    order_key        TEXT,                                     -- the stream key; NULL: unordered
    payload          TEXT,                                     -- JSON kept with the row (reverted, ping)
    state            TEXT    NOT NULL,                         -- pending | delivered | dead
    attempts         INTEGER NOT NULL DEFAULT 0,               -- attempts made in all
    tries            INTEGER NOT NULL DEFAULT 0,               -- attempts since enqueue or manual retry
    next_attempt_at  INTEGER NOT NULL,                         -- unix ms
    lease_owner      TEXT,
    lease_until      INTEGER,                                  -- unix ms
    last_status      INTEGER,
    last_error       TEXT,
    reverted         BOOLEAN NOT NULL DEFAULT FALSE,           -- its event was rolled back after delivery
    head             BOOLEAN NOT NULL DEFAULT FALSE,           -- first pending row of its line (claimable)
    in_line          BOOLEAN NOT NULL DEFAULT TRUE,            -- FALSE: out of line (a dead row retried by hand)
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    delivered_at     INTEGER
);
CREATE INDEX webhook_deliveries_ready ON webhook_deliveries (next_attempt_at, id) WHERE state = 'pending' AND head;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_line ON webhook_deliveries (endpoint_id, order_key, id) WHERE state = 'pending' AND in_line;
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, id);
CREATE INDEX webhook_deliveries_by_position ON webhook_deliveries (position) WHERE position IS NOT NULL;

-- Every attempt of a delivery.
CREATE TABLE webhook_attempts (
    delivery_pk    INTEGER NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
    attempt        INTEGER NOT NULL,                           -- 1, 2, …
    started_at     INTEGER NOT NULL,                           -- unix ms
    duration_ms    INTEGER NOT NULL,
    status_code    INTEGER,
    error          TEXT,
    response_body  TEXT,                                       -- first bytes of the response
    worker         TEXT    NOT NULL,
    PRIMARY KEY (delivery_pk, attempt)
);
