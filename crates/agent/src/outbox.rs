//! The agent's outbox: acks and run reports from every task, sent in batches.
//!
//! One task sends; while a batch is on its way, what the other tasks queue gathers into the
//! next one, so an agent running many short runs makes a few requests instead of one per ack
//! and per report. An ack goes out at once (a run waits for it); reports alone wait up to
//! [`REPORT_LINGER`] for company, since nothing waits on them but the server's view (and
//! without it, batches of one were the rule: each send ended before the next report came),
//! but only while another run held by the agent has its end still to come: the last run of
//! a burst, or a lone run, is told at once.
//! A batch that cannot reach the server is
//! retried as a whole (acks and reports are idempotent on the server); each entry's own answer
//! goes back to its task. An entry the server answered with a server error (its database
//! restarting under it) is sent again too: given up, an ack the database had in fact taken
//! left a run `starting` for good, and a report its end `running` (seen in the chaos soak
//! with a PostgreSQL restart: the agent kept the report for its next start only).

use liftoff_client::{Client, ClientError, ClientResult};
use liftoff_types::api::{AckRequest, AckedRun, ItemAck, ReportedRun, RunReport, MAX_BATCH};
use liftoff_types::{AgentId, ItemId, RunId, RunUpdate};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
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
    /// `ends_to_come`: how many of the agent's runs have an end still to report (see
    /// [`crate::slots::Slots::ends_to_come`]).
    pub fn start(client: Client, agent: AgentId, ends_to_come: Arc<AtomicUsize>) -> Outbox {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(send_loop(client, agent, rx, ends_to_come));
        Outbox { tx }
    }

    pub async fn ack(&self, item_id: ItemId, ack: AckRequest) -> ClientResult<AckedRun> {
        self.until_answered("acking", || {
            let (tx, rx) = oneshot::channel();
            let ack = ItemAck {
                item_id,
                ack: ack.clone(),
            };
            let sent = self.tx.send(Msg::Ack(ack, tx)).map_err(|_| closed());
            async move {
                sent?;
                rx.await.map_err(|_| closed())?
            }
        })
        .await
    }

    pub async fn report(&self, run_id: &RunId, update: RunUpdate) -> ClientResult<ReportedRun> {
        self.until_answered("reporting a run", || {
            let (tx, rx) = oneshot::channel();
            let report = RunReport {
                run_id: run_id.clone(),
                update: update.clone(),
            };
            let sent = self.tx.send(Msg::Report(report, tx)).map_err(|_| closed());
            async move {
                sent?;
                rx.await.map_err(|_| closed())?
            }
        })
        .await
    }

    /// Sends an entry again while the server answers it with a server error, with
    /// [`crate::report::retry`]'s backoff. Unreachable servers are the batch's to retry (see
    /// [`deliver`]); other answers are final.
    async fn until_answered<T, F, Fut>(&self, what: &str, send: F) -> ClientResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = ClientResult<T>>,
    {
        let server_failed = |e: &ClientError| e.status().is_some_and(|s| s.is_server_error());
        crate::report::retry_while(what, server_failed, send).await
    }
}

/// The outbox has stopped (the agent is shutting down): worth retrying later, so the
/// journal keeps the run.
fn closed() -> ClientError {
    ClientError::Unsent("the agent's outbox has stopped".into())
}

async fn send_loop(
    client: Client,
    agent: AgentId,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    ends_to_come: Arc<AtomicUsize>,
) {
    // Another report may come soon only while some run's end is still to come.
    let company_may_come = || ends_to_come.load(Ordering::Relaxed) > 0;
    // Kept from batch to batch: grown once, not again for every batch (a vector of these
    // grown to a few KiB made the allocator merge its free chunks, each time).
    let mut msgs = Vec::new();
    while let Some(first) = rx.recv().await {
        msgs.push(first);
        while msgs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(msg) => msgs.push(msg),
                Err(_) => break,
            }
        }
        if msgs.iter().all(|m| matches!(m, Msg::Report(..))) {
            let until = tokio::time::Instant::now() + REPORT_LINGER;
            while msgs.len() < MAX_BATCH && company_may_come() {
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
        for msg in msgs.drain(..) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use liftoff_types::api::{ReportBatch, ReportOutcome};
    use liftoff_types::RunState;
    use std::sync::Mutex;

    /// A client of an in-process server that answers each batch of reports with `answer`.
    fn batch_server(
        answer: impl Fn(&[RunReport]) -> Vec<ReportOutcome> + Send + Sync + 'static,
    ) -> Client {
        let answer: liftoff_client::InProcess =
            Arc::new(move |req: http::Request<bytes::Bytes>| {
                let batch: ReportBatch =
                    serde_json::from_slice(req.body()).expect("a report batch");
                let body = serde_json::to_vec(&answer(&batch.reports)).unwrap();
                Box::pin(async move { http::Response::new(bytes::Bytes::from(body)) })
            });
        Client::new("http://127.0.0.1:9", None)
            .unwrap()
            .in_process(answer)
    }

    fn taken(r: &RunReport) -> ReportOutcome {
        ReportOutcome::Ok(ReportedRun {
            run_id: r.run_id.clone(),
            state: r.update.state,
        })
    }

    /// An outbox whose server answers every report `ok` and records each batch's size.
    fn outbox(ends_to_come: Arc<AtomicUsize>) -> (Outbox, Arc<Mutex<Vec<usize>>>) {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let seen = batches.clone();
        let client = batch_server(move |reports| {
            seen.lock().unwrap().push(reports.len());
            reports.iter().map(taken).collect()
        });
        (Outbox::start(client, AgentId(1), ends_to_come), batches)
    }

    /// A server whose database fails the first report of each run it is sent (500 for that
    /// entry only), then takes it.
    #[tokio::test(start_paused = true)]
    async fn a_report_the_server_failed_is_sent_again_until_taken() {
        let tries = Arc::new(Mutex::new(Vec::new()));
        let seen = tries.clone();
        let client = batch_server(move |reports| {
            let mut seen = seen.lock().unwrap();
            reports
                .iter()
                .map(|r| {
                    let first = !seen.contains(&r.run_id);
                    seen.push(r.run_id.clone());
                    if !first {
                        return taken(r);
                    }
                    ReportOutcome::Error(liftoff_types::api::EntryError {
                        status: 500,
                        error: liftoff_types::api::ErrorDetail {
                            code: "internal".into(),
                            message: "internal error".into(),
                            fields: Vec::new(),
                        },
                    })
                })
                .collect()
        });
        let outbox = Outbox::start(client, AgentId(1), Arc::new(AtomicUsize::new(0)));
        let run: RunId = "r1".parse().unwrap();
        let reported = outbox.report(&run, finished()).await.unwrap();
        assert_eq!(reported.state, RunState::Finished);
        assert_eq!(*tries.lock().unwrap(), vec![run.clone(), run]);
    }

    fn finished() -> RunUpdate {
        RunUpdate {
            started_at_ms: None,
            fence: 1,
            state: RunState::Finished,
            exit_code: Some(0),
            message: None,
            handle: None,
            not_started: false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_report_waits_for_company_only_while_another_end_is_to_come() {
        let ends = Arc::new(AtomicUsize::new(0));
        let (outbox, batches) = outbox(ends.clone());
        let run: RunId = "r1".parse().unwrap();
        let start = tokio::time::Instant::now();
        outbox.report(&run, finished()).await.unwrap();
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "the last end is told at once"
        );

        // Another run is still going: the report waits for its end, and both go together.
        ends.store(1, Ordering::Relaxed);
        let (first, second) = tokio::join!(outbox.report(&run, finished()), async {
            tokio::time::sleep(Duration::from_millis(2)).await;
            ends.store(0, Ordering::Relaxed);
            let other: RunId = "r2".parse().unwrap();
            outbox.report(&other, finished()).await
        });
        first.unwrap();
        second.unwrap();
        assert_eq!(*batches.lock().unwrap(), vec![1, 2]);

        // No company comes (a run that runs on): the report goes after the linger.
        ends.store(1, Ordering::Relaxed);
        let start = tokio::time::Instant::now();
        outbox.report(&run, finished()).await.unwrap();
        assert_eq!(start.elapsed(), REPORT_LINGER);
    }
}
