//! Writing a commit's frames to every connection it was queued for, on every CPU at once.
//!
//! The feeder queues a page to each connection's link under the registry lock (see `link`); the
//! writes then happen here. A large fan-out goes to a small pool of threads, one per CPU, each
//! pinned to its CPU, that take the next few links from a shared cursor until none is left. A
//! thread whose CPU is also busy with something else (the database, another process) simply
//! takes fewer links, so the pool uses whatever share of each CPU it gets and all threads finish
//! together; pinned, two of its threads never end up sharing one CPU while another CPU runs
//! something else (the kernel's balancer cannot tell that placement from the good one). The
//! threads only make non-blocking writes and spawn nothing, so their pinning stays theirs. A
//! small fan-out is written by the caller. The async runtime's workers are not used for the
//! writes, so they stay free for requests during a burst.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};

use tokio::io::AsyncWrite;
use tokio::sync::oneshot;

use super::link::Link;

/// Below this many links, the caller writes them itself.
const POOL_FROM: usize = 512;
/// Links a thread takes at a time.
const STEP: usize = 32;

/// One fan-out: the links, the cursor the threads share, and who is told when all are done.
struct Job<W> {
    links: Vec<Arc<Link<W>>>,
    next: AtomicUsize,
    /// Threads still writing.
    left: AtomicUsize,
    done: Mutex<Option<oneshot::Sender<()>>>,
}

impl<W: AsyncWrite + Unpin> Job<W> {
    /// Writes links from the shared cursor on until none is left, then counts this thread done
    /// (also if a write panics: the feeder is never left waiting).
    fn run(&self) {
        let _done = Done(self);
        loop {
            let from = self.next.fetch_add(STEP, Ordering::Relaxed);
            if from >= self.links.len() {
                break;
            }
            for l in &self.links[from..(from + STEP).min(self.links.len())] {
                l.write();
            }
        }
    }

    /// One thread fewer to wait for; the last one tells the feeder.
    fn done(&self) {
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            let done = self.done.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(tx) = done {
                let _ = tx.send(());
            }
        }
    }
}

struct Done<'a, W: AsyncWrite + Unpin>(&'a Job<W>);

impl<W: AsyncWrite + Unpin> Drop for Done<'_, W> {
    fn drop(&mut self) {
        self.0.done();
    }
}

/// The pool of fan-out threads.
pub(crate) struct Fanout<W> {
    threads: Vec<mpsc::Sender<Arc<Job<W>>>>,
}

impl<W: AsyncWrite + Unpin + Send + 'static> Fanout<W> {
    /// One thread per CPU this process may use, each pinned to one of the CPUs it may run on when
    /// those are as many (not under a smaller CPU quota, where pinning would tie it to CPUs it
    /// may not be getting). `None` on a single CPU, or when fewer than two threads start (the
    /// feeder then writes).
    pub fn start() -> Option<Fanout<W>> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cpus < 2 {
            return None;
        }
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let pinned = cores.len() == cpus;
        let mut threads = Vec::with_capacity(cpus);
        for i in 0..cpus {
            let (tx, rx) = mpsc::channel::<Arc<Job<W>>>();
            let core = if pinned { cores.get(i).copied() } else { None };
            let started = std::thread::Builder::new()
                .name(format!("fluxora-fanout-{i}"))
                .spawn(move || {
                    if let Some(core) = core {
                        if !core_affinity::set_for_current(core) {
                            tracing::warn!(
                                cpu = core.id,
                                "hub: a fan-out thread could not be pinned"
                            );
                        }
                    }
                    while let Ok(job) = rx.recv() {
                        job.run();
                    }
                });
            match started {
                Ok(_) => threads.push(tx),
                Err(e) => {
                    tracing::warn!(error = %e, "hub: a fan-out thread could not start");
                    break;
                }
            }
        }
        if threads.len() < 2 {
            return None;
        }
        tracing::info!(
            threads = threads.len(),
            pinned,
            "hub: fan-out threads started"
        );
        Some(Fanout { threads })
    }

    /// Writes every link, on all threads; resolves when all are written.
    async fn write(&self, links: Vec<Arc<Link<W>>>) {
        let (tx, rx) = oneshot::channel();
        let job = Arc::new(Job {
            links,
            next: AtomicUsize::new(0),
            left: AtomicUsize::new(self.threads.len()),
            done: Mutex::new(Some(tx)),
        });
        let mut started = 0;
        for t in &self.threads {
            if t.send(job.clone()).is_ok() {
                started += 1;
            } else {
                // A thread that is gone (it panicked) counts as done: the others take its
                // share from the cursor.
                job.done();
            }
        }
        if started == 0 {
            for l in &job.links {
                l.write();
            }
        }
        let _ = rx.await;
    }
}

/// Writes every link in `links` (each queued something): through the pool when there are many
/// (started then, the first time), else from the caller, yielding to other tasks as its
/// cooperative budget runs out.
pub(crate) async fn write_all<W: AsyncWrite + Unpin + Send + 'static>(
    pool: &OnceLock<Option<Fanout<W>>>,
    links: Vec<Arc<Link<W>>>,
) {
    if links.len() >= POOL_FROM {
        if let Some(p) = pool.get_or_init(Fanout::start) {
            return p.write(links).await;
        }
    }
    for l in links {
        l.write();
        tokio::task::coop::consume_budget().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::link::{LinkCfg, Out};
    use tokio::io::AsyncReadExt;

    /// Thousands of links written by the pool (the test's own runtime has one thread): each gets
    /// its frame, once.
    #[tokio::test]
    async fn the_pool_writes_every_link_once() {
        let cfg = LinkCfg {
            queue: 16,
            queue_bytes: 1 << 20,
            batch_window: std::time::Duration::from_millis(50),
            batch_max: 1,
        };
        let mut links = Vec::new();
        let mut readers = Vec::new();
        for i in 0..2000 {
            let (a, b) = tokio::io::duplex(1024);
            let l = Arc::new(Link::new(a, cfg));
            assert_eq!(l.push(Out::text(&format!("{i:04}"))), Some(true));
            links.push(l);
            readers.push(b);
        }
        let pool = OnceLock::new();
        write_all(&pool, links.clone()).await;
        assert!(
            std::thread::available_parallelism().map_or(1, |n| n.get()) < 2
                || pool.get().is_some_and(Option::is_some),
            "the pool started"
        );
        for (i, (l, mut r)) in links.iter().zip(readers).enumerate() {
            assert_eq!(l.queued(), 0);
            let mut got = vec![0u8; 6];
            r.read_exact(&mut got).await.unwrap();
            assert_eq!(&got[2..], format!("{i:04}").as_bytes());
        }
    }
}
