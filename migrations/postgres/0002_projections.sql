-- Stream projections (PostgreSQL). Mirrors migrations/sqlite/0002_projections.sql.
-- Written by the ingestor in the same transaction as the events they fold; removed above a fork
-- ledger by a rollback, which then restores each affected stream's latest remaining version.

-- The post-transaction `Stream` storage entries seen in transaction metas: the facts the events
-- do not carry (kind, irrevocable, witness, …) and the contract's own state to verify against.
-- Append-only like events; kept so that a rebuild sees exactly what live ingestion saw.
CREATE TABLE stream_entries (
    ledger      BIGINT  NOT NULL REFERENCES ledgers(sequence),
    tx_order    BIGINT  NOT NULL,             -- transaction application order (1-based)
    seq         BIGINT  NOT NULL,             -- order within the transaction's meta
    stream_id   TEXT    NOT NULL,             -- u64 as decimal text
    tx_hash     TEXT    NOT NULL,
    value_xdr   TEXT,                         -- base64 ScVal of the entry; NULL = removed
    PRIMARY KEY (ledger, tx_order, seq)
);

-- The state of a stream after every ledger that changed it: the history time travel reads.
CREATE TABLE stream_versions (
    stream_key  TEXT    NOT NULL,             -- u64 id zero-padded to 20 digits (sorts numerically)
    ledger      BIGINT  NOT NULL,
    sender      TEXT    NOT NULL,
    recipient   TEXT    NOT NULL,
    status      TEXT    NOT NULL,             -- active|paused|completed|cancelled|closed
    verified    BOOLEAN NOT NULL,             -- true when the last storage comparison matched
    state       TEXT    NOT NULL,             -- JSON of the folded stream (amounts as strings)
    PRIMARY KEY (stream_key, ledger)
);
CREATE INDEX stream_versions_by_ledger ON stream_versions (ledger);

-- The current state of every stream: the latest row of stream_versions per stream.
CREATE TABLE streams (
    stream_key  TEXT    PRIMARY KEY,
    ledger      BIGINT  NOT NULL,             -- ledger of the version (updated ledger)
    sender      TEXT    NOT NULL,
    recipient   TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    verified    BOOLEAN NOT NULL,
    state       TEXT    NOT NULL
);
CREATE INDEX streams_by_sender ON streams (sender, stream_key);
CREATE INDEX streams_by_recipient ON streams (recipient, stream_key);
CREATE INDEX streams_by_status ON streams (status, stream_key);

-- Contract-wide flags (global/creation pause, admin) after every ledger that changed them.
CREATE TABLE contract_flags (
    ledger      BIGINT  PRIMARY KEY,
    state       TEXT    NOT NULL              -- JSON
);
