//! Delivery bodies (`client-contracts.md` §3):
//! `{"id":"<event id>","type":"stream.updated","timestamp":<ms>,"data":{<stream object>,
//! "ledger","txHash","eventId","position"}}`.
//!
//! * Event deliveries (and replays): `data` is the client stream object as of the event's ledger,
//!   amounts as decimal strings computed at that ledger's close time (`asOf`), then `ledger`,
//!   `txHash`, `eventId`, `position`; `timestamp` is the close time in ms. The body depends only on
//!   stored rows, so every attempt of a delivery carries the same bytes.
//! * `stream.reverted`: the stream object as it stands after the rollback (or just `id` when the
//!   stream no longer exists), then the reverted event's `ledger`, `txHash`, `eventId`,
//!   `position`, its `revertedType` and `revertedDeliveryId`, the `forkLedger` and the new
//!   `epoch`; `timestamp` is when the rollback queued it.
//! * `webhook.ping` (the admin test ping): `id` is the delivery id, `data` a short message.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::projection::view::{stream_object, StreamObject, ViewOptions};
use crate::store::outbox::{ClaimedDelivery, KIND_PING, KIND_REVERTED};
use crate::store::StoreError;

#[derive(Serialize)]
struct Body<'a, D: Serialize> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    timestamp: i64,
    data: D,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventData<'a> {
    #[serde(flatten)]
    stream: StreamObject,
    ledger: u32,
    tx_hash: Option<&'a str>,
    event_id: Option<&'a str>,
    position: Option<i64>,
}

fn state(json: &Option<String>) -> Result<Option<crate::projection::StreamState>, StoreError> {
    json.as_deref().map(crate::store::decode_state).transpose()
}

/// The body of a claimed delivery, rendered at `now_unix` for what depends on the present
/// (`stream.reverted`).
pub fn render(
    d: &ClaimedDelivery,
    view: &ViewOptions,
    now_unix: u64,
) -> Result<Vec<u8>, StoreError> {
    let json = |e: serde_json::Error| StoreError::Corrupt(format!("webhook body: {e}"));
    match d.kind.as_str() {
        KIND_PING => {
            let data: Value = d
                .payload
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(json)?
                .unwrap_or(Value::Null);
            serde_json::to_vec(&Body {
                id: &d.delivery_id,
                kind: &d.event_type,
                timestamp: d.created_at,
                data,
            })
            .map_err(json)
        }
        KIND_REVERTED => {
            let mut data = match state(&d.state_now)? {
                Some(s) => {
                    match serde_json::to_value(stream_object(&s, now_unix, view)).map_err(json)? {
                        Value::Object(m) => m,
                        _ => Map::new(),
                    }
                }
                None => {
                    let mut m = Map::new();
                    m.insert(
                        "id".into(),
                        d.stream_id.map_or(Value::Null, |s| s.to_string().into()),
                    );
                    m
                }
            };
            if let Some(Value::Object(extra)) = d
                .payload
                .as_deref()
                .map(serde_json::from_str::<Value>)
                .transpose()
                .map_err(json)?
            {
                data.extend(extra);
            }
            serde_json::to_vec(&Body {
                id: d.event_id.as_deref().unwrap_or(&d.delivery_id),
                kind: &d.event_type,
                timestamp: d.created_at,
                data,
            })
            .map_err(json)
        }
        _ => {
            let close = d.close_time.unwrap_or(0).max(0) as u64;
            let Some(s) = state(&d.state_at)? else {
                return Err(StoreError::Corrupt(format!(
                    "delivery {}: no state of stream {:?} at ledger {}",
                    d.delivery_id, d.stream_id, d.ledger
                )));
            };
            serde_json::to_vec(&Body {
                id: d.event_id.as_deref().unwrap_or(&d.delivery_id),
                kind: &d.event_type,
                timestamp: (close as i64).saturating_mul(1000),
                data: EventData {
                    stream: stream_object(&s, close, view),
                    ledger: d.ledger,
                    tx_hash: d.tx_hash.as_deref(),
                    event_id: d.event_id.as_deref(),
                    position: d.position,
                },
            })
            .map_err(json)
        }
    }
}
