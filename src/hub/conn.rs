//! One WebSocket connection: a reader (client messages, limits, subscriptions, resume and replay)
//! and a writer task (pings, batch windows, close frames, and the writes of a socket that was full;
//! see `link` for who writes what).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::WriteHalf;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::link::{Link, Out, WriterWake};
use super::protocol::{
    self, codes, ClientMessage, Filter, ProtoError, Replay, Resume, Subscribe, CLOSE_PING_TIMEOUT,
    CLOSE_SHUTDOWN, CLOSE_SLOW_CONSUMER, MAX_CLIENT_MESSAGE_BYTES, RATE_LIMIT_MESSAGES,
    RATE_WINDOW, REASON_PING_TIMEOUT, REASON_SLOW_CONSUMER,
};
use super::render;
use super::wire::{self, ReadSide};
use super::{ConnId, Hub, Pending, Registry, Slot, Sub};
use crate::store::{Position, StoreError};

/// Why a resume position cannot be honoured.
#[derive(Debug, Clone)]
pub struct Stale {
    pub reason: &'static str,
    pub message: String,
}

/// Resolves and checks a resume position against the store: the epoch it is valid in, or why
/// it is stale.
pub(crate) async fn check_cursor(hub: &Hub, r: Resume) -> Result<Result<u64, Stale>, StoreError> {
    let store = &hub.store;
    let epoch = store.epoch().await?;
    let last = store.last_position().await?;
    let stale = |reason, message: String| Ok(Err(Stale { reason, message }));
    if let Some(ce) = r.epoch {
        if ce > epoch {
            return stale(
                "unknown_epoch",
                format!("epoch {ce} is ahead of the current epoch {epoch}"),
            );
        }
    }
    if r.position > last {
        return stale(
            "rolled_back",
            format!(
                "position {} is not stored (the last one is {last}): it was rolled back",
                r.position
            ),
        );
    }
    if hub.cfg.resume_window > 0 && (last - r.position) as u64 > hub.cfg.resume_window {
        return stale(
            "beyond_retention",
            format!(
                "position {} is {} events behind; resume keeps the last {}: reload through \
                 the REST API and subscribe again",
                r.position,
                last - r.position,
                hub.cfg.resume_window
            ),
        );
    }
    if r.epoch == Some(epoch) {
        return Ok(Ok(epoch));
    }
    const LOG: u32 = 10_000;
    let log = store.reorgs(LOG).await?;
    for rr in &log {
        if r.epoch.is_some_and(|ce| rr.epoch <= ce) {
            continue;
        }
        if rr.first_position.is_some_and(|f| f <= r.position) {
            return stale(
                "rolled_back",
                match r.epoch {
                    Some(ce) => format!(
                        "position {} of epoch {ce} was rolled back (reorg to ledger {}, epoch {})",
                        r.position, rr.fork_ledger, rr.epoch
                    ),
                    None => format!(
                        "position {} may have been rolled back (reorg to ledger {}, epoch {}); \
                         send the `epoch` of the frame that carried it to resume exactly",
                        r.position, rr.fork_ledger, rr.epoch
                    ),
                },
            );
        }
    }
    if let Some(ce) = r.epoch {
        let oldest = log.last().map_or(0, |l| l.epoch);
        if log.len() as u32 == LOG && oldest > ce + 1 {
            return stale(
                "beyond_retention",
                format!("epoch {ce} is older than the reorg log kept"),
            );
        }
    }
    Ok(Ok(epoch))
}

/// The credentials presented on the upgrade request.
#[derive(Debug, Clone)]
pub enum Credentials {
    None,
    Token(String),
}

fn eq_ct(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The socket of an upgraded connection.
type Socket = TokioIo<hyper::upgrade::Upgraded>;

/// The socket side a link writes to.
pub(crate) type LinkIo = WriteHalf<Socket>;

/// A connection's outgoing side, as the hub holds it.
pub(crate) type ConnLink = Link<LinkIo>;

/// Largest WebSocket message the server reads at all; between the protocol's 4096 bytes and
/// this, a message is answered with `PAYLOAD_TOO_LARGE` and the socket stays open; beyond it the
/// connection is closed with 1009.
pub const MAX_WS_READ: usize = 64 * 1024;

/// Serves one upgraded connection until it closes.
pub async fn serve(
    hub: Arc<Hub>,
    upgraded: hyper::upgrade::Upgraded,
    slot: Slot,
    creds: Credentials,
) {
    let (rd, wr) = tokio::io::split(TokioIo::new(upgraded));
    let link = Arc::new(Link::new(wr, hub.link_cfg()));
    // Client messages are small: a small read buffer keeps idle connections cheap.
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_WS_READ))
        .max_frame_size(Some(MAX_WS_READ))
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let mut stream = WebSocketStream::from_raw_socket(
        ReadSide {
            rd,
            link: link.clone(),
        },
        Role::Server,
        Some(config),
    )
    .await;
    let id = hub.register(link.clone());
    let missed = Arc::new(AtomicU32::new(0));
    let mut writer = tokio::spawn(writer(link.clone(), missed.clone(), hub.cfg.ping_interval));
    let mut writer_done = false;
    let mut conn = Conn {
        hub: hub.clone(),
        id,
        link: link.clone(),
        creds,
        rate: VecDeque::new(),
    };
    tracing::debug!(conn = id, "ws connected");
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(Message::Pong(_))) => missed.store(0, Ordering::Release),
                Some(Ok(Message::Ping(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Binary(b))) => {
                    if conn.admit_message() {
                        conn.error(
                            codes::BINARY_NOT_SUPPORTED,
                            &format!("binary frames are not accepted ({} bytes ignored); send JSON text", b.len()),
                        );
                    }
                }
                Some(Ok(Message::Text(t))) => {
                    if !conn.admit_message() {
                        continue;
                    }
                    if t.len() > MAX_CLIENT_MESSAGE_BYTES {
                        conn.error(
                            codes::PAYLOAD_TOO_LARGE,
                            &format!("a message may be at most {MAX_CLIENT_MESSAGE_BYTES} bytes (got {})", t.len()),
                        );
                        continue;
                    }
                    // Boxed: the (large) state of a resume or replay lives on the heap only
                    // while it runs, not in every idle connection's task.
                    Box::pin(conn.handle(t.as_str())).await;
                }
            },
            _ = &mut writer => {
                writer_done = true;
                break;
            }
        }
    }
    hub.unregister(id);
    drop(conn);
    // The writer ends once the queue is closed (or has already ended).
    if writer_done {
        // The server closed: read (and drop) until the client's close reply, briefly, so that
        // its last writes (pongs, the reply itself) do not meet a reset socket.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(m)) = stream.next().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    } else {
        // The client closed (tungstenite has answered it) or its socket failed: the writer sends
        // a close frame if none was sent yet, and ends.
        link.kill.fire(1000, "");
        drop(stream);
        let _ = tokio::time::timeout(Duration::from_secs(12), &mut writer).await;
        writer.abort();
    }
    drop(slot);
    tracing::debug!(conn = id, "ws disconnected");
}

struct Conn {
    hub: Arc<Hub>,
    id: ConnId,
    link: Arc<ConnLink>,
    creds: Credentials,
    /// Times of the messages accepted in the current window.
    rate: VecDeque<Instant>,
}

/// `{"type":"error",…}` with the head's position, ledger and epoch.
fn error_frame(reg: &Registry, code: &str, message: &str, extra: Option<Value>) -> Out {
    let mut v = json!({
        "type": "error",
        "code": code,
        "message": message,
        "position": reg.head,
        "ledger": reg.head_ledger,
        "epoch": reg.epoch,
    });
    if let (Some(Value::Object(x)), Some(o)) = (extra, v.as_object_mut()) {
        o.extend(x);
    }
    Out::text(&v.to_string())
}

fn control(reg: &Registry, mut v: Value) -> Out {
    if let Some(o) = v.as_object_mut() {
        o.insert("position".into(), json!(reg.head));
        o.insert("ledger".into(), json!(reg.head_ledger));
        o.insert("epoch".into(), json!(reg.epoch));
    }
    Out::text(&v.to_string())
}

impl Conn {
    /// Counts a client message against the rate limit; answers `RATE_LIMIT_EXCEEDED` when over.
    fn admit_message(&mut self) -> bool {
        let now = Instant::now();
        while self
            .rate
            .front()
            .is_some_and(|t| now.duration_since(*t) >= RATE_WINDOW)
        {
            self.rate.pop_front();
        }
        if self.rate.len() >= RATE_LIMIT_MESSAGES {
            let retry = self.rate.front().map_or(RATE_WINDOW, |t| {
                RATE_WINDOW.saturating_sub(now.duration_since(*t))
            });
            let reg = self.hub.registry();
            let f = error_frame(
                &reg,
                codes::RATE_LIMIT_EXCEEDED,
                &format!(
                    "at most {RATE_LIMIT_MESSAGES} messages per {} s; this one was ignored",
                    RATE_WINDOW.as_secs()
                ),
                Some(json!({ "retryAfterMs": retry.as_millis() as u64 })),
            );
            drop(reg);
            self.push(f);
            return false;
        }
        self.rate.push_back(now);
        true
    }

    /// Sends a frame of this connection's own (written now, after what is queued).
    fn push(&self, out: Out) -> bool {
        self.link.send(out)
    }

    fn error(&self, code: &str, message: &str) {
        self.error_with(code, message, None);
    }

    fn error_with(&self, code: &str, message: &str, extra: Option<Value>) {
        let f = error_frame(&self.hub.registry(), code, message, extra);
        self.push(f);
    }

    async fn handle(&mut self, text: &str) {
        let msg = match protocol::parse(text) {
            Ok(m) => m,
            Err(ProtoError { code, message }) => return self.error(code, &message),
        };
        let r = match msg {
            ClientMessage::Subscribe(s) => self.subscribe(s).await,
            ClientMessage::Unsubscribe(f) => {
                self.unsubscribe(f);
                Ok(())
            }
            ClientMessage::Replay(r) => self.replay(r).await,
            ClientMessage::Ping => {
                let f = control(&self.hub.registry(), json!({ "type": "pong" }));
                self.push(f);
                Ok(())
            }
        };
        if let Err(e) = r {
            tracing::warn!(conn = self.id, error = %e, "ws: store error while serving a message");
            self.error(
                codes::INTERNAL_ERROR,
                "the store could not be read; try again",
            );
        }
    }

    async fn subscribe(&mut self, s: Subscribe) -> Result<(), StoreError> {
        {
            let mut reg = self.hub.registry();
            let n = reg.conns.get(&self.id).map_or(0, |c| c.subs.len());
            let existing = reg
                .conns
                .get_mut(&self.id)
                .and_then(|c| c.subs.iter_mut().find(|x| x.filter == s.filter));
            if let Some(sub) = existing {
                sub.batching = s.batching;
                let f = control(
                    &reg,
                    json!({
                        "type": "subscribed",
                        "subscription": s.filter.to_json(),
                        "batching": s.batching,
                        "alreadySubscribed": true,
                    }),
                );
                drop(reg);
                self.push(f);
                return Ok(());
            }
            if n >= self.hub.cfg.max_subscriptions {
                let f = error_frame(
                    &reg,
                    codes::RATE_LIMIT_EXCEEDED,
                    &format!(
                        "at most {} subscriptions per connection",
                        self.hub.cfg.max_subscriptions
                    ),
                    None,
                );
                drop(reg);
                self.push(f);
                return Ok(());
            }
        }
        match &s.filter {
            Filter::All => {
                if let Some(key) = &self.hub.cfg.firehose_key {
                    match &self.creds {
                        Credentials::None => {
                            self.error(
                                codes::UNAUTHORIZED,
                                "the all-streams subscription needs the admin key \
                                 (Authorization: Bearer … or ?token=… on the upgrade request)",
                            );
                            return Ok(());
                        }
                        Credentials::Token(t) if !eq_ct(t, key) => {
                            self.error(
                                codes::FORBIDDEN,
                                "the key presented does not allow the all-streams subscription",
                            );
                            return Ok(());
                        }
                        Credentials::Token(_) => {}
                    }
                }
            }
            Filter::Stream(id) => {
                if self.hub.store.stream(*id).await?.is_none() {
                    self.error(codes::NOT_FOUND, &format!("stream {id} not found"));
                    return Ok(());
                }
            }
            Filter::Recipient(_) | Filter::Sender(_) => {}
        }
        let Some(resume) = s.resume else {
            let mut reg = self.hub.registry();
            let head = reg.head;
            let f = control(
                &reg,
                json!({
                    "type": "subscribed",
                    "subscription": s.filter.to_json(),
                    "batching": s.batching,
                    "resumeFrom": Value::Null,
                }),
            );
            let Some(c) = reg.conns.get_mut(&self.id) else {
                return Ok(());
            };
            c.subs.push(Sub {
                filter: s.filter.clone(),
                batching: s.batching,
                from: head,
                live: true,
            });
            c.send(f);
            reg.add_index(self.id, &s.filter);
            return Ok(());
        };
        // Resume: register at a head whose epoch is the one the cursor was checked in.
        let mut tries = 0;
        let target = loop {
            tries += 1;
            let epoch = match check_cursor(&self.hub, resume).await? {
                Ok(e) => e,
                Err(stale) => {
                    self.error_with(
                        codes::STALE_CURSOR,
                        &stale.message,
                        Some(json!({
                            "reason": stale.reason,
                            "resumeFrom": resume.position,
                            "subscription": s.filter.to_json(),
                        })),
                    );
                    return Ok(());
                }
            };
            let progressed = self.hub.progress.notified();
            {
                let mut reg = self.hub.registry();
                if reg.epoch == epoch {
                    let head = reg.head;
                    let replay = resume.position < head;
                    let f = control(
                        &reg,
                        json!({
                            "type": "subscribed",
                            "subscription": s.filter.to_json(),
                            "batching": s.batching,
                            "resumeFrom": resume.position,
                            "replayThrough": if replay { json!(head) } else { Value::Null },
                        }),
                    );
                    let Some(c) = reg.conns.get_mut(&self.id) else {
                        return Ok(());
                    };
                    c.subs.push(Sub {
                        filter: s.filter.clone(),
                        batching: s.batching,
                        from: resume.position,
                        live: !replay,
                    });
                    if replay {
                        c.pending = Some(Pending {
                            filter: s.filter.clone(),
                            target: head,
                            cursor: resume.position,
                            buffer: Vec::new(),
                        });
                    }
                    c.send(f);
                    reg.add_index(self.id, &s.filter);
                    if !replay {
                        return Ok(());
                    }
                    break head;
                }
            }
            if tries > 100 {
                self.error(
                    codes::INTERNAL_ERROR,
                    "the hub is catching up with a rollback; try again",
                );
                return Ok(());
            }
            // The hub has not announced the store's latest rollback yet.
            let _ = tokio::time::timeout(Duration::from_millis(100), progressed).await;
        };
        let r = self
            .resume(&s.filter, s.batching, resume.position, target)
            .await;
        if r.is_err() {
            // Leave no half-resumed subscription behind.
            let mut reg = self.hub.registry();
            if let Some(c) = reg.conns.get_mut(&self.id) {
                c.pending = None;
                c.subs.retain(|x| x.filter != s.filter);
            }
            reg.remove_index(self.id, &s.filter);
        }
        r
    }

    /// Waits until the queue has room for a page (the live path must never find it full
    /// because of a replay). False when the connection is closing.
    async fn room(&self) -> bool {
        let want = self.link.cfg().queue / 2;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.link.is_closing() || self.link.kill.reason().is_some() {
                return false;
            }
            if self.link.queued() <= want {
                return true;
            }
            if Instant::now() > deadline {
                self.link
                    .kill
                    .fire(CLOSE_SLOW_CONSUMER, REASON_SLOW_CONSUMER);
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn page_size(&self) -> u32 {
        (self.link.cfg().queue / 4).clamp(4, 200) as u32
    }

    /// Stored events matching `f` in `(cursor, target]`, rendered, at most about `n`, and how
    /// far the read covered. Address filters match the parties of each event's stream as of its
    /// ledger (as the live path does), so they read every event and keep theirs.
    async fn fetch(
        &self,
        f: &Filter,
        cursor: Position,
        target: Position,
        n: u32,
    ) -> Result<(Vec<render::Rendered>, Position), StoreError> {
        let store = &self.hub.store;
        let mut evs = match f {
            Filter::Stream(id) => store.stream_events(*id, cursor, n).await?,
            _ => store.events_after(cursor, n).await?,
        };
        let upto = if (evs.len() as u32) < n {
            target
        } else {
            evs.last().map_or(target, |e| e.position.min(target))
        };
        evs.retain(|e| e.position <= upto);
        let mut rendered = render::render(&**store, &self.hub.view, &evs).await?;
        rendered.retain(|r| f.matches(r.stream_id, r.sender.as_deref(), r.recipient.as_deref()));
        Ok((rendered, upto))
    }

    /// Replays the stored events of a pending subscription up to its target, then flushes what
    /// the feeder buffered meanwhile and makes it live.
    async fn resume(
        &mut self,
        filter: &Filter,
        batching: bool,
        from: Position,
        target: Position,
    ) -> Result<(), StoreError> {
        let n = self.page_size();
        let mut replayed = 0u64;
        tracing::debug!(conn = self.id, from, target, "ws: resuming");
        loop {
            let (cursor, target, epoch) = {
                let reg = self.hub.registry();
                let Some(p) = reg.conns.get(&self.id).and_then(|c| c.pending.as_ref()) else {
                    return Ok(());
                };
                (p.cursor, p.target, reg.epoch)
            };
            if cursor >= target {
                let mut reg = self.hub.registry();
                if reg.epoch != epoch {
                    continue;
                }
                let done = control(
                    &reg,
                    json!({
                        "type": "resumed",
                        "subscription": filter.to_json(),
                        "resumeFrom": from,
                        "replayed": replayed,
                    }),
                );
                let Some(c) = reg.conns.get_mut(&self.id) else {
                    return Ok(());
                };
                let Some(p) = c.pending.take() else {
                    return Ok(());
                };
                if p.cursor < p.target {
                    c.pending = Some(p);
                    continue;
                }
                // Queued together, written once.
                c.link.push(done);
                for ev in p.buffer {
                    c.note_stream(ev.stream_id);
                    let out = Out::Event {
                        ev,
                        batch: batching,
                    };
                    if c.link.push(out).is_none() {
                        break;
                    }
                }
                c.link.write();
                if let Some(sub) = c.subs.iter_mut().find(|x| x.filter == *filter) {
                    sub.live = true;
                }
                return Ok(());
            }
            if !self.room().await {
                return Ok(());
            }
            if self.hub.store.epoch().await? != epoch {
                // A rollback the hub has not announced yet: let it go first.
                let progressed = self.hub.progress.notified();
                if self.hub.registry().epoch == epoch {
                    let _ = tokio::time::timeout(Duration::from_millis(100), progressed).await;
                }
                continue;
            }
            let (rendered, upto) = self.fetch(filter, cursor, target, n).await?;
            if self.hub.store.epoch().await? != epoch {
                continue;
            }
            let mut reg = self.hub.registry();
            if reg.epoch != epoch {
                continue;
            }
            let Some(c) = reg.conns.get_mut(&self.id) else {
                return Ok(());
            };
            let Some(p) = c.pending.as_ref() else {
                return Ok(());
            };
            if p.cursor != cursor {
                continue;
            }
            let limit = p.target;
            let mut queued = Vec::new();
            for r in &rendered {
                if r.position <= cursor || r.position > limit {
                    continue;
                }
                let ev = Arc::new(r.live(epoch, true));
                if c.live_covers(&ev, Some(filter)) {
                    continue;
                }
                queued.push(ev);
            }
            for ev in queued {
                c.note_stream(ev.stream_id);
                replayed += 1;
                let out = Out::Event {
                    ev,
                    batch: batching,
                };
                if c.link.push(out).is_none() {
                    return Ok(());
                }
            }
            c.link.write();
            if let Some(p) = c.pending.as_mut() {
                p.cursor = upto.min(p.target).max(cursor);
                if upto <= cursor {
                    p.cursor = p.target;
                }
            }
        }
    }

    fn unsubscribe(&mut self, f: Filter) {
        let mut reg = self.hub.registry();
        let removed = reg.conns.get_mut(&self.id).is_some_and(|c| {
            let before = c.subs.len();
            c.subs.retain(|s| s.filter != f);
            before != c.subs.len()
        });
        if !removed {
            let e = error_frame(
                &reg,
                codes::NOT_FOUND,
                "no such subscription on this connection",
                Some(json!({ "subscription": f.to_json() })),
            );
            drop(reg);
            self.push(e);
            return;
        }
        reg.remove_index(self.id, &f);
        let ack = control(
            &reg,
            json!({ "type": "unsubscribed", "subscription": f.to_json() }),
        );
        if let Some(c) = reg.conns.get_mut(&self.id) {
            c.send(ack);
        }
    }

    /// The position before the first event at or after `ledger`.
    async fn position_before_ledger(&self, ledger: u32) -> Result<Position, StoreError> {
        let store = &self.hub.store;
        let tip = store.tip().await?.map_or(0, |t| t.sequence);
        let mut from = ledger.max(store.first_ledger().await?.unwrap_or(ledger));
        while from <= tip {
            let to = from.saturating_add(999).min(tip);
            if let Some(e) = store.events_in_ledgers(from, to).await?.first() {
                return Ok(e.position - 1);
            }
            if to == u32::MAX {
                break;
            }
            from = to + 1;
        }
        store.last_position().await
    }

    /// The one-shot `replay`: stored events after a cursor as `stream_replay` frames, then
    /// `stream_replay_complete` (its `cursor` continues the replay, `null` at the end).
    async fn replay(&mut self, r: Replay) -> Result<(), StoreError> {
        const SCAN_CAP: usize = 20_000;
        let store = self.hub.store.clone();
        let mut pos: Position = if let Some(eid) = &r.after_event_id {
            match store.event_by_id(eid).await? {
                Some(e) => e.position,
                None => {
                    self.error_with(
                        codes::STALE_CURSOR,
                        &format!("event {eid} is not stored (rolled back, or never was)"),
                        Some(json!({ "reason": "unknown_event", "afterEventId": eid })),
                    );
                    return Ok(());
                }
            }
        } else if let Some(res) = r.resume {
            match check_cursor(&self.hub, res).await? {
                Ok(_) => res.position,
                Err(stale) => {
                    self.error_with(
                        codes::STALE_CURSOR,
                        &stale.message,
                        Some(json!({ "reason": stale.reason, "resumeFrom": res.position })),
                    );
                    return Ok(());
                }
            }
        } else if let Some(l) = r.from_ledger {
            self.position_before_ledger(l).await?
        } else {
            0
        };
        let filter = r.filter.clone().unwrap_or(Filter::All);
        let epoch = store.epoch().await?;
        let mut sent = 0u32;
        let mut scanned = 0usize;
        let mut last_id: Option<String> = None;
        let mut exhausted = false;
        let page = self.page_size();
        'outer: while sent < r.limit && scanned < SCAN_CAP {
            if !self.room().await {
                return Ok(());
            }
            let evs = match &filter {
                Filter::Stream(id) => store.stream_events(*id, pos, page).await?,
                _ => store.events_after(pos, page).await?,
            };
            if evs.is_empty() {
                exhausted = true;
                break;
            }
            scanned += evs.len();
            let mut take = Vec::new();
            for e in evs {
                if r.to_ledger.is_some_and(|t| e.event.ledger > t) {
                    exhausted = true;
                    let rendered = render::render(&*store, &self.hub.view, &take).await?;
                    self.send_replayed(&rendered, &filter, epoch);
                    break 'outer;
                }
                pos = e.position;
                last_id = Some(e.event.event_id.clone());
                let ok = r.from_ledger.is_none_or(|l| e.event.ledger >= l)
                    && r.topic.as_ref().is_none_or(|t| *t == e.event.topic);
                if ok {
                    take.push(e);
                    sent += 1;
                    if sent >= r.limit {
                        break;
                    }
                }
            }
            let rendered = render::render(&*store, &self.hub.view, &take).await?;
            sent -= self.send_replayed(&rendered, &filter, epoch);
        }
        if !exhausted {
            // Nothing more when the next event is beyond what exists.
            exhausted = store.events_after(pos, 1).await?.is_empty();
        }
        let f = control(
            &self.hub.registry(),
            json!({
                "type": "stream_replay_complete",
                "cursor": if exhausted { Value::Null } else { json!(last_id) },
                "lastEventId": last_id,
                "hasMore": !exhausted,
                "replayed": sent,
                "replayPosition": pos,
            }),
        );
        self.push(f);
        Ok(())
    }

    /// Sends the replay frames of the events `filter` matches; returns how many it skipped.
    fn send_replayed(&self, rendered: &[render::Rendered], filter: &Filter, epoch: u64) -> u32 {
        let mut skipped = 0;
        for r in rendered {
            if !filter.matches(r.stream_id, r.sender.as_deref(), r.recipient.as_deref()) {
                skipped += 1;
                continue;
            }
            if !self.push(Out::text(&r.replay_frame(epoch))) {
                break;
            }
        }
        skipped
    }
}

/// The connection's writer task: pings (two unanswered ones close the connection), batches whose
/// window ended, the writes of a socket that was full, and the close frame with its code and
/// reason. Frames are mostly written by whoever queues them (see `link`); this task is woken
/// only when it has something of its own to do.
async fn writer(link: Arc<ConnLink>, missed: Arc<AtomicU32>, ping_every: Duration) {
    let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    // Slow-consumer, shutdown and end-of-reader closes all arrive through `kill`.
    let killed = link.kill.fired();
    tokio::pin!(killed);
    let close: Option<(u16, &'static str)> = loop {
        let due = link.next_due();
        tokio::select! {
            biased;
            r = &mut killed => break Some(r),
            _ = ping.tick() => {
                if missed.fetch_add(1, Ordering::AcqRel) >= 2 {
                    break Some((CLOSE_PING_TIMEOUT, REASON_PING_TIMEOUT));
                }
                link.push_control(wire::ping());
            }
            _ = async { tokio::time::sleep_until(due.unwrap_or_else(Instant::now)).await }, if due.is_some() => {
                link.flush_due(Instant::now());
            }
            w = std::future::poll_fn(|cx| link.poll_writer(cx)) => match w {
                WriterWake::Rearm => {}
                WriterWake::CloseSent | WriterWake::Failed => break None,
            },
        }
    };
    if let Some((code, reason)) = close {
        if code == CLOSE_SLOW_CONSUMER {
            metrics::counter!("fluxora_ws_slow_consumers_total").increment(1);
        }
        // A consumer that is merely slow still gets the reason once it drains its backlog (what
        // is half written goes first: frames stay whole).
        link.close(code, reason);
        let wait = if code == CLOSE_SHUTDOWN { 3 } else { 10 };
        let _ = tokio::time::timeout(
            Duration::from_secs(wait),
            std::future::poll_fn(|cx| link.poll_flushed(cx)),
        )
        .await;
    }
    link.finish();
}
