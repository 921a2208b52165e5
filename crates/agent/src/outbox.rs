//! The agent's outbox: acks and run reports from every task, sent in batches.
//!
//! One task sends; while a batch is on its way, what the other tasks queue gathers into the
//! next one, so an agent running many short runs makes a few requests instead of one per ack
//! and per report. An ack goes out at once (a run waits for it); reports alone wait up to
//! [`REPORT_LINGER`] for company, since nothing waits on them but the server's view (and
//! without it, batches of one were the rule: each send ended before the next report came).
//! A batch that cannot reach the server is
//! retried as a whole (acks and reports are idempotent on the server); each entry's own answer
//! goes back to its task.

use liftoff_client::{Client, ClientError, ClientResult};
use liftoff_types::api::{AckRequest, AckedRun, ItemAck, ReportedRun, RunReport, MAX_BATCH};
use liftoff_types::{AgentId, ItemId, RunId, RunUpdate};
use std::future::Future;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long reports wait for more to send with them.
const REPORT_LINGER: Duration = Duration::from_millis(5);

enum Msg {
    Ack(ItemAck, oneshot::Sender<ClientResult<AckedRun>>),
    Report(RunReport, oneshot::Sender<ClientResult<ReportedRun>>),
}

#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<Msg>,
}

impl Outbox {
    pub fn start(client: Client, agent: AgentId) -> Outbox {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(send_loop(client, agent, rx));
        Outbox { tx }
    }

    pub async fn ack(&self, item_id: ItemId, ack: AckRequest) -> ClientResult<AckedRun> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Ack(ItemAck { item_id, ack }, tx))
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    pub async fn report(&self, run_id: &RunId, update: RunUpdate) -> ClientResult<ReportedRun> {
        let (tx, rx) = oneshot::channel();
        let report = RunReport {
            run_id: run_id.clone(),
            update,
        };
        self.tx
            .send(Msg::Report(report, tx))
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }
}

/// The outbox has stopped (the agent is shutting down): worth retrying later, so the
/// journal keeps the run.
fn closed() -> ClientError {
    ClientError::Unsent("the agent's outbox has stopped".into())
}

async fn send_loop(client: Client, agent: AgentId, mut rx: mpsc::UnboundedReceiver<Msg>) {
    while let Some(first) = rx.recv().await {
        let mut msgs = vec![first];
        while msgs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(msg) => msgs.push(msg),
                Err(_) => break,
            }
        }
        if msgs.iter().all(|m| matches!(m, Msg::Report(..))) {
            let until = tokio::time::Instant::now() + REPORT_LINGER;
            while msgs.len() < MAX_BATCH {
                match tokio::time::timeout_at(until, rx.recv()).await {
                    Ok(Some(msg)) => {
                        let ack = matches!(msg, Msg::Ack(..));
                        msgs.push(msg);
                        if ack {
                            break;
                        }
                    }
                    _ => break,
                }
            }
        }
        let mut acks = Vec::new();
        let mut reports = Vec::new();
        for msg in msgs {
            match msg {
                Msg::Ack(a, tx) => acks.push((a, tx)),
                Msg::Report(r, tx) => reports.push((r, tx)),
            }
        }
        // Acks first: a report may be about a run acked in the same round.
        deliver(acks, |batch| client.ack_batch(agent, batch)).await;
        deliver(reports, |batch| client.report_batch(agent, batch)).await;
    }
}

/// Sends one batch (retrying while the server is unreachable) and answers each sender.
async fn deliver<E, T, F, Fut>(entries: Vec<(E, oneshot::Sender<ClientResult<T>>)>, send: F)
where
    E: Clone,
    F: Fn(Vec<E>) -> Fut,
    Fut: Future<Output = ClientResult<Vec<ClientResult<T>>>>,
{
    if entries.is_empty() {
        return;
    }
    let (batch, senders): (Vec<E>, Vec<_>) = entries.into_iter().unzip();
    match crate::report::retry("sending a batch", || send(batch.clone())).await {
        Ok(answers) => {
            for (tx, answer) in senders.into_iter().zip(answers) {
                let _ = tx.send(answer);
            }
        }
        Err(e) => {
            let message = e.to_string();
            for tx in senders {
                let _ = tx.send(Err(ClientError::Unsent(message.clone())));
            }
        }
    }
}
