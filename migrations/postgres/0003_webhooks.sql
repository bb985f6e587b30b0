-- Webhooks (PostgreSQL): endpoints, the transactional outbox, delivery attempts. Mirrors
-- migrations/sqlite/0003_webhooks.sql (comments there).

ALTER TABLE ingest_cursor ADD COLUMN safe_ledger BIGINT;

CREATE TABLE webhook_endpoints (
    id                          TEXT    PRIMARY KEY,
    url                         TEXT    NOT NULL,
    description                 TEXT    NOT NULL DEFAULT '',
    event_types                 TEXT    NOT NULL DEFAULT '[]',
    stream_ids                  TEXT    NOT NULL DEFAULT '[]',
    addresses                   TEXT    NOT NULL DEFAULT '[]',
    enabled                     BOOLEAN NOT NULL,
    disabled_reason             TEXT,
    secret                      TEXT    NOT NULL,
    previous_secret             TEXT,
    previous_secret_expires_at  BIGINT,
    failing_since               BIGINT,
    created_at                  BIGINT  NOT NULL,
    updated_at                  BIGINT  NOT NULL
);

CREATE TABLE webhook_deliveries (
    id               BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id      TEXT    NOT NULL UNIQUE,
    endpoint_id      TEXT    NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
    kind             TEXT    NOT NULL,
    event_type       TEXT    NOT NULL,
    event_id         TEXT,
    position         BIGINT,
    ledger           BIGINT  NOT NULL,
    order_key        TEXT,
    payload          TEXT,
    state            TEXT    NOT NULL,
    attempts         BIGINT  NOT NULL DEFAULT 0,
    tries            BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT  NOT NULL,
    lease_owner      TEXT,
    lease_until      BIGINT,
    last_status      BIGINT,
    last_error       TEXT,
    reverted         BOOLEAN NOT NULL DEFAULT FALSE,
    head             BOOLEAN NOT NULL DEFAULT FALSE,
    in_line          BOOLEAN NOT NULL DEFAULT TRUE,
    created_at       BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL,
    delivered_at     BIGINT
);
CREATE INDEX webhook_deliveries_ready ON webhook_deliveries (next_attempt_at, id) WHERE state = 'pending' AND head;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_line ON webhook_deliveries (endpoint_id, order_key, id) WHERE state = 'pending' AND in_line;
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, id);
CREATE INDEX webhook_deliveries_by_position ON webhook_deliveries (position) WHERE position IS NOT NULL;

CREATE TABLE webhook_attempts (
    delivery_pk    BIGINT  NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
    attempt        BIGINT  NOT NULL,
    started_at     BIGINT  NOT NULL,
    duration_ms    BIGINT  NOT NULL,
    status_code    BIGINT,
    error          TEXT,
    response_body  TEXT,
    worker         TEXT    NOT NULL,
    PRIMARY KEY (delivery_pk, attempt)
);
