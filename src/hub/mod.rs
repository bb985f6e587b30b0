//! The WebSocket hub behind `/ws/streams`: live stream updates with resume by position, rollback
//! notices, abuse limits, and fan-out of events another process ingested.
//!
//! One **feeder** task follows the store: woken by the in-process ingestor's notices, by
//! PostgreSQL `LISTEN` (an API-only process), or by a periodic poll (the safety net: it reads by
//! position, so a missed wake-up loses nothing). Each pass first compares the store's epoch with
//! the one it served: a difference means rollbacks, read from the reorg log and announced to the
//! affected connections (`{"type":"rollback",…}`) before anything else. Then it reads the events
//! after the last position it dispatched, renders each one once, and queues the shared frame on
//! the link of every connection whose subscriptions match (`link.rs`: a bounded queue; over its
//! limits the connection is closed as a slow consumer, the others never wait), then writes the
//! queued links out on every CPU at once (`fanout.rs`).
//!
//! A subscription with `resume_from` is registered *pending* under the registry lock at the
//! feeder's current head `H`: the connection replays the stored matching events in
//! `(resume_from, H]` while the feeder buffers newer matching events for it; then, under the
//! lock again, the buffer is flushed and the subscription goes live. A rollback during the replay
//! lowers `H`, the replay cursor and the buffer to the fork, so nothing is lost, repeated or
//! delivered from the abandoned branch after the notice. See `conn.rs` for the connection side.

pub mod conn;
pub(crate) mod fanout;
pub(crate) mod link;
pub mod protocol;
pub mod render;
pub mod wire;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{broadcast, watch, Notify};

use crate::ingest::Notice;
use crate::projection::view::ViewOptions;
use crate::store::{Position, ReorgRecord, Store, StoreError};

use conn::ConnLink;
use link::{LinkCfg, Out};
use protocol::{
    Filter, CLOSE_SHUTDOWN, CLOSE_SLOW_CONSUMER, REASON_SHUTDOWN, REASON_SLOW_CONSUMER,
};
use render::LiveEvent;

/// Hub settings.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Open connections at most (0: no cap).
    pub max_connections: usize,
    /// Open connections per client IP at most (0: no cap).
    pub max_connections_per_ip: usize,
    /// Items queued per connection (frames; a whole page for an all-streams-only connection)
    /// before it is closed as a slow consumer.
    pub send_queue: usize,
    /// Bytes queued per connection before it is closed as a slow consumer.
    pub send_queue_bytes: usize,
    /// Server pings this often; two unanswered ones close the connection.
    pub ping_interval: Duration,
    /// A resume more than this many positions behind the head is refused with `STALE_CURSOR`
    /// (0: no limit): such a client should reload through REST.
    pub resume_window: u64,
    /// Safety-net poll of the store (a missed notification costs at most this much latency).
    pub poll_interval: Duration,
    /// Flush window and size of `stream_update_batch` frames.
    pub batch_window: Duration,
    pub batch_max: usize,
    /// Subscriptions per connection at most.
    pub max_subscriptions: usize,
    /// When set, the all-streams subscription needs this key (`Authorization: Bearer` or
    /// `?token=` on the upgrade request).
    pub firehose_key: Option<String>,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            max_connections: 20_000,
            max_connections_per_ip: 20,
            send_queue: 1024,
            send_queue_bytes: 16 * 1024 * 1024,
            ping_interval: Duration::from_secs(30),
            resume_window: 1_000_000,
            poll_interval: Duration::from_secs(1),
            batch_window: Duration::from_millis(50),
            batch_max: 25,
            max_subscriptions: 100,
            firehose_key: None,
        }
    }
}

/// What wakes the feeder besides its poll.
pub enum Wake {
    /// The in-process ingestor's notices.
    Notices(broadcast::Receiver<Notice>),
    /// `LISTEN` on the PostgreSQL store's commit and rollback channels.
    Postgres(String),
}

/// Why a connection was refused at the upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    PerIp(usize),
    Full(usize),
    ShuttingDown,
}

pub(crate) type ConnId = u64;

#[derive(Debug)]
pub(crate) struct Sub {
    pub filter: Filter,
    pub batching: bool,
    /// Every matching event above this position is (or will be) delivered by this subscription.
    pub from: Position,
    pub live: bool,
}

#[derive(Debug)]
pub(crate) struct Pending {
    pub filter: Filter,
    /// Replay up to here from the store; newer events are buffered.
    pub target: Position,
    /// Replayed up to here.
    pub cursor: Position,
    pub buffer: Vec<Arc<LiveEvent>>,
}

/// Stream ids a connection was sent events of (to know whom a rollback concerns).
const SEEN_CAP: usize = 4096;

#[derive(Debug)]
pub(crate) struct ConnEntry {
    pub link: Arc<ConnLink>,
    pub subs: Vec<Sub>,
    pub pending: Option<Pending>,
    seen: HashSet<u64>,
    seen_overflow: bool,
    last_offered: Position,
    buffer_cap: usize,
}

impl ConnEntry {
    /// Queues `out` and writes it now; false when the connection no longer takes frames (over
    /// its queue's limits it is closed as a slow consumer).
    pub fn send(&mut self, out: Out) -> bool {
        self.link.send(out)
    }

    /// Queues `out`; when the link needs writing, adds it to `dirty` (the caller writes those
    /// after releasing the registry, see [`Hub::write_links`]).
    pub fn queue(&mut self, out: Out, dirty: &mut Vec<Arc<ConnLink>>) -> bool {
        match self.link.push(out) {
            Some(write) => {
                if write {
                    dirty.push(self.link.clone());
                }
                true
            }
            None => false,
        }
    }

    pub fn note_stream(&mut self, id: Option<u64>) {
        if let Some(id) = id {
            if self.seen.len() < SEEN_CAP {
                self.seen.insert(id);
            } else if !self.seen.contains(&id) {
                self.seen_overflow = true;
            }
        }
    }

    /// Does a live subscription other than `except` already deliver `ev`?
    pub fn live_covers(&self, ev: &LiveEvent, except: Option<&Filter>) -> bool {
        self.subs.iter().any(|s| {
            s.live
                && Some(&s.filter) != except
                && s.from < ev.position
                && s.filter
                    .matches(ev.stream_id, ev.sender.as_deref(), ev.recipient.as_deref())
        })
    }

    fn offer(&mut self, ev: &Arc<LiveEvent>, dirty: &mut Vec<Arc<ConnLink>>) -> u64 {
        let (sid, snd, rcp) = (ev.stream_id, ev.sender.as_deref(), ev.recipient.as_deref());
        let mut live = false;
        let mut batch = false;
        for s in &self.subs {
            if s.live && s.from < ev.position && s.filter.matches(sid, snd, rcp) {
                live = true;
                batch |= s.batching;
            }
        }
        if live {
            self.note_stream(sid);
            let out = Out::Event {
                ev: ev.clone(),
                batch,
            };
            return u64::from(self.queue(out, dirty));
        }
        if let Some(p) = &mut self.pending {
            if ev.position > p.target && p.filter.matches(sid, snd, rcp) {
                p.buffer.push(ev.clone());
                if p.buffer.len() > self.buffer_cap {
                    self.link
                        .kill
                        .fire(CLOSE_SLOW_CONSUMER, REASON_SLOW_CONSUMER);
                }
            }
        }
        0
    }
}

/// Connections, their subscriptions and the indexes the fan-out uses. Guarded by one mutex that
/// the feeder holds while dispatching a page and a connection holds while (un)subscribing.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    pub epoch: u64,
    /// The last position dispatched.
    pub head: Position,
    pub head_ledger: u32,
    pub conns: std::collections::BTreeMap<ConnId, ConnEntry>,
    by_stream: HashMap<u64, HashSet<ConnId>>,
    by_recipient: HashMap<String, HashSet<ConnId>>,
    by_sender: HashMap<String, HashSet<ConnId>>,
    all: HashSet<ConnId>,
    scratch: Vec<ConnId>,
}

impl Registry {
    fn index(&mut self, f: &Filter) -> &mut HashSet<ConnId> {
        match f {
            Filter::Stream(id) => self.by_stream.entry(*id).or_default(),
            Filter::Recipient(a) => self.by_recipient.entry(a.clone()).or_default(),
            Filter::Sender(a) => self.by_sender.entry(a.clone()).or_default(),
            Filter::All => &mut self.all,
        }
    }

    pub fn add_index(&mut self, id: ConnId, f: &Filter) {
        self.index(f).insert(id);
    }

    pub fn remove_index(&mut self, id: ConnId, f: &Filter) {
        match f {
            Filter::Stream(s) => {
                if let Some(set) = self.by_stream.get_mut(s) {
                    set.remove(&id);
                    if set.is_empty() {
                        self.by_stream.remove(s);
                    }
                }
            }
            Filter::Recipient(a) => {
                if let Some(set) = self.by_recipient.get_mut(a) {
                    set.remove(&id);
                    if set.is_empty() {
                        self.by_recipient.remove(a);
                    }
                }
            }
            Filter::Sender(a) => {
                if let Some(set) = self.by_sender.get_mut(a) {
                    set.remove(&id);
                    if set.is_empty() {
                        self.by_sender.remove(a);
                    }
                }
            }
            Filter::All => {
                self.all.remove(&id);
            }
        }
    }

    /// Hands a page of events (in position order) to every connection with a matching
    /// subscription, each event once per connection. All-streams connections get the whole page
    /// as one chunk; the others event by event. The links to write are added to `dirty`.
    /// Returns frames queued.
    fn dispatch(&mut self, page: &[Arc<LiveEvent>], dirty: &mut Vec<Arc<ConnLink>>) -> u64 {
        let mut sent = 0;
        let (Some(first), Some(last)) = (page.first(), page.last()) else {
            return 0;
        };
        let shared: Arc<[Arc<LiveEvent>]> = page.into();
        // Framed once, when the first non-batching all-streams connection takes the page whole.
        let mut page_wire: Option<bytes::Bytes> = None;
        let n = page.len() as u64;
        let all = std::mem::take(&mut self.all);
        let by_iteration = all.len() * 2 > self.conns.len();
        let mut offer_all = |c: &mut ConnEntry| {
            // The common case: one live all-streams subscription that already had everything
            // before this page. The page goes as one item.
            if let [s] = c.subs.as_slice() {
                if s.live
                    && s.filter == Filter::All
                    && s.from < first.position
                    && c.last_offered < first.position
                    && c.pending.is_none()
                {
                    c.last_offered = last.position;
                    let batch = s.batching;
                    let wire = if batch {
                        bytes::Bytes::new()
                    } else {
                        page_wire
                            .get_or_insert_with(|| wire::concat(page.iter().map(|e| &e.wire)))
                            .clone()
                    };
                    let out = Out::Page {
                        events: shared.clone(),
                        wire,
                        batch,
                    };
                    if c.queue(out, dirty) {
                        sent += n;
                    }
                    return;
                }
            }
            for ev in page {
                if c.last_offered >= ev.position {
                    continue;
                }
                c.last_offered = ev.position;
                sent += c.offer(ev, dirty);
            }
        };
        if by_iteration {
            // Most connections listen to everything: walk them (no hashing).
            for c in self.conns.values_mut() {
                if c.subs.iter().any(|s| s.filter == Filter::All) {
                    offer_all(c);
                }
            }
        } else {
            for id in &all {
                if let Some(c) = self.conns.get_mut(id) {
                    offer_all(c);
                }
            }
        }
        self.all = all;
        let mut ids = std::mem::take(&mut self.scratch);
        for ev in page {
            ids.clear();
            if let Some(s) = ev.stream_id.and_then(|s| self.by_stream.get(&s)) {
                ids.extend(s.iter().copied());
            }
            if let Some(s) = ev
                .recipient
                .as_deref()
                .and_then(|r| self.by_recipient.get(r))
            {
                ids.extend(s.iter().copied());
            }
            if let Some(s) = ev.sender.as_deref().and_then(|r| self.by_sender.get(r)) {
                ids.extend(s.iter().copied());
            }
            for id in &ids {
                if let Some(c) = self.conns.get_mut(id) {
                    if c.last_offered >= ev.position {
                        continue;
                    }
                    c.last_offered = ev.position;
                    sent += c.offer(ev, dirty);
                }
            }
        }
        self.scratch = ids;
        sent
    }
}

/// A rollback as the hub announces it.
#[derive(Debug, Clone)]
struct RollbackNotice {
    to_ledger: u32,
    epoch: u64,
    streams: Vec<u64>,
    first_removed: Option<Position>,
}

/// A stream's sender and recipient.
type Parties = (Arc<str>, Arc<str>);

/// The hub. Cheap to share (`Arc`).
pub struct Hub {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) view: ViewOptions,
    pub(crate) cfg: HubConfig,
    registry: Mutex<Registry>,
    /// Open connections (shared with health and metrics).
    connections: Arc<AtomicUsize>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    next_id: AtomicU64,
    wake: Notify,
    /// Fired after every feeder pass (connections waiting for the hub to catch up).
    pub(crate) progress: Notify,
    /// Fired when a connection ends (drain at shutdown).
    closed: Notify,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Streams' parties as last rendered (who a rollback concerns).
    parties: Mutex<HashMap<u64, Parties>>,
    /// The fan-out threads, started at the first large fan-out.
    fanout: OnceLock<Option<fanout::Fanout<conn::LinkIo>>>,
}

/// A reserved connection slot, released on drop (also when an upgrade never completes).
pub struct Slot {
    hub: Arc<Hub>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.hub.connections.fetch_sub(1, Ordering::AcqRel);
        let mut m = lock(&self.hub.per_ip);
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
        drop(m);
        self.hub.closed.notify_waiters();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hub {
    /// Starts the hub: reads the store's epoch and last position (clients connecting now get
    /// events after it, or resume from earlier), then spawns the feeder.
    pub async fn start(
        store: Arc<dyn Store>,
        view: ViewOptions,
        cfg: HubConfig,
        wakes: Vec<Wake>,
        connections: Arc<AtomicUsize>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Arc<Hub>, StoreError> {
        let registry = Registry {
            epoch: store.epoch().await?,
            head: store.last_position().await?,
            head_ledger: store.cursor().await?.map_or(0, |c| c.ledger),
            ..Default::default()
        };
        let hub = Arc::new(Hub {
            store,
            view,
            cfg,
            registry: Mutex::new(registry),
            connections,
            per_ip: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            wake: Notify::new(),
            progress: Notify::new(),
            closed: Notify::new(),
            shutdown,
            parties: Mutex::new(HashMap::new()),
            fanout: OnceLock::new(),
        });
        for w in wakes {
            hub.spawn_wake(w);
        }
        // On shutdown every connection is told through its own `Kill` (its writer then closes
        // with 1001), so that no writer has to watch the shared shutdown signal.
        let weak = Arc::downgrade(&hub);
        let mut stop = hub.shutdown.clone();
        tokio::spawn(async move {
            let _ = stop.wait_for(|s| *s).await;
            if let Some(h) = weak.upgrade() {
                let r = h.registry();
                for c in r.conns.values() {
                    c.link.kill.fire(CLOSE_SHUTDOWN, REASON_SHUTDOWN);
                }
            }
        });
        let h = hub.clone();
        tokio::spawn(async move { h.feed().await });
        Ok(hub)
    }

    pub(crate) fn registry(&self) -> MutexGuard<'_, Registry> {
        lock(&self.registry)
    }

    /// `(position, ledger, epoch)` of the hub's head.
    pub fn head(&self) -> (Position, u32, u64) {
        let r = self.registry();
        (r.head, r.head_ledger, r.epoch)
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// Reserves a connection slot for `ip`, or says why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refused> {
        if *self.shutdown.borrow() {
            return Err(Refused::ShuttingDown);
        }
        let mut m = lock(&self.per_ip);
        let n = m.get(&ip).copied().unwrap_or(0);
        if self.cfg.max_connections_per_ip > 0 && n >= self.cfg.max_connections_per_ip {
            return Err(Refused::PerIp(self.cfg.max_connections_per_ip));
        }
        let total = self.connections.fetch_add(1, Ordering::AcqRel);
        if self.cfg.max_connections > 0 && total >= self.cfg.max_connections {
            self.connections.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Full(self.cfg.max_connections));
        }
        m.insert(ip, n + 1);
        Ok(Slot {
            hub: self.clone(),
            ip,
        })
    }

    /// Waits until every connection has closed, at most `timeout` (graceful shutdown).
    pub async fn drained(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let closed = self.closed.notified();
            if self.connections() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, closed).await.is_err() {
                return self.connections() == 0;
            }
        }
    }

    /// Writes the links the feeder queued frames to (see `fanout`).
    async fn write_links(&self, links: Vec<Arc<ConnLink>>) {
        fanout::write_all(&self.fanout, links).await;
    }

    /// The limits and batching of a connection's link.
    pub(crate) fn link_cfg(&self) -> LinkCfg {
        LinkCfg {
            queue: self.cfg.send_queue.max(16),
            queue_bytes: self.cfg.send_queue_bytes.max(64 * 1024),
            batch_window: self.cfg.batch_window,
            batch_max: self.cfg.batch_max.max(1),
        }
    }

    pub(crate) fn register(&self, link: Arc<ConnLink>) -> ConnId {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let cap = self.link_cfg().queue * 4;
        let mut r = self.registry();
        // Checked under the registry lock, which the shutdown sweep holds: a connection that
        // registers after the sweep closes at once.
        if *self.shutdown.borrow() {
            link.kill.fire(CLOSE_SHUTDOWN, REASON_SHUTDOWN);
        }
        r.conns.insert(
            id,
            ConnEntry {
                link,
                subs: Vec::new(),
                pending: None,
                seen: HashSet::new(),
                seen_overflow: false,
                last_offered: 0,
                buffer_cap: cap,
            },
        );
        id
    }

    pub(crate) fn unregister(&self, id: ConnId) {
        let mut r = self.registry();
        if let Some(c) = r.conns.remove(&id) {
            for s in &c.subs {
                r.remove_index(id, &s.filter);
            }
        }
    }

    fn spawn_wake(self: &Arc<Self>, w: Wake) {
        let hub = Arc::downgrade(self);
        match w {
            Wake::Notices(mut rx) => {
                tokio::spawn(async move {
                    loop {
                        let r = rx.recv().await;
                        let Some(h) = hub.upgrade() else { break };
                        match r {
                            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                                h.wake.notify_one()
                            }
                            Err(broadcast::error::RecvError::Closed) => break,
                        }
                    }
                });
            }
            Wake::Postgres(url) => {
                tokio::spawn(async move {
                    let mut backoff = Duration::from_millis(200);
                    loop {
                        if hub.strong_count() == 0 {
                            break;
                        }
                        match listen(&url, &hub).await {
                            Ok(()) => break,
                            Err(e) => {
                                tracing::warn!(error = %e, "hub: PostgreSQL LISTEN failed; the poll covers until it is back");
                                if let Some(h) = hub.upgrade() {
                                    h.wake.notify_one();
                                }
                                tokio::time::sleep(backoff).await;
                                backoff = (backoff * 2).min(Duration::from_secs(10));
                            }
                        }
                    }
                });
            }
        }
    }

    /// The feeder: one pass per wake-up or poll tick until shutdown.
    async fn feed(self: Arc<Self>) {
        let mut shutdown = self.shutdown.clone();
        let mut parties_checked = 0u64;
        loop {
            if *shutdown.borrow() {
                break;
            }
            if let Err(e) = self.pass().await {
                tracing::warn!(error = %e, "hub: reading the store failed; retrying");
            }
            self.progress.notify_waiters();
            parties_checked += 1;
            if parties_checked % 1024 == 0 {
                let mut p = lock(&self.parties);
                if p.len() > 1_000_000 {
                    p.clear();
                }
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.cfg.poll_interval) => {}
                r = shutdown.changed() => if r.is_err() {
                    // The shutdown sender is gone: so is the server.
                    break;
                },
            }
        }
    }

    /// Announces rollbacks, then dispatches every event after the head.
    async fn pass(&self) -> Result<(), StoreError> {
        'pass: loop {
            let epoch = self.store.epoch().await?;
            let known = self.registry().epoch;
            if epoch != known {
                self.rollbacks(known, epoch).await?;
                continue;
            }
            let head = self.registry().head;
            let cursor = self.store.cursor().await?.map(|c| c.ledger);
            // Pages a quarter of a connection's queue: a healthy consumer drains between them.
            let limits = self.link_cfg();
            let page = (limits.queue / 4).clamp(1, 500) as u32;
            let events = self.store.events_after(head, page).await?;
            if events.is_empty() {
                if self.store.epoch().await? != epoch {
                    continue;
                }
                let mut r = self.registry();
                if r.epoch == epoch {
                    if let Some(c) = cursor {
                        r.head_ledger = c;
                    }
                }
                return Ok(());
            }
            let t0 = std::time::Instant::now();
            let rendered = render::render(&*self.store, &self.view, &events).await?;
            let t1 = t0.elapsed();
            if self.store.epoch().await? != epoch {
                // A rollback committed while reading: announce it before anything it removed.
                continue;
            }
            {
                let mut p = lock(&self.parties);
                for r in &rendered {
                    if let (Some(id), Some(s), Some(rc)) = (r.stream_id, &r.sender, &r.recipient) {
                        p.insert(id, (s.clone(), rc.clone()));
                    }
                }
            }
            let live: Vec<Arc<LiveEvent>> = rendered
                .iter()
                .map(|r| Arc::new(r.live(epoch, false)))
                .collect();
            // Dispatched in parts of at most a quarter of a connection's byte limit too.
            let max_bytes = (limits.queue_bytes / 4).max(1);
            let mut head = head;
            let mut rest = live.as_slice();
            while !rest.is_empty() {
                let mut n = 0;
                let mut bytes = 0;
                for ev in rest {
                    if n > 0 && bytes + ev.wire.len() > max_bytes {
                        break;
                    }
                    bytes += ev.wire.len();
                    n += 1;
                }
                let (part, more) = rest.split_at(n);
                rest = more;
                let mut dirty = Vec::new();
                let sent = {
                    let mut r = self.registry();
                    if r.epoch != epoch || r.head != head {
                        // Changed under us (a rollback announced): read again from the head.
                        continue 'pass;
                    }
                    let sent = r.dispatch(part, &mut dirty);
                    if let Some(ev) = part.last() {
                        r.head = ev.position;
                        r.head_ledger = r.head_ledger.max(ev.ledger);
                        head = ev.position;
                    }
                    if let Some(c) = cursor {
                        r.head_ledger = r.head_ledger.max(c);
                    }
                    sent
                };
                let t2 = t0.elapsed();
                // The writes, outside the registry lock, spread over the runtime's workers.
                self.write_links(dirty).await;
                tracing::trace!(
                    events = part.len(),
                    frames = sent,
                    render_us = t1.as_micros() as u64,
                    queued_us = t2.as_micros() as u64,
                    total_us = t0.elapsed().as_micros() as u64,
                    "hub: page dispatched"
                );
                metrics::counter!("fluxora_ws_events_total").increment(part.len() as u64);
                metrics::counter!("fluxora_ws_frames_total").increment(sent);
                self.progress.notify_waiters();
                if !rest.is_empty() || live.len() as u32 == page {
                    // More to come: let the consumers take what this part queued.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }

    /// Reads the rollbacks between epochs `from` and `to` from the reorg log and announces them.
    async fn rollbacks(&self, from: u64, to: u64) -> Result<(), StoreError> {
        let mut log: Vec<ReorgRecord> = self
            .store
            .reorgs(10_000)
            .await?
            .into_iter()
            .filter(|r| r.epoch > from && r.epoch <= to)
            .collect();
        log.sort_by_key(|r| r.epoch);
        let mut notices: Vec<RollbackNotice> = log
            .into_iter()
            .map(|r| RollbackNotice {
                to_ledger: r.fork_ledger,
                epoch: r.epoch,
                streams: r.streams_affected,
                first_removed: r.first_position,
            })
            .collect();
        if notices.last().map(|n| n.epoch) != Some(to) {
            // The log does not explain the epoch (it should): roll back to what is stored.
            let last = self.store.last_position().await?;
            let ledger = self.store.cursor().await?.map_or(0, |c| c.ledger);
            notices.push(RollbackNotice {
                to_ledger: ledger,
                epoch: to,
                streams: Vec::new(),
                first_removed: Some(last + 1),
            });
        }
        for n in notices {
            // Parties of the affected streams: as the hub rendered them, and as stored now.
            let mut parties: HashSet<String> = HashSet::new();
            {
                let p = lock(&self.parties);
                for id in &n.streams {
                    if let Some((s, r)) = p.get(id) {
                        parties.insert(s.to_string());
                        parties.insert(r.to_string());
                    }
                }
            }
            for id in n.streams.iter().take(1000) {
                if let Some(s) = self.store.stream(*id).await? {
                    parties.insert(s.sender);
                    parties.insert(s.recipient);
                }
            }
            let dirty = self.announce(&n, &parties);
            self.write_links(dirty).await;
        }
        Ok(())
    }

    /// Queues the notice to every connection it concerns; returns the links to write.
    fn announce(&self, n: &RollbackNotice, parties: &HashSet<String>) -> Vec<Arc<ConnLink>> {
        let affected: HashSet<u64> = n.streams.iter().copied().collect();
        let mut r = self.registry();
        if let Some(fr) = n.first_removed {
            r.head = r.head.min(fr - 1);
        }
        r.head_ledger = r.head_ledger.min(n.to_ledger);
        r.epoch = n.epoch;
        let frame = wire::text(
            &json!({
                "type": "rollback",
                "toLedger": n.to_ledger,
                "epoch": n.epoch,
                "streams": n.streams.iter().map(u64::to_string).collect::<Vec<_>>(),
                "firstRemovedPosition": n.first_removed,
                "position": r.head,
                "ledger": n.to_ledger,
            })
            .to_string(),
        );
        let mut told = 0u64;
        let mut dirty = Vec::new();
        for c in r.conns.values_mut() {
            let concerned = c.seen_overflow
                || c.pending.is_some()
                || c.seen.iter().any(|s| affected.contains(s))
                || c.subs.iter().any(|s| match &s.filter {
                    Filter::All => true,
                    Filter::Stream(id) => affected.contains(id),
                    Filter::Recipient(a) | Filter::Sender(a) => parties.contains(a),
                });
            if let Some(fr) = n.first_removed {
                for s in &mut c.subs {
                    s.from = s.from.min(fr - 1);
                }
                if let Some(p) = &mut c.pending {
                    p.target = p.target.min(fr - 1);
                    p.cursor = p.cursor.min(fr - 1);
                    p.buffer.retain(|e| e.position < fr);
                }
                if c.last_offered >= fr {
                    c.last_offered = 0;
                }
            }
            if concerned {
                for id in &affected {
                    c.seen.remove(id);
                }
                if c.queue(Out::Frame(frame.clone()), &mut dirty) {
                    told += 1;
                }
            }
        }
        drop(r);
        metrics::counter!("fluxora_ws_rollbacks_total").increment(1);
        tracing::info!(
            to_ledger = n.to_ledger,
            epoch = n.epoch,
            streams = n.streams.len(),
            connections = told,
            "hub: rollback announced"
        );
        dirty
    }
}

/// `LISTEN`s until the hub is gone; a lost connection is an error (the caller reconnects).
async fn listen(url: &str, hub: &std::sync::Weak<Hub>) -> Result<(), sqlx::Error> {
    let mut l = sqlx::postgres::PgListener::connect(url).await?;
    l.listen_all([crate::store::NOTIFY_COMMITS, crate::store::NOTIFY_ROLLBACKS])
        .await?;
    // Anything committed while (re)connecting is read by position on this wake-up.
    if let Some(h) = hub.upgrade() {
        h.wake.notify_one();
    }
    loop {
        let n = l.try_recv().await?;
        let Some(h) = hub.upgrade() else {
            return Ok(());
        };
        if n.is_none() {
            tracing::warn!("hub: the LISTEN connection was lost; reconnecting");
        }
        h.wake.notify_one();
    }
}
