-- Append-only event store (PostgreSQL). Mirrors migrations/sqlite/0001_event_store.sql.

CREATE TABLE ledgers (
    sequence     BIGINT  PRIMARY KEY CHECK (sequence >= 0 AND sequence <= 4294967295),
    hash         TEXT    NOT NULL,
    prev_hash    TEXT    NOT NULL,
    close_time   BIGINT  NOT NULL,
    ingested_at  BIGINT  NOT NULL
);

-- `position` is assigned by the writer under an advisory lock (max + 1), so it is gap-free even
-- when a batch fails; an identity column would leave holes on rolled-back transactions.
CREATE TABLE events (
    position     BIGINT  PRIMARY KEY,
    event_id     TEXT    NOT NULL UNIQUE,
    ledger       BIGINT  NOT NULL REFERENCES ledgers(sequence),
    tx_hash      TEXT    NOT NULL,
    tx_order     BIGINT  NOT NULL,
    op_index     BIGINT  NOT NULL,
    event_index  BIGINT  NOT NULL,
    contract_id  TEXT    NOT NULL,
    topic        TEXT    NOT NULL,
    stream_id    TEXT,
    decoded      TEXT    NOT NULL,
    topic_xdr    TEXT    NOT NULL,
    data_xdr     TEXT    NOT NULL,
    function     TEXT
);
CREATE INDEX events_by_stream ON events (stream_id, position);
CREATE INDEX events_by_ledger ON events (ledger, position);

CREATE TABLE ingest_cursor (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    ledger       BIGINT  NOT NULL,
    hash         TEXT    NOT NULL,
    updated_at   BIGINT  NOT NULL
);

CREATE TABLE reorgs (
    id                BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    fork_ledger       BIGINT  NOT NULL,
    old_tip           BIGINT  NOT NULL,
    old_hash          TEXT    NOT NULL,
    new_hash          TEXT,
    depth             BIGINT  NOT NULL,
    events_removed    BIGINT  NOT NULL,
    first_position    BIGINT,
    last_position     BIGINT,
    streams_affected  TEXT    NOT NULL,
    reason            TEXT    NOT NULL,
    epoch             BIGINT  NOT NULL,
    created_at        BIGINT  NOT NULL
);

CREATE TABLE store_meta (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
INSERT INTO store_meta (key, value) VALUES ('epoch', '0');

CREATE FUNCTION events_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION events_append_only();
