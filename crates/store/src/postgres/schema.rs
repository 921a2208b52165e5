//! Schema migrations for PostgreSQL, applied in order at start-up under an advisory lock, so
//! several server replicas starting at once apply each migration exactly once. The table
//! `liftoff_schema` records how far the database has come. Never edit a shipped migration.

use crate::{StoreError, StoreResult};
use deadpool_postgres::Client;

/// Any constant shared by every liftoff replica: the key of the migration lock.
const MIGRATION_LOCK: i64 = 0x006c_6966_746f_6666; // "liftoff" in ASCII

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE queues (
    id                 BIGSERIAL PRIMARY KEY,
    name               TEXT NOT NULL UNIQUE,
    resource           TEXT NOT NULL,
    config             TEXT NOT NULL,
    template_variables TEXT NOT NULL,
    prioritization     BOOLEAN NOT NULL,
    max_attempts       BIGINT NOT NULL,
    requeue_lost       BOOLEAN NOT NULL,
    created_at_ms      BIGINT NOT NULL
);
CREATE TABLE items (
    id                  BIGSERIAL PRIMARY KEY,
    queue_id            BIGINT NOT NULL REFERENCES queues(id) ON DELETE CASCADE,
    state               TEXT NOT NULL,
    priority            BIGINT NOT NULL,
    rank                BIGINT NOT NULL,
    spec                TEXT NOT NULL,
    resource_args       TEXT NOT NULL,
    attempts            BIGINT NOT NULL DEFAULT 0,
    fence               BIGINT NOT NULL DEFAULT 0,
    agent_id            BIGINT,
    lease_expires_at_ms BIGINT,
    run_id              TEXT,
    fail_message        TEXT,
    fail_phase          TEXT,
    fail_files          TEXT,
    cancel_requested    BOOLEAN NOT NULL DEFAULT FALSE,
    created_at_ms       BIGINT NOT NULL,
    updated_at_ms       BIGINT NOT NULL
);
CREATE INDEX items_pending ON items (queue_id, rank, id) WHERE state = 'pending';
CREATE INDEX items_leased ON items (lease_expires_at_ms) WHERE state = 'leased';
CREATE INDEX items_queue_state ON items (queue_id, state);
CREATE INDEX items_agent ON items (agent_id) WHERE state IN ('leased', 'claimed');
CREATE INDEX items_stop ON items (agent_id) WHERE cancel_requested;
CREATE TABLE item_warnings (
    seq     BIGSERIAL PRIMARY KEY,
    item_id BIGINT NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    message TEXT NOT NULL,
    at_ms   BIGINT NOT NULL
);
CREATE INDEX item_warnings_item ON item_warnings (item_id);
CREATE TABLE item_files (
    item_id BIGINT NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    name    TEXT NOT NULL,
    content TEXT NOT NULL,
    PRIMARY KEY (item_id, name)
);
CREATE TABLE runs (
    seq            BIGSERIAL UNIQUE,
    id             TEXT PRIMARY KEY,
    item_id        BIGINT NOT NULL,
    queue          TEXT NOT NULL,
    agent_id       BIGINT NOT NULL,
    state          TEXT NOT NULL,
    handle         TEXT NOT NULL,
    exit_code      INTEGER,
    message        TEXT,
    stop_requested BOOLEAN NOT NULL DEFAULT FALSE,
    log_len        BIGINT NOT NULL DEFAULT 0,
    created_at_ms  BIGINT NOT NULL,
    started_at_ms  BIGINT,
    ended_at_ms    BIGINT,
    updated_at_ms  BIGINT NOT NULL
);
CREATE INDEX runs_item ON runs (item_id);
CREATE TABLE run_logs (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    "offset" BIGINT NOT NULL,
    data   BYTEA NOT NULL,
    PRIMARY KEY (run_id, "offset")
);
CREATE TABLE agents (
    id               BIGSERIAL PRIMARY KEY,
    name             TEXT NOT NULL UNIQUE,
    hostname         TEXT NOT NULL,
    queues           TEXT NOT NULL,
    max_jobs         BIGINT NOT NULL,
    max_schedulers   BIGINT NOT NULL,
    version          TEXT NOT NULL,
    status           TEXT NOT NULL,
    in_flight        TEXT NOT NULL,
    stop_requested   BOOLEAN NOT NULL DEFAULT FALSE,
    registered_at_ms BIGINT NOT NULL,
    heartbeat_at_ms  BIGINT NOT NULL
);
CREATE INDEX agents_heartbeat ON agents (heartbeat_at_ms);
CREATE TABLE tokens (
    id            BIGSERIAL PRIMARY KEY,
    name          TEXT NOT NULL,
    scope         TEXT NOT NULL,
    hash          TEXT NOT NULL UNIQUE,
    run_id        TEXT,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX tokens_run ON tokens (run_id) WHERE run_id IS NOT NULL;
"#,
    r#"
CREATE TABLE sweeps (
    id             TEXT PRIMARY KEY,
    name           TEXT,
    queue_id       BIGINT NOT NULL REFERENCES queues(id) ON DELETE CASCADE,
    state          TEXT NOT NULL,
    message        TEXT,
    config         TEXT NOT NULL,
    concurrency    BIGINT NOT NULL,
    scheduler_item BIGINT NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    updated_at_ms  BIGINT NOT NULL
);
ALTER TABLE items ADD COLUMN kind TEXT NOT NULL DEFAULT 'run';
ALTER TABLE items ADD COLUMN sweep_id TEXT;
ALTER TABLE items ADD COLUMN sweep_index BIGINT;
CREATE UNIQUE INDEX items_sweep ON items (sweep_id, sweep_index) WHERE sweep_id IS NOT NULL;
ALTER TABLE runs ADD COLUMN stop_reason TEXT;
ALTER TABLE runs ADD COLUMN metrics_count BIGINT NOT NULL DEFAULT 0;
CREATE TABLE run_metrics (
    id     BIGSERIAL PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    line   BIGINT,
    data   TEXT NOT NULL
);
CREATE INDEX run_metrics_run ON run_metrics (run_id, id);
CREATE UNIQUE INDEX run_metrics_line ON run_metrics (run_id, line) WHERE line IS NOT NULL;
"#,
    r#"
-- job versions: the same content (key: a hash of the spec) under a name is one version
CREATE TABLE job_versions (
    name          TEXT NOT NULL,
    version       BIGINT NOT NULL,
    key           TEXT NOT NULL,
    spec          TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
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
ALTER TABLE agents ADD COLUMN running_jobs BIGINT NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN running_schedulers BIGINT NOT NULL DEFAULT 0;
"#,
    r#"
-- a queue's cap on its live runs (leased or claimed), NULL for none
ALTER TABLE queues ADD COLUMN max_concurrency BIGINT;
"#,
    r#"
-- a pending item is not leased before this (a lost run's item waits until the run's own
-- machine has stopped it), NULL for at once
ALTER TABLE items ADD COLUMN available_at_ms BIGINT;
"#,
    r#"
-- retries by cause: a queue's policy (JSON, NULL for the defaults) and an item's retries so
-- far, by cause
ALTER TABLE queues ADD COLUMN retry TEXT;
ALTER TABLE items ADD COLUMN retries TEXT NOT NULL DEFAULT '{}';
"#,
];

/// Brings the database up to the newest schema.
pub async fn migrate(client: &mut Client) -> StoreResult<()> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS liftoff_schema (version BIGINT NOT NULL)")
        .await?;
    let current: i64 = tx
        .query_opt("SELECT version FROM liftoff_schema", &[])
        .await?
        .map(|r| r.get(0))
        .unwrap_or(0);
    if current as usize > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "the database is at schema version {current}, newer than this liftoff knows ({}); upgrade liftoff",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.batch_execute(sql).await?;
        tracing::info!(version = i + 1, "applied schema migration");
    }
    tx.execute("DELETE FROM liftoff_schema", &[]).await?;
    tx.execute(
        "INSERT INTO liftoff_schema (version) VALUES ($1)",
        &[&(MIGRATIONS.len() as i64)],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
