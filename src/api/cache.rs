//! A read-through cache of current stream states for the hot `GET` paths, valid for one data
//! generation: whoever learns that the store changed (the ingestor's commit and rollback notices
//! in this process, a database notification in an API-only one) bumps the generation, and every
//! entry of an older generation is ignored. Without a source of generations the cache is off,
//! so nothing is ever served stale.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::projection::fold::StreamState;
use crate::store::{Store, StoreError};

/// Entries kept before the map is cleared (a crude but bounded policy).
const CAPACITY: usize = 200_000;

type Entries = HashMap<u64, (u64, Option<Arc<StreamState>>)>;

/// See the module docs.
#[derive(Clone, Default)]
pub struct StreamCache {
    generation: Option<watch::Receiver<u64>>,
    entries: Arc<Mutex<Entries>>,
}

impl StreamCache {
    /// A cache invalidated by `generation` (bumped after every commit and rollback).
    pub fn new(generation: watch::Receiver<u64>) -> Self {
        Self {
            generation: Some(generation),
            entries: Arc::default(),
        }
    }

    /// The current state of stream `id` (`None`: no such stream).
    pub async fn stream(
        &self,
        store: &dyn Store,
        id: u64,
    ) -> Result<Option<Arc<StreamState>>, StoreError> {
        let Some(generation) = &self.generation else {
            return Ok(store.stream(id).await?.map(Arc::new));
        };
        // Read the generation first: a commit landing during the store read makes the entry
        // look older than it is, never newer.
        let g = *generation.borrow();
        if let Ok(map) = self.entries.lock() {
            if let Some((eg, s)) = map.get(&id) {
                if *eg == g {
                    return Ok(s.clone());
                }
            }
        }
        let s = store.stream(id).await?.map(Arc::new);
        if let Ok(mut map) = self.entries.lock() {
            if map.len() >= CAPACITY {
                map.clear();
            }
            map.insert(id, (g, s.clone()));
        }
        Ok(s)
    }
}

/// Bumps `tx` on every notice of `notices` (commits and rollbacks) until it closes.
pub fn follow_notices<T: Clone + Send + 'static>(
    mut notices: tokio::sync::broadcast::Receiver<T>,
    tx: watch::Sender<u64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match notices.recv().await {
                // A lagged receiver missed notices: bump anyway (conservative).
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    tx.send_modify(|g| *g += 1);
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    // No more news: invalidate for good by bumping once more, then stop.
                    tx.send_modify(|g| *g += 1);
                    return;
                }
            }
        }
    })
}
