//! Schema migrations, applied in order at start-up. Each migration runs once, in its own
//! transaction, and `PRAGMA user_version` records how far the file has come. Never edit a
//! migration that has shipped: add a new one.

use crate::{StoreError, StoreResult};
use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE queues (
    id                 INTEGER PRIMARY KEY,
    name               TEXT NOT NULL UNIQUE,
    resource           TEXT NOT NULL,
    config             TEXT NOT NULL,
    template_variables TEXT NOT NULL,
    prioritization     INTEGER NOT NULL,
    max_attempts       INTEGER NOT NULL,
    requeue_lost       INTEGER NOT NULL,
    created_at_ms      INTEGER NOT NULL
);
CREATE TABLE items (
    id                  INTEGER PRIMARY KEY,
    queue_id            INTEGER NOT NULL REFERENCES queues(id) ON DELETE CASCADE,
    state               TEXT NOT NULL,
    priority            INTEGER NOT NULL,
    -- the order key inside the queue: the priority, or 2 for every item when the queue
    -- has prioritization off
    rank                INTEGER NOT NULL,
    spec                TEXT NOT NULL,
    resource_args       TEXT NOT NULL,
    attempts            INTEGER NOT NULL DEFAULT 0,
    fence               INTEGER NOT NULL DEFAULT 0,
    agent_id            INTEGER,
    lease_expires_at_ms INTEGER,
    run_id              TEXT,
    fail_message        TEXT,
    fail_phase          TEXT,
    fail_files          TEXT,
    cancel_requested    INTEGER NOT NULL DEFAULT 0,
    created_at_ms       INTEGER NOT NULL,
    updated_at_ms       INTEGER NOT NULL
);
-- leasing and positions walk this index only, so their cost does not grow with depth
CREATE INDEX items_pending ON items (queue_id, rank, id) WHERE state = 'pending';
CREATE INDEX items_leased ON items (lease_expires_at_ms) WHERE state = 'leased';
CREATE INDEX items_queue_state ON items (queue_id, state);
CREATE TABLE item_warnings (
    item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    message TEXT NOT NULL,
    at_ms   INTEGER NOT NULL
);
CREATE INDEX item_warnings_item ON item_warnings (item_id);
CREATE TABLE item_files (
    item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    name    TEXT NOT NULL,
    content TEXT NOT NULL,
    PRIMARY KEY (item_id, name)
);
CREATE TABLE runs (
    id             TEXT PRIMARY KEY,
    item_id        INTEGER NOT NULL,
    queue          TEXT NOT NULL,
    agent_id       INTEGER NOT NULL,
    state          TEXT NOT NULL,
    handle         TEXT NOT NULL,
    exit_code      INTEGER,
    message        TEXT,
    stop_requested INTEGER NOT NULL DEFAULT 0,
    created_at_ms  INTEGER NOT NULL,
    started_at_ms  INTEGER,
    ended_at_ms    INTEGER,
    updated_at_ms  INTEGER NOT NULL
);
CREATE INDEX runs_item ON runs (item_id);
CREATE TABLE agents (
    id               INTEGER PRIMARY KEY,
    name             TEXT NOT NULL UNIQUE,
    hostname         TEXT NOT NULL,
    queues           TEXT NOT NULL,
    max_jobs         INTEGER NOT NULL,
    max_schedulers   INTEGER NOT NULL,
    version          TEXT NOT NULL,
    status           TEXT NOT NULL,
    in_flight        TEXT NOT NULL,
    stop_requested   INTEGER NOT NULL DEFAULT 0,
    registered_at_ms INTEGER NOT NULL,
    heartbeat_at_ms  INTEGER NOT NULL
);
CREATE TABLE tokens (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL,
    scope         TEXT NOT NULL,
    hash          TEXT NOT NULL UNIQUE,
    created_at_ms INTEGER NOT NULL
);
"#,
    r#"
-- run output, as the agent ships it: chunks at byte offsets, in order
CREATE TABLE run_logs (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    offset INTEGER NOT NULL,
    data   BLOB NOT NULL,
    PRIMARY KEY (run_id, offset)
);
ALTER TABLE runs ADD COLUMN log_len INTEGER NOT NULL DEFAULT 0;
-- a run-scoped token belongs to one run and goes when the run ends
ALTER TABLE tokens ADD COLUMN run_id TEXT;
CREATE INDEX tokens_run ON tokens (run_id) WHERE run_id IS NOT NULL;
-- stops a user asked for, found per agent on every heartbeat; almost always empty, so it
-- costs the hot path (lease, ack, finish) nothing
CREATE INDEX items_stop ON items (agent_id) WHERE cancel_requested = 1;
CREATE INDEX agents_heartbeat ON agents (heartbeat_at_ms);
"#,
    r#"
-- sweeps: a scheduler item drives each; its runs are items carrying the sweep id and their
-- index in the sweep (unique, so a resumed scheduler cannot enqueue a run twice)
CREATE TABLE sweeps (
    id             TEXT PRIMARY KEY,
    name           TEXT,
    queue_id       INTEGER NOT NULL REFERENCES queues(id) ON DELETE CASCADE,
    state          TEXT NOT NULL,
    message        TEXT,
    config         TEXT NOT NULL,
    concurrency    INTEGER NOT NULL,
    scheduler_item INTEGER NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    updated_at_ms  INTEGER NOT NULL
);
ALTER TABLE items ADD COLUMN kind TEXT NOT NULL DEFAULT 'run';
ALTER TABLE items ADD COLUMN sweep_id TEXT;
ALTER TABLE items ADD COLUMN sweep_index INTEGER;
CREATE UNIQUE INDEX items_sweep ON items (sweep_id, sweep_index) WHERE sweep_id IS NOT NULL;
-- a stop's reason (hyperband's cut) becomes the stopped run's message
ALTER TABLE runs ADD COLUMN stop_reason TEXT;
ALTER TABLE runs ADD COLUMN metrics_count INTEGER NOT NULL DEFAULT 0;
-- metric records in arrival order; lines shipped from the metrics file carry their line
-- number, so a batch shipped twice is kept once
CREATE TABLE run_metrics (
    id     INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    line   INTEGER,
    data   TEXT NOT NULL
);
CREATE INDEX run_metrics_run ON run_metrics (run_id, id);
CREATE UNIQUE INDEX run_metrics_line ON run_metrics (run_id, line) WHERE line IS NOT NULL;
"#,
    r#"
-- job versions: the same content (key: a hash of the spec) under a name is one version
CREATE TABLE job_versions (
    name          TEXT NOT NULL,
    version       INTEGER NOT NULL,
    key           TEXT NOT NULL,
    spec          TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (name, version),
    UNIQUE (name, key)
);
"#,
    r#"
-- pending items by kind: an agent asking for schedulers only (its job slots all busy) must
-- not walk past every pending run of the queue to learn there is none
DROP INDEX items_pending;
CREATE INDEX items_pending ON items (queue_id, kind, rank, id) WHERE state = 'pending';
"#,
    r#"
-- secrets every server of this store shares: the key run tokens are signed with (run
-- tokens are no longer rows of `tokens`; rows made by earlier versions still work)
CREATE TABLE secrets (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"#,
    r#"
-- the seed's running counts, as each agent last reported them
ALTER TABLE agents ADD COLUMN running_jobs INTEGER NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN running_schedulers INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
-- a queue's cap on its live runs (leased or claimed), NULL for none
ALTER TABLE queues ADD COLUMN max_concurrency INTEGER;
"#,
    r#"
-- a pending item is not leased before this (a lost run's item waits until the run's own
-- machine has stopped it), NULL for at once
ALTER TABLE items ADD COLUMN available_at_ms INTEGER;
"#,
    r#"
-- retries by cause: a queue's policy (JSON, NULL for the defaults) and an item's retries so
-- far, by cause
ALTER TABLE queues ADD COLUMN retry TEXT;
ALTER TABLE items ADD COLUMN retries TEXT NOT NULL DEFAULT '{}';
"#,
];

/// Brings the database up to the newest schema.
pub fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let current: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "the database is at schema version {current}, newer than this liftoff knows ({}); upgrade liftoff",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "applied schema migration");
    }
    Ok(())
}
