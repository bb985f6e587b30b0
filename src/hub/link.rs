//! A connection's outgoing side, shared by everyone who sends to it.
//!
//! Frames are queued in the link's [`Outbox`] (in order, whole) and written to the socket by
//! whoever is at hand, without waking the connection's writer task:
//!
//! - the feeder queues a page's frames to every connection under the registry lock, then writes
//!   the queued connections out on every CPU at once (`fanout`); a commit's fan-out is one
//!   non-blocking write per connection and no task wake-up;
//! - a connection's reader writes its own answers (acknowledgements, errors, replays, the pongs and
//!   close replies tungstenite makes) right after queueing them;
//! - the connection's writer task (`conn::writer`) takes over only when the socket is full: a
//!   write that the socket refuses marks the link *blocked* and wakes the writer, which waits for
//!   the socket to take more and writes the rest. While blocked, nobody else writes. The writer
//!   also sends pings, the batches whose window ended, and the close frame.
//!
//! Everything happens under the link's own lock, held only for queueing and non-blocking writes.
//! The invariant after every write attempt: the outbox is empty, or the link is blocked (the
//! writer owns it), or the link is finished.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWrite;
use tokio::time::Instant;

use super::protocol::{CLOSE_SLOW_CONSUMER, REASON_SLOW_CONSUMER};
use super::render::{batch_frame, LiveEvent};
use super::wire::{self, Outbox};

/// What is sent to a connection.
#[derive(Debug)]
pub(crate) enum Out {
    /// A frame, already framed (see [`wire`]).
    Frame(Bytes),
    /// Bytes tungstenite wrote itself (a pong, a close reply), already framed.
    Raw(Bytes),
    Event {
        ev: Arc<LiveEvent>,
        batch: bool,
    },
    /// A whole page of events for a connection whose only subscription is all-streams.
    Page {
        events: Arc<[Arc<LiveEvent>]>,
        /// The events' frames back to back: what a non-batching connection writes as it is
        /// (empty for a batching one, which frames its batches itself).
        wire: Bytes,
        batch: bool,
    },
}

impl Out {
    /// A text frame.
    pub fn text(payload: &str) -> Out {
        Out::Frame(wire::text(payload))
    }
}

/// Fired once to close a connection with a code and reason (a slow consumer, the server shutting
/// down, a ping timeout, or the reader gone).
///
/// The writer polls it on every wake-up, so it is an atomic waker beside a once-set reason: no
/// lock, no state shared between connections.
#[derive(Debug, Default)]
pub(crate) struct Kill {
    reason: OnceLock<(u16, &'static str)>,
    waker: futures::task::AtomicWaker,
}

impl Kill {
    pub fn fire(&self, code: u16, reason: &'static str) {
        if self.reason.set((code, reason)).is_ok() {
            self.waker.wake();
        }
    }
    pub fn reason(&self) -> Option<(u16, &'static str)> {
        self.reason.get().copied()
    }
    /// Resolves once fired, to the code and reason.
    pub fn fired(&self) -> Fired<'_> {
        Fired(self)
    }
}

/// The future of [`Kill::fired`].
pub(crate) struct Fired<'a>(&'a Kill);

impl std::future::Future for Fired<'_> {
    type Output = (u16, &'static str);
    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(r) = self.0.reason() {
            return Poll::Ready(r);
        }
        self.0.waker.register(cx.waker());
        // Fired between the check and the registration: seen now.
        match self.0.reason() {
            Some(r) => Poll::Ready(r),
            None => Poll::Pending,
        }
    }
}

/// Limits and batching settings of a link.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LinkCfg {
    /// Chunks queued at most before the connection is closed as a slow consumer.
    pub queue: usize,
    /// Bytes queued at most, likewise.
    pub queue_bytes: usize,
    pub batch_window: Duration,
    pub batch_max: usize,
}

/// One stream's events waiting to go out as a `stream_update_batch`.
#[derive(Debug)]
struct Batch {
    stream: Option<u64>,
    events: Vec<Arc<LiveEvent>>,
    due: Instant,
}

#[derive(Debug)]
struct State<W> {
    io: W,
    outbox: Outbox,
    batches: Vec<Batch>,
    /// The socket refused a write: the writer task waits for it and writes the rest.
    blocked: bool,
    /// Frames are no longer accepted (closing, or over the queue's limits).
    closing: bool,
    /// A close frame was queued (by tungstenite, answering the client's).
    close_sent: bool,
    /// Nothing is written any more: a write failed, or the writer ended (while the writer runs,
    /// only a failed write sets it).
    finished: bool,
    /// The batches changed: the writer re-arms its timer.
    rearm: bool,
    /// The writer task, to wake when it has to take over.
    writer: Option<Waker>,
}

/// What the writer task is woken for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WriterWake {
    /// The batches changed (a new one, with its own deadline).
    Rearm,
    /// A close frame tungstenite made was written: the connection is over.
    CloseSent,
    /// The socket failed.
    Failed,
}

/// A connection's outgoing side (see the module docs).
#[derive(Debug)]
pub(crate) struct Link<W> {
    state: Mutex<State<W>>,
    pub kill: Kill,
    cfg: LinkCfg,
}

impl<W: AsyncWrite + Unpin> Link<W> {
    pub fn new(io: W, cfg: LinkCfg) -> Link<W> {
        Link {
            state: Mutex::new(State {
                io,
                outbox: Outbox::default(),
                batches: Vec::new(),
                blocked: false,
                closing: false,
                close_sent: false,
                finished: false,
                rearm: false,
                writer: None,
            }),
            kill: Kill::default(),
            cfg,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<W>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `out`. `None` when it was not accepted (the connection is closing; over the
    /// queue's limits it is closed as a slow consumer); otherwise whether the link needs a write
    /// from the caller (it was idle: nobody else is about to write it). Callers that get
    /// `Some(true)` call [`Link::write`] (now or after releasing their own locks).
    pub fn push(&self, out: Out) -> Option<bool> {
        let mut st = self.lock();
        if st.closing {
            return None;
        }
        let idle = st.outbox.is_empty() && !st.blocked;
        match out {
            Out::Frame(b) => {
                flush_batches(&mut st);
                st.outbox.push(b);
            }
            Out::Raw(b) => {
                if wire::is_close(&b) {
                    // tungstenite answered the client's close: nothing may follow it.
                    flush_batches(&mut st);
                    st.close_sent = true;
                    st.closing = true;
                }
                st.outbox.push(b);
            }
            Out::Event { ev, batch } => self.add_event(&mut st, &ev, batch),
            Out::Page {
                events,
                wire,
                batch,
            } => {
                if batch {
                    for ev in events.iter() {
                        self.add_event(&mut st, ev, true);
                    }
                } else {
                    // The page's frames, shared by every connection: no copy.
                    flush_batches(&mut st);
                    st.outbox.push(wire);
                }
            }
        }
        if st.rearm {
            if let Some(w) = &st.writer {
                w.wake_by_ref();
            }
        }
        if st.outbox.len() > self.cfg.queue || st.outbox.bytes() > self.cfg.queue_bytes {
            st.closing = true;
            drop(st);
            self.kill.fire(CLOSE_SLOW_CONSUMER, REASON_SLOW_CONSUMER);
            return None;
        }
        Some(idle && !st.outbox.is_empty())
    }

    /// Queues an event's frame, or adds it to its stream's batch (framed when full).
    fn add_event(&self, st: &mut State<W>, ev: &Arc<LiveEvent>, batch: bool) {
        if !batch || self.cfg.batch_max <= 1 {
            flush_batches(st);
            st.outbox.push(if batch {
                wire::text(&batch_frame(std::slice::from_ref(ev)))
            } else {
                ev.wire.clone()
            });
            return;
        }
        match st.batches.iter().position(|b| b.stream == ev.stream_id) {
            Some(i) => {
                st.batches[i].events.push(ev.clone());
                if st.batches[i].events.len() >= self.cfg.batch_max {
                    let b = st.batches.remove(i);
                    st.outbox.push(wire::text(&batch_frame(&b.events)));
                }
            }
            None => {
                st.batches.push(Batch {
                    stream: ev.stream_id,
                    events: vec![ev.clone()],
                    due: Instant::now() + self.cfg.batch_window,
                });
                st.rearm = true;
            }
        }
    }

    /// Writes what is queued without waiting: as much as the socket takes now. When it takes
    /// less, the writer task is woken to wait for it; a blocked or finished link is left alone.
    pub fn write(&self) {
        let mut st = self.lock();
        if st.blocked || st.finished || st.outbox.is_empty() {
            return;
        }
        let mut cx = Context::from_waker(Waker::noop());
        let st = &mut *st;
        match st.outbox.poll_write_all(&mut st.io, &mut cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(_)) => {
                st.finished = true;
                st.closing = true;
                if let Some(w) = &st.writer {
                    w.wake_by_ref();
                }
            }
            Poll::Pending => {
                // The socket registered a waker that wakes nobody: the writer polls it again
                // with its own and waits.
                metrics::counter!("fluxora_ws_socket_full_total").increment(1);
                st.blocked = true;
                if let Some(w) = &st.writer {
                    w.wake_by_ref();
                }
            }
        }
    }

    /// Queues `out` and writes it now (a connection answering its own client).
    pub fn send(&self, out: Out) -> bool {
        match self.push(out) {
            Some(write) => {
                if write {
                    self.write();
                }
                true
            }
            None => false,
        }
    }

    /// The writer task's side: writes what is queued with the writer's own waker, and resolves
    /// when the writer has something else to do.
    pub fn poll_writer(&self, cx: &mut Context<'_>) -> Poll<WriterWake> {
        let mut st = self.lock();
        if !st.writer.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            st.writer = Some(cx.waker().clone());
        }
        if st.finished {
            return Poll::Ready(WriterWake::Failed);
        }
        if std::mem::take(&mut st.rearm) {
            return Poll::Ready(WriterWake::Rearm);
        }
        let st = &mut *st;
        match st.outbox.poll_write_all(&mut st.io, cx) {
            Poll::Ready(Ok(())) => st.blocked = false,
            Poll::Ready(Err(_)) => {
                st.finished = true;
                st.closing = true;
                return Poll::Ready(WriterWake::Failed);
            }
            Poll::Pending => {
                st.blocked = true;
                return Poll::Pending;
            }
        }
        if st.close_sent {
            return Poll::Ready(WriterWake::CloseSent);
        }
        Poll::Pending
    }

    /// When the first waiting batch is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.lock().batches.iter().map(|b| b.due).min()
    }

    /// Frames the batches whose window has ended (the writer writes them next).
    pub fn flush_due(&self, now: Instant) {
        let mut st = self.lock();
        let due: Vec<Batch> = {
            let (due, keep) = std::mem::take(&mut st.batches)
                .into_iter()
                .partition(|b| b.due <= now);
            st.batches = keep;
            due
        };
        for b in due {
            st.outbox.push(wire::text(&batch_frame(&b.events)));
        }
    }

    /// Queues a frame of the writer's own (a ping), whatever the queue's limits.
    pub fn push_control(&self, b: Bytes) {
        let mut st = self.lock();
        if !st.closing {
            st.outbox.push(b);
        }
    }

    /// Stops accepting frames and queues the close frame after what is waiting (batches
    /// included), unless a close was already sent. The writer then writes it all out.
    pub fn close(&self, code: u16, reason: &str) {
        let mut st = self.lock();
        st.closing = true;
        if !st.close_sent && !st.finished {
            flush_batches(&mut st);
            st.outbox.push(wire::close(code, reason));
            st.close_sent = true;
        }
    }

    /// The writer's last writes: resolves once everything queued is written (or the socket
    /// failed).
    pub fn poll_flushed(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = self.lock();
        if st.finished {
            return Poll::Ready(());
        }
        st.writer = Some(cx.waker().clone());
        let st = &mut *st;
        match st.outbox.poll_write_all(&mut st.io, cx) {
            Poll::Ready(_) => Poll::Ready(()),
            Poll::Pending => {
                st.blocked = true;
                Poll::Pending
            }
        }
    }

    /// Nothing is written any more.
    pub fn finish(&self) {
        let mut st = self.lock();
        st.closing = true;
        st.finished = true;
        st.writer = None;
    }

    /// Chunks queued (a replay waits for room before queueing more).
    pub fn queued(&self) -> usize {
        self.lock().outbox.len()
    }

    /// Is the link closing (no frame is accepted any more)?
    pub fn is_closing(&self) -> bool {
        self.lock().closing
    }

    pub fn cfg(&self) -> &LinkCfg {
        &self.cfg
    }
}

fn flush_batches<W>(st: &mut State<W>) {
    for b in std::mem::take(&mut st.batches) {
        st.outbox.push(wire::text(&batch_frame(&b.events)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn cfg() -> LinkCfg {
        LinkCfg {
            queue: 8,
            queue_bytes: 1 << 20,
            batch_window: Duration::from_millis(50),
            batch_max: 3,
        }
    }

    #[tokio::test]
    async fn an_idle_link_is_written_by_its_caller() {
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let link = Link::new(a, cfg());
        assert_eq!(link.push(Out::text("one")), Some(true));
        // Not idle any more until written: the first caller writes for both.
        assert_eq!(link.push(Out::text("two")), Some(false));
        link.write();
        assert_eq!(link.queued(), 0);
        let mut got = vec![0u8; 10];
        b.read_exact(&mut got).await.unwrap();
        let mut expect = wire::text("one").to_vec();
        expect.extend_from_slice(&wire::text("two"));
        assert_eq!(got, expect);
    }

    /// A socket that takes nothing more blocks the link: the writer task finishes the job, and
    /// frames come out whole and in order.
    #[tokio::test]
    async fn a_full_socket_hands_over_to_the_writer() {
        let (a, mut b) = tokio::io::duplex(16);
        let link = Arc::new(Link::new(a, cfg()));
        let long = "z".repeat(100);
        assert_eq!(link.push(Out::text(&long)), Some(true));
        link.write();
        assert_eq!(link.queued(), 1, "the socket took 16 bytes of 102");
        // Blocked: another caller neither writes nor is asked to.
        assert_eq!(link.push(Out::text("next")), Some(false));
        let w = link.clone();
        let writer = tokio::spawn(async move {
            std::future::poll_fn(|cx| match w.poll_writer(cx) {
                Poll::Ready(r) => Poll::Ready(r),
                Poll::Pending if w.queued() == 0 => Poll::Ready(WriterWake::Rearm),
                Poll::Pending => Poll::Pending,
            })
            .await
        });
        let mut got = vec![0u8; 102 + 6];
        b.read_exact(&mut got).await.unwrap();
        writer.await.unwrap();
        let mut expect = wire::text(&long).to_vec();
        expect.extend_from_slice(&wire::text("next"));
        assert_eq!(got, expect);
    }

    #[tokio::test]
    async fn over_the_queue_limit_is_a_slow_consumer() {
        let (a, _b) = tokio::io::duplex(1);
        let link = Link::new(a, cfg());
        let mut accepted = 0;
        for _ in 0..20 {
            if link.push(Out::text("x")).is_some() {
                accepted += 1;
            }
            link.write();
        }
        assert!(accepted <= 9, "{accepted}");
        assert_eq!(
            link.kill.reason(),
            Some((CLOSE_SLOW_CONSUMER, REASON_SLOW_CONSUMER))
        );
        assert!(link.is_closing());
    }

    #[tokio::test]
    async fn close_goes_after_the_backlog_and_only_once() {
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let link = Link::new(a, cfg());
        link.push(Out::text("last"));
        link.close(1001, "bye");
        link.close(1000, "again");
        assert_eq!(link.push(Out::text("late")), None);
        std::future::poll_fn(|cx| link.poll_flushed(cx)).await;
        link.finish();
        drop(link);
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        let mut expect = wire::text("last").to_vec();
        expect.extend_from_slice(&wire::close(1001, "bye"));
        assert_eq!(got, expect);
    }
}
