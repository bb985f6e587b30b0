-- Append-only event store (SQLite). Mirrors migrations/postgres/0001_event_store.sql.

-- Every ledger the ingestor has accepted, with its place in the hash chain.
CREATE TABLE ledgers (
    sequence     INTEGER PRIMARY KEY,          -- u32 ledger sequence
    hash         TEXT    NOT NULL,             -- lowercase hex sha256(XDR(LedgerHeader))
    prev_hash    TEXT    NOT NULL,             -- lowercase hex, hash of ledger sequence-1
    close_time   INTEGER NOT NULL,             -- unix seconds (scpValue.closeTime)
    ingested_at  INTEGER NOT NULL              -- unix milliseconds
);

-- The contract's events. `position` is the gap-free global order, assigned by the single writer.
CREATE TABLE events (
    position     INTEGER PRIMARY KEY,
    event_id     TEXT    NOT NULL UNIQUE,      -- Stellar event id {TOID:019}-{index:010}
    ledger       INTEGER NOT NULL REFERENCES ledgers(sequence),
    tx_hash      TEXT    NOT NULL,
    tx_order     INTEGER NOT NULL,             -- transaction application order (1-based)
    op_index     INTEGER NOT NULL,
    event_index  INTEGER NOT NULL,
    contract_id  TEXT    NOT NULL,
    topic        TEXT    NOT NULL,             -- topic[0] symbol, e.g. `created`
    stream_id    TEXT,                         -- u64 as decimal text, when the event names a stream
    decoded      TEXT    NOT NULL,             -- decoded event as JSON
    topic_xdr    TEXT    NOT NULL,             -- JSON array of base64 ScVal topics
    data_xdr     TEXT    NOT NULL,             -- base64 ScVal data
    function     TEXT                          -- the invoked contract function, when known
);
CREATE INDEX events_by_stream ON events (stream_id, position);
CREATE INDEX events_by_ledger ON events (ledger, position);

-- Where ingestion resumes: the last ledger committed. One row.
CREATE TABLE ingest_cursor (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    ledger       INTEGER NOT NULL,
    hash         TEXT    NOT NULL,
    updated_at   INTEGER NOT NULL
);

-- Every rollback, newest last.
CREATE TABLE reorgs (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    fork_ledger       INTEGER NOT NULL,         -- last ledger kept (common ancestor)
    old_tip           INTEGER NOT NULL,         -- highest ledger before the rollback
    old_hash          TEXT    NOT NULL,         -- removed hash of ledger fork_ledger+1
    new_hash          TEXT,                     -- the hash the source now reports for fork_ledger+1
    depth             INTEGER NOT NULL,         -- ledgers removed
    events_removed    INTEGER NOT NULL,
    first_position    INTEGER,                  -- lowest removed position
    last_position     INTEGER,                  -- highest removed position
    streams_affected  TEXT    NOT NULL,         -- JSON array of stream ids (decimal strings)
    reason            TEXT    NOT NULL,
    epoch             INTEGER NOT NULL,         -- epoch after the rollback
    created_at        INTEGER NOT NULL          -- unix milliseconds
);

-- Store-wide values: `epoch` (incremented by each rollback).
CREATE TABLE store_meta (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
INSERT INTO store_meta (key, value) VALUES ('epoch', '0');

-- Events are append-only: no path may update them.
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;
