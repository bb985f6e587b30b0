//! Stored events → the frames clients receive. Each event is rendered once per pass and its
//! text shared by every connection it goes to.
//!
//! An event's `payload` is the client stream object (`client-contracts.md` §2, decimal strings)
//! as it stood after the event's ledger, with amounts computed at that ledger's close time (so
//! that a live frame and the same event replayed later are identical), plus `"event"`: the event
//! that caused it. Events that are not about a stream (offers, whose id is an offer id, and
//! contract-wide changes) carry only `"event"` and `streamId: null`; address subscriptions still
//! match the sender and recipient such an event names.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::projection::view::{iso8601, stream_object, ViewOptions};
use crate::store::{Position, Store, StoreError, StoredEvent};

/// One event, rendered.
#[derive(Debug)]
pub struct Rendered {
    pub position: Position,
    pub ledger: u32,
    pub stream_id: Option<u64>,
    pub sender: Option<Arc<str>>,
    pub recipient: Option<Arc<str>>,
    pub event_id: String,
    pub topic: String,
    pub happened_at: String,
    /// JSON of the payload object.
    pub payload: String,
}

/// An event as it travels to the connections: the `stream_update` frame and the item a
/// `stream_update_batch` frame lists.
#[derive(Debug)]
pub struct LiveEvent {
    pub position: Position,
    pub ledger: u32,
    pub epoch: u64,
    pub stream_id: Option<u64>,
    pub sender: Option<Arc<str>>,
    pub recipient: Option<Arc<str>>,
    /// `"42"` (JSON string) or `null`.
    pub stream_json: Arc<str>,
    /// The `stream_update` frame, framed for the socket (see `wire`).
    pub wire: bytes::Bytes,
    pub item: Arc<str>,
}

fn stream_json(id: Option<u64>) -> String {
    id.map_or_else(|| "null".to_string(), |i| format!("\"{i}\""))
}

impl Rendered {
    /// The live form, in `epoch`; `replay: true` marks frames sent while resuming.
    pub fn live(&self, epoch: u64, replay: bool) -> LiveEvent {
        let sj = stream_json(self.stream_id);
        let eid = json_str(&self.event_id);
        let frame = format!(
            "{{\"type\":\"stream_update\",\"streamId\":{sj},\"eventId\":{eid},\"position\":{},\
             \"ledger\":{},\"epoch\":{epoch},{}\"payload\":{}}}",
            self.position,
            self.ledger,
            if replay { "\"replay\":true," } else { "" },
            self.payload
        );
        let item = format!(
            "{{\"eventId\":{eid},\"position\":{},\"ledger\":{},\"payload\":{}}}",
            self.position, self.ledger, self.payload
        );
        LiveEvent {
            position: self.position,
            ledger: self.ledger,
            epoch,
            stream_id: self.stream_id,
            sender: self.sender.clone(),
            recipient: self.recipient.clone(),
            stream_json: sj.into(),
            wire: super::wire::text(&frame),
            item: item.into(),
        }
    }

    /// The `stream_replay` frame of the one-shot `replay` message.
    pub fn replay_frame(&self, epoch: u64) -> String {
        format!(
            "{{\"type\":\"stream_replay\",\"streamId\":{},\"eventId\":{},\"position\":{},\
             \"ledger\":{},\"epoch\":{epoch},\"topic\":{},\"happenedAt\":{},\"payload\":{}}}",
            stream_json(self.stream_id),
            json_str(&self.event_id),
            self.position,
            self.ledger,
            json_str(&self.topic),
            json_str(&self.happened_at),
            self.payload
        )
    }
}

fn json_str(s: &str) -> String {
    Value::from(s).to_string()
}

/// The `stream_update_batch` frame of a run of one stream's events.
pub fn batch_frame(events: &[Arc<LiveEvent>]) -> String {
    let last = events.last();
    let mut out =
        String::with_capacity(64 + events.iter().map(|e| e.item.len() + 1).sum::<usize>());
    out.push_str("{\"type\":\"stream_update_batch\",\"streamId\":");
    out.push_str(last.map_or("null", |e| &e.stream_json));
    out.push_str(&format!(
        ",\"position\":{},\"ledger\":{},\"epoch\":{},\"events\":[",
        last.map_or(0, |e| e.position),
        last.map_or(0, |e| e.ledger),
        last.map_or(0, |e| e.epoch)
    ));
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&e.item);
    }
    out.push_str("]}");
    out
}

/// Renders stored events (any order of streams; one stream-state read per (stream, ledger)).
pub async fn render(
    store: &dyn Store,
    view: &ViewOptions,
    events: &[StoredEvent],
) -> Result<Vec<Rendered>, StoreError> {
    let (Some(first), Some(last)) = (
        events.iter().map(|e| e.event.ledger).min(),
        events.iter().map(|e| e.event.ledger).max(),
    ) else {
        return Ok(Vec::new());
    };
    let close: HashMap<u32, i64> = if last - first <= 10_000 {
        store
            .ledgers(first, last)
            .await?
            .into_iter()
            .map(|l| (l.sequence, l.close_time))
            .collect()
    } else {
        let mut m = HashMap::new();
        for l in events
            .iter()
            .map(|e| e.event.ledger)
            .collect::<BTreeSet<_>>()
        {
            if let Some(r) = store.ledger(l).await? {
                m.insert(l, r.close_time);
            }
        }
        m
    };
    let mut states = HashMap::new();
    for e in events {
        if let Some(id) = e.event.stream_id {
            let key = (id, e.event.ledger);
            if let std::collections::hash_map::Entry::Vacant(v) = states.entry(key) {
                v.insert(store.stream_at(id, e.event.ledger).await?);
            }
        }
    }
    // Parties as of each (stream, ledger): a recipient may change (transfers).
    let mut parties: HashMap<(u64, u32), (Arc<str>, Arc<str>)> = HashMap::new();
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        let ev = &e.event;
        let close_time = close.get(&ev.ledger).copied().unwrap_or(0).max(0) as u64;
        let happened_at = iso8601(close_time);
        let event = json!({
            "eventId": ev.event_id,
            "position": e.position,
            "ledger": ev.ledger,
            "txHash": ev.tx_hash,
            "txOrder": ev.tx_order,
            "topic": ev.topic,
            "type": ev.decoded.get("type").cloned().unwrap_or(Value::Null),
            "data": ev.decoded.get("fields").cloned().unwrap_or_else(|| ev.decoded.clone()),
            "function": ev.function,
            "contractId": ev.contract_id,
            "closeTime": close_time,
            "happenedAt": happened_at,
        });
        let state = ev
            .stream_id
            .and_then(|id| states.get(&(id, ev.ledger)))
            .and_then(Option::as_ref);
        let (payload, sender, recipient) = match state {
            Some(s) => {
                let mut obj = match serde_json::to_value(stream_object(s, close_time, view)) {
                    Ok(Value::Object(m)) => m,
                    _ => serde_json::Map::new(),
                };
                obj.insert("event".into(), event);
                let (snd, rcp) = parties
                    .entry((s.stream_id, ev.ledger))
                    .or_insert_with(|| {
                        (
                            Arc::from(s.sender.as_str()),
                            Arc::from(s.recipient.as_str()),
                        )
                    })
                    .clone();
                (Value::Object(obj), Some(snd), Some(rcp))
            }
            None => {
                // Not about a stream (an offer, a contract-wide change): parties as the event
                // names them, if it does.
                let party = |k: &str| {
                    ev.decoded
                        .get("fields")
                        .and_then(|f| f.get(k))
                        .and_then(Value::as_str)
                        .map(Arc::<str>::from)
                };
                (
                    json!({ "event": event }),
                    party("sender"),
                    party("recipient"),
                )
            }
        };
        out.push(Rendered {
            position: e.position,
            ledger: ev.ledger,
            // Routed and labelled as a stream's only when it is one (an offer's id is not).
            stream_id: state.map(|s| s.stream_id),
            sender,
            recipient,
            event_id: ev.event_id.clone(),
            topic: ev.topic.clone(),
            happened_at,
            payload: payload.to_string(),
        });
    }
    Ok(out)
}
