//! The agent itself (the seed's `LaunchAgent`): registration, the main loop, heartbeats, the
//! status line, and a clean stop.
//!
//! Stop: the first [`Control::Stop`] (SIGINT, SIGTERM, or a stop asked from the server) stops
//! leasing and lets running runs finish within `stopped_run_timeout`, then stops them; a
//! second one ([`Control::StopNow`]) stops them at once.

use crate::config::AgentConfig;
use crate::journal::{Identity, Journal};
use crate::report::until_answered;
pub use crate::slots::StopWhy;
use crate::slots::{Phase, Slots};
use crate::state::lock;
pub use crate::state::Agent;
use liftoff_client::Client;
use liftoff_runner::Runners;
use liftoff_types::api::LeaseRequest;
use liftoff_types::{AgentId, AgentStatus, Heartbeat, Lease, NewAgent, ResourceType};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify};

/// What the outside tells a running agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Stop leasing; let runs finish within the grace period, then stop them.
    Stop,
    /// Stop every run now (a second Ctrl-C).
    StopNow,
}

impl Agent {
    /// Registers (or resumes the identity in the journal) and checks that every queue exists
    /// and runs a resource this agent has a runner for.
    pub async fn start(
        client: Client,
        config: AgentConfig,
        runners: Runners,
        agent_env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Arc<Agent>, StartError> {
        let journal = Journal::open(&config.state_dir)
            .map_err(|e| StartError::State(config.state_dir.display().to_string(), e))?;
        let mut resources = HashMap::new();
        for (queue, resource) in queue_resources(&client, &config.queues).await? {
            if runners.get(resource).is_none() {
                let have: Vec<String> = runners.resources().iter().map(|r| r.to_string()).collect();
                return Err(StartError::Queue(
                    queue,
                    format!(
                        "it runs {resource}, and this agent has runners for {} only",
                        have.join(", ")
                    ),
                ));
            }
            resources.insert(queue, resource);
        }
        // The server hears from the agent no earlier than this: its lease runs from here.
        let heard = tokio::time::Instant::now();
        let (id, name) = identity(&client, &config, &journal).await?;
        let limits = until_answered("reading the server's limits", client.url(), || {
            client.limits()
        })
        .await
        .map_err(|e| StartError::Register(e.to_string()))?;
        let lease = crate::lease::Lease::new(crate::lease::Terms::from_limits(&limits), heard);
        let (stopping, _) = watch::channel(false);
        let max_jobs = config.max_jobs;
        let base_env = Arc::new(crate::env::inherited(agent_env));
        let slots = Slots::new(max_jobs);
        Ok(Arc::new(Agent {
            outbox: crate::outbox::Outbox::start(client.clone(), id, slots.ends_to_come()),
            api_url: client.url().to_string(),
            // Builds and fetches run with what runs get: no secret of the agent's.
            cache: crate::source::Cache::new(
                &config.state_dir,
                config.build_envs,
                (*base_env).clone(),
            ),
            spares: crate::spares::Spares::open(&config.state_dir),
            disk: crate::disk::DiskGuard::new(config.state_dir.clone(), config.min_free_disk),
            made_ahead: std::sync::atomic::AtomicBool::new(false),
            client,
            base_env,
            runners,
            resources,
            journal,
            id,
            name,
            config,
            slots: Mutex::new(slots),
            changed: Notify::new(),
            status: Mutex::new(AgentStatus::Starting),
            stopping,
            lease,
            store_id: limits
                .get("store_id")
                .and_then(|v| v.as_str())
                .map(str::to_string),
        }))
    }

    /// The main loop (the seed's `loop()`): re-adopt, then lease within capacity and start a
    /// task per item, until told to stop; then stop cleanly.
    pub async fn run(self: Arc<Self>, mut control: mpsc::Receiver<Control>) {
        let (beats_done, beats_done_rx) = watch::channel(false);
        let beat = tokio::spawn(self.clone().heartbeat_loop(beats_done_rx));
        let lapse = tokio::spawn(self.clone().lapse_watch());
        let printer = tokio::spawn(self.clone().status_loop());
        let reconciler = tokio::spawn(crate::item::reconcile_every(
            self.clone(),
            Duration::from_secs(300),
        ));
        let sweeper = tokio::spawn(crate::cleanup::sweep_every(
            self.clone(),
            Duration::from_secs(60),
        ));
        // The supervisor a crashed agent left holds that agent's lease: renewed before the
        // runs are re-adopted, or it could stop them under this agent.
        self.lease_renewed(self.lease.start()).await;
        crate::item::readopt(&self).await;
        // Directories for the first runs, made while there is nothing else to do.
        let me = self.clone();
        let spares_made = tokio::task::spawn_blocking(move || {
            me.spares.fill(Slots::most_held(me.config.max_jobs));
            me.made_ahead
                .store(true, std::sync::atomic::Ordering::Release);
        });
        let mut stop_now = false;
        // A stop asked by the server arrives through the heartbeat, not through `control`.
        let mut asked = self.stopping.subscribe();
        // When the agent last looked for schedulers alone: at most once a second, since
        // every lease for runs looks for them too.
        let mut probed: Option<tokio::time::Instant> = None;
        loop {
            self.set_status(if self.num_running_jobs() > 0 {
                AgentStatus::Running
            } else {
                AgentStatus::Polling
            });
            if *self.stopping.borrow() {
                break;
            }
            let free = self.free_slots();
            let free_schedulers = self.free_scheduler_slots();
            let next_probe = probed.map(|at| at + Duration::from_secs(1));
            let probed_lately = next_probe.is_some_and(|at| at > tokio::time::Instant::now());
            if free == 0 && (free_schedulers == 0 || probed_lately) {
                let probe_due = next_probe.unwrap_or_else(tokio::time::Instant::now);
                tokio::select! {
                    () = tokio::time::sleep_until(probe_due), if free_schedulers > 0 => continue,
                    _ = self.changed.notified() => continue,
                    c = control.recv() => { stop_now = self.on_control(c); continue }
                    _ = stop_asked(&mut asked) => continue,
                }
            }
            // Every job slot busy but room for a scheduler: look for one without waiting
            // on the server (a long-poll here would hold up the next run when a slot
            // frees); the wait above spaces these looks a second apart.
            let schedulers_only = free == 0;
            if schedulers_only {
                probed = Some(tokio::time::Instant::now());
            }
            let queues = self.queues_with_room();
            if queues.is_empty() {
                // Every runner is at its own limit: wait for a slot to free.
                tokio::select! {
                    _ = self.changed.notified() => continue,
                    c = control.recv() => { stop_now = self.on_control(c); continue }
                    _ = stop_asked(&mut asked) => continue,
                }
            }
            if self.lease.is_lapsed() {
                // Work taken now could not start (the supervisor refuses runs until a beat
                // renews the lease), and the server may be gone.
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    c = control.recv() => { stop_now = self.on_control(c); continue }
                    _ = stop_asked(&mut asked) => continue,
                }
            }
            if !self.disk.has_room() {
                // A run taken now could not be given its directory or journal line.
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    c = control.recv() => { stop_now = self.on_control(c); continue }
                    _ = stop_asked(&mut asked) => continue,
                }
            }
            let request = LeaseRequest {
                queues,
                max: if schedulers_only {
                    free_schedulers.min(liftoff_types::api::MAX_LEASE_BATCH)
                } else {
                    free
                },
                wait_ms: if schedulers_only {
                    0
                } else {
                    self.config.lease_wait.as_millis() as u64
                },
                lease_ms: 30_000,
                runs: !schedulers_only,
                schedulers: free_schedulers > 0,
            };
            tokio::select! {
                leased = self.client.lease(self.id, &request) => match leased {
                    Ok(resp) => {
                        tracing::debug!(n = resp.leases.len(), "leased");
                        for lease in resp.leases {
                            self.spawn_item(lease);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "lease failed; trying again in 1 s");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                },
                c = control.recv() => stop_now = self.on_control(c),
                _ = stop_asked(&mut asked) => {}
            }
        }
        self.finish(control, stop_now).await;
        let _ = spares_made.await;
        let me = self.clone();
        let _ = tokio::task::spawn_blocking(move || me.spares.put_away()).await;
        let _ = beats_done.send(true);
        let _ = beat.await;
        lapse.abort();
        printer.abort();
        reconciler.abort();
        sweeper.abort();
        self.set_status(AgentStatus::Stopped);
        let last = Heartbeat {
            status: AgentStatus::Stopped,
            in_flight: Vec::new(),
            running_jobs: 0,
            running_schedulers: 0,
            wait_ms: 0,
        };
        let _ = self.client.heartbeat(self.id, &last).await;
        eprintln!("{}", self.snapshot().line());
    }

    /// Returns whether to stop runs at once.
    fn on_control(&self, c: Option<Control>) -> bool {
        self.stopping.send_replace(true);
        matches!(c, Some(Control::StopNow))
    }

    /// Waits for runs to end within the grace period (or not at all after a second signal),
    /// then stops what is left. Items that never started go back to their queues.
    async fn finish(self: &Arc<Self>, mut control: mpsc::Receiver<Control>, mut stop_now: bool) {
        // Runs waiting to start never will: they are withdrawn and go back to their queues.
        lock(&self.slots).stop_all(Some(Phase::Ready), StopWhy::AgentStopping);
        let grace = tokio::time::Instant::now() + self.config.stopped_run_timeout;
        if !stop_now && self.num_running_jobs() > 0 {
            eprintln!(
                "agent {}: stopping; waiting up to {:?} for {} run(s) (again to stop them now)",
                self.name,
                self.config.stopped_run_timeout,
                self.num_running_jobs()
            );
        }
        while self.num_running_jobs() > 0 && !stop_now {
            tokio::select! {
                _ = self.changed.notified() => {}
                _ = tokio::time::sleep_until(grace) => break,
                c = control.recv() => stop_now = c.is_some(),
            }
        }
        let why = if stop_now {
            StopWhy::Now
        } else {
            StopWhy::AgentStopping
        };
        lock(&self.slots).stop_all(None, why);
        while self.held() > self.reporting() {
            let _ = tokio::time::timeout(Duration::from_millis(100), self.changed.notified()).await;
        }
        // Let the last reports reach the server; the journal keeps any that do not (the
        // next start sends them), so another signal stops waiting for them.
        let wait = Duration::from_secs(30);
        let started = tokio::time::Instant::now();
        let mut said = false;
        while self.reporting() > 0 {
            tokio::select! {
                waited = tokio::time::timeout_at(started + wait, self.changed.notified()) => {
                    if waited.is_err() {
                        break;
                    }
                }
                // Reports normally go in milliseconds: say so only when they do not.
                () = tokio::time::sleep_until(started + Duration::from_secs(1)), if !said => {
                    said = true;
                    eprintln!(
                        "agent {}: waiting up to {wait:?} for the server to take {} run \
                         report(s) (again to leave them for the next start)",
                        self.name,
                        self.reporting()
                    );
                }
                Some(_) = control.recv() => break,
            }
        }
    }

    fn spawn_item(self: &Arc<Self>, lease: Lease) {
        let item = lease.item.id;
        let phase = if lease.item.kind == liftoff_types::ItemKind::Scheduler {
            Phase::Scheduling
        } else {
            Phase::Preparing
        };
        if phase == Phase::Scheduling && self.free_scheduler_slots() == 0 {
            // More schedulers came in one lease than this agent may run: give the extra
            // back (no attempt counted); the next lease asks for none.
            let me = self.clone();
            tokio::spawn(async move {
                let _ = me.client.release(item, lease.fence).await;
            });
            return;
        }
        let stop = lock(&self.slots).add(item, phase, &lease.item.queue);
        let me = self.clone();
        tokio::spawn(async move {
            if me.is_stopping() {
                // Leased as the stop came in: give it back, no attempt counted.
                let _ = me.client.release(item, lease.fence).await;
            } else if lease.item.kind == liftoff_types::ItemKind::Scheduler {
                crate::scheduler::run(&me, &lease, stop).await;
            } else {
                crate::item::take_item(&me, lease, stop).await;
            }
            me.finish_item(item);
        });
    }

    /// Heartbeats, held open by the server so that a stop arrives the moment it is asked.
    async fn heartbeat_loop(self: Arc<Self>, mut done: watch::Receiver<bool>) {
        loop {
            // Once stopping, beats keep the agent alive through its grace period but no
            // longer wait on the server (which answers a stopping agent at once anyway), so
            // the loop neither spins nor leaves a long-poll behind when it ends.
            let stopping = *self.stopping.borrow();
            let beat = Heartbeat {
                status: *lock(&self.status),
                in_flight: self.in_flight(),
                running_jobs: self.num_running_jobs() as u32,
                running_schedulers: self.num_running_schedulers() as u32,
                wait_ms: if stopping {
                    0
                } else {
                    self.beat_wait().as_millis() as u64
                },
            };
            let sent = tokio::time::Instant::now();
            let call = self.client.heartbeat(self.id, &beat);
            // A beat that has not come back by the lease's end counts as failed then.
            let lapse = async {
                match self.lease.deadline() {
                    Some(at) if !self.lease.is_lapsed() => tokio::time::sleep_until(at).await,
                    _ => std::future::pending().await,
                }
            };
            let result = if stopping {
                // Finished, never cut: a beat cut mid-flight could land after the final
                // `stopped` one and overwrite it.
                call.await.map_err(|e| e.to_string())
            } else {
                tokio::select! {
                    r = call => r.map_err(|e| e.to_string()),
                    () = lapse => Err("no answer within the agent timeout".to_string()),
                    _ = done.changed() => return,
                }
            };
            let failed = result.is_err();
            match result {
                Ok(reply) => {
                    if let Some(terms) = &reply.lease {
                        self.lease.set_terms(crate::lease::Terms::of(terms));
                    }
                    self.lease_renewed(sent).await;
                    for item in reply.stop_items {
                        self.stop_item(item, StopWhy::Asked);
                    }
                    if reply.stop_agent && !*self.stopping.borrow() {
                        eprintln!("agent {}: the server asked this agent to stop", self.name);
                        self.stopping.send_replace(true);
                        self.changed.notify_waiters();
                    }
                }
                Err(e) => tracing::warn!(error = %e, "heartbeat failed; trying again in 1 s"),
            }
            let pause = match (failed, stopping) {
                (true, _) => Duration::from_secs(1),
                (false, true) => self.config.heartbeat_every,
                (false, false) => Duration::ZERO,
            };
            if *done.borrow() {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = done.changed() => return,
            }
        }
    }

    /// How long a heartbeat waits on the server: the configured wait, at most a third of
    /// the server's agent timeout (so the lease is renewed in time).
    fn beat_wait(&self) -> Duration {
        match self.lease.terms() {
            Some(terms) => terms.beat_wait(self.config.heartbeat_every),
            None => self.config.heartbeat_every,
        }
    }

    /// A beat sent at `sent` was answered: the lease runs from then, and the runners hear.
    async fn lease_renewed(&self, sent: tokio::time::Instant) {
        let (left, change) = self.lease.renewed(sent);
        let Some(terms) = self.lease.terms() else {
            return;
        };
        for runner in self.runners.iter() {
            runner.renew_lease(left, terms.grace).await;
        }
        if change == crate::lease::Change::Back {
            self.lease.resume();
            eprintln!("agent {}: the server answers again", self.name);
        }
    }

    /// Wakes at the lease's end and, when no beat has renewed it meanwhile, stops the runs.
    async fn lapse_watch(self: Arc<Self>) {
        loop {
            match self.lease.deadline() {
                Some(at) if !self.lease.is_lapsed() => tokio::time::sleep_until(at).await,
                Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                None => return,
            }
            if self.lease.unanswered() == crate::lease::Change::Lapsed {
                self.lease_lapsed();
            }
        }
    }

    /// The server has not answered for its agent timeout: it declares this agent lost and
    /// may give its items to others, so every run of this agent stops now.
    fn lease_lapsed(&self) {
        let timeout = self.lease.terms().map_or(0, |t| t.timeout.as_secs());
        eprintln!(
            "agent {}: no answer from the server for {timeout}s (its agent timeout): stopping \
             every run, as the server may give their items to other agents",
            self.name
        );
        lock(&self.slots).stop_all(None, StopWhy::Lapsed);
    }

    /// Prints the status line when it changes, and every 300 s (20 s at verbosity 1).
    async fn status_loop(self: Arc<Self>) {
        let every = if self.config.verbosity >= 1 {
            Duration::from_secs(20)
        } else {
            Duration::from_secs(300)
        };
        let mut last = String::new();
        let mut printed = tokio::time::Instant::now();
        loop {
            let line = self.snapshot().line();
            if line != last || printed.elapsed() >= every {
                eprintln!("{line}");
                last = line;
                printed = tokio::time::Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Resolves once a stop is asked. (The guard `wait_for` returns must not live across an
/// await, or the agent's future would not be `Send`.)
async fn stop_asked(asked: &mut watch::Receiver<bool>) {
    let _ = asked.wait_for(|s| *s).await.map(|_| ());
}

/// Each queue's resource type, as the server has it.
async fn queue_resources(
    client: &Client,
    queues: &[String],
) -> Result<Vec<(String, ResourceType)>, StartError> {
    let mut out = Vec::new();
    for queue in queues {
        let q = until_answered("reading the queues", client.url(), || {
            client.get_queue(queue)
        })
        .await
        .map_err(|e| StartError::Queue(queue.clone(), e.to_string()))?;
        out.push((queue.clone(), q.resource));
    }
    Ok(out)
}

/// The identity in the journal when the server still knows it, else a new registration.
async fn identity(
    client: &Client,
    config: &AgentConfig,
    journal: &Journal,
) -> Result<(AgentId, String), StartError> {
    if let Some(known) = journal.identity().filter(|i| i.server == client.url()) {
        let beat = Heartbeat {
            status: AgentStatus::Starting,
            in_flight: Vec::new(),
            running_jobs: 0,
            running_schedulers: 0,
            wait_ms: 0,
        };
        let url = client.url();
        let beat = until_answered("resuming its identity", url, || {
            client.heartbeat(known.agent_id, &beat)
        });
        if beat.await.is_ok() {
            if let Ok(agents) =
                until_answered("resuming its identity", url, || client.list_agents()).await
            {
                if let Some(agent) = agents.into_iter().find(|a| a.id == known.agent_id) {
                    return Ok((agent.id, agent.name));
                }
            }
        }
    }
    let new = NewAgent {
        hostname: sanitize_host(&config.hostname),
        queues: config.queues.clone(),
        max_jobs: config.max_jobs,
        max_schedulers: config.max_schedulers,
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let agent = until_answered("registering", client.url(), || client.register_agent(&new))
        .await
        .map_err(|e| StartError::Register(e.to_string()))?;
    let id = Identity {
        agent_id: agent.id,
        server: client.url().to_string(),
    };
    journal
        .set_identity(&id)
        .map_err(|e| StartError::State(journal.dir().display().to_string(), e))?;
    Ok((agent.id, agent.name))
}

fn sanitize_host(host: &str) -> String {
    host.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(253)
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot use the state directory {0}")]
    State(String, #[source] std::io::Error),
    #[error("queue {0}: {1}")]
    Queue(String, String),
    #[error("cannot register with the server: {0}")]
    Register(String),
}
