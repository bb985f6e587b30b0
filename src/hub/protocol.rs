//! The `/ws/streams` wire protocol: client messages (parsed and validated) and the server frames.
//!
//! Client → server (text frames of JSON, at most [`MAX_CLIENT_MESSAGE_BYTES`]):
//! * `{"type":"subscribe", <filter>, "batching"?, "resume_from"?, "epoch"?}`
//! * `{"type":"unsubscribe", <filter>}`
//! * `{"type":"replay", "afterEventId"?, "resume_from"?, "epoch"?, "fromLedger"?, "toLedger"?,
//!   "topic"?, <filter>?, "limit"?}`
//! * `{"type":"ping"}`
//!
//! A filter is exactly one of `stream_id` (`streamId`), `recipient_address` (`recipientAddress`),
//! `sender_address` (`senderAddress`) or `"all": true`; it may also be given inside a `filter`
//! object. Aliases must agree when both are given.

use serde_json::{Map, Value};

use crate::store::Position;

/// Largest client message accepted (bytes of the text frame).
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 4096;
/// Client messages allowed per [`RATE_WINDOW`].
pub const RATE_LIMIT_MESSAGES: usize = 30;
/// The window of the client message rate limit.
pub const RATE_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);
/// Default and largest `limit` of a `replay`.
pub const REPLAY_DEFAULT_LIMIT: u32 = 100;
pub const REPLAY_MAX_LIMIT: u32 = 1000;

/// Close code and reason of a graceful shutdown.
pub const CLOSE_SHUTDOWN: u16 = 1001;
pub const REASON_SHUTDOWN: &str = r#"{"reason":"server_shutdown"}"#;
/// Close code and reason when the connection's send queue overflowed (a consumer too slow to keep
/// up); it may reconnect and resume from the last position it processed.
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;
pub const REASON_SLOW_CONSUMER: &str = r#"{"reason":"slow_consumer"}"#;
/// Close code and reason after two pings went unanswered.
pub const CLOSE_PING_TIMEOUT: u16 = 4000;
pub const REASON_PING_TIMEOUT: &str = r#"{"reason":"ping_timeout"}"#;

/// The error codes of `{"type":"error"}` frames.
pub mod codes {
    pub const INVALID_MESSAGE: &str = "INVALID_MESSAGE";
    pub const UNKNOWN_TYPE: &str = "UNKNOWN_TYPE";
    pub const BINARY_NOT_SUPPORTED: &str = "BINARY_NOT_SUPPORTED";
    pub const PAYLOAD_TOO_LARGE: &str = "PAYLOAD_TOO_LARGE";
    pub const RATE_LIMIT_EXCEEDED: &str = "RATE_LIMIT_EXCEEDED";
    pub const NOT_FOUND: &str = "NOT_FOUND";
    pub const UNAUTHORIZED: &str = "UNAUTHORIZED";
    pub const FORBIDDEN: &str = "FORBIDDEN";
    pub const STALE_CURSOR: &str = "STALE_CURSOR";
    pub const INTERNAL_ERROR: &str = "INTERNAL_ERROR";
}

/// What a subscription selects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Filter {
    Stream(u64),
    Recipient(String),
    Sender(String),
    /// Every event of the contract (streams and contract-wide events).
    All,
}

impl Filter {
    /// The filter as clients wrote it (`{"stream_id":"42"}`, …).
    pub fn to_json(&self) -> Value {
        match self {
            Filter::Stream(id) => serde_json::json!({ "stream_id": id.to_string() }),
            Filter::Recipient(a) => serde_json::json!({ "recipient_address": a }),
            Filter::Sender(a) => serde_json::json!({ "sender_address": a }),
            Filter::All => serde_json::json!({ "all": true }),
        }
    }

    /// Does an event of `stream` with these parties match?
    pub fn matches(
        &self,
        stream: Option<u64>,
        sender: Option<&str>,
        recipient: Option<&str>,
    ) -> bool {
        match self {
            Filter::All => true,
            Filter::Stream(id) => stream == Some(*id),
            Filter::Recipient(a) => recipient == Some(a.as_str()),
            Filter::Sender(a) => sender == Some(a.as_str()),
        }
    }
}

/// A position to resume after, with the epoch the client saw it in (when it sent one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    pub position: Position,
    pub epoch: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub filter: Filter,
    pub batching: bool,
    pub resume: Option<Resume>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    pub after_event_id: Option<String>,
    pub resume: Option<Resume>,
    pub from_ledger: Option<u32>,
    pub to_ledger: Option<u32>,
    pub topic: Option<String>,
    pub filter: Option<Filter>,
    pub limit: u32,
}

/// A parsed client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    Subscribe(Subscribe),
    Unsubscribe(Filter),
    Replay(Replay),
    Ping,
}

/// A protocol error answered with an error frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoError {
    pub code: &'static str,
    pub message: String,
}

impl ProtoError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            code: codes::INVALID_MESSAGE,
            message: message.into(),
        }
    }
}

/// Parses and validates one client text message.
pub fn parse(text: &str) -> Result<ClientMessage, ProtoError> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| ProtoError::invalid(format!("not valid JSON: {e}")))?;
    let Value::Object(obj) = v else {
        return Err(ProtoError::invalid("a message must be a JSON object"));
    };
    let ty = match obj.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(_) => return Err(ProtoError::invalid("`type` must be a string")),
        None => return Err(ProtoError::invalid("`type` is missing")),
    };
    match ty {
        "subscribe" => {
            let filter = filter_of(&obj)?.ok_or_else(|| {
                ProtoError::invalid(
                    "subscribe needs one of stream_id, recipient_address, sender_address or \
                     \"all\": true",
                )
            })?;
            let batching = match obj
                .get("batching")
                .or_else(|| obj.get("filter").and_then(|f| f.get("batching")))
            {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(ProtoError::invalid("`batching` must be a boolean")),
            };
            Ok(ClientMessage::Subscribe(Subscribe {
                filter,
                batching,
                resume: resume_of(&obj)?,
            }))
        }
        "unsubscribe" => {
            let filter = filter_of(&obj)?.ok_or_else(|| {
                ProtoError::invalid(
                    "unsubscribe needs the filter of the subscription (stream_id, \
                     recipient_address, sender_address or \"all\": true)",
                )
            })?;
            Ok(ClientMessage::Unsubscribe(filter))
        }
        "replay" => {
            let after_event_id = match alias(&obj, &["afterEventId", "after_event_id"])? {
                None => None,
                Some(Value::String(s)) if !s.trim().is_empty() => {
                    let s = s.trim().to_string();
                    crate::store::parse_event_id(&s).map_err(ProtoError::invalid)?;
                    Some(s)
                }
                Some(_) => {
                    return Err(ProtoError::invalid(
                        "`afterEventId` must be an event id `{TOID:019}-{index:010}`",
                    ))
                }
            };
            let resume = resume_of(&obj)?;
            if after_event_id.is_some() && resume.is_some() {
                return Err(ProtoError::invalid(
                    "give either afterEventId or resume_from, not both",
                ));
            }
            let from_ledger = ledger_of(&obj, &["fromLedger", "from_ledger"])?;
            let to_ledger = ledger_of(&obj, &["toLedger", "toledger", "to_ledger"])?;
            if let (Some(f), Some(t)) = (from_ledger, to_ledger) {
                if f > t {
                    return Err(ProtoError::invalid("fromLedger is above toLedger"));
                }
            }
            let topic = match obj.get("topic") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 64 => {
                    Some(s.trim().to_string())
                }
                Some(_) => return Err(ProtoError::invalid("`topic` must be an event topic")),
            };
            let limit = match obj.get("limit") {
                None | Some(Value::Null) => REPLAY_DEFAULT_LIMIT,
                Some(Value::Number(n)) => match n.as_u64() {
                    Some(l) if (1..=u64::from(REPLAY_MAX_LIMIT)).contains(&l) => l as u32,
                    _ => {
                        return Err(ProtoError::invalid(format!(
                            "`limit` must be an integer from 1 to {REPLAY_MAX_LIMIT}"
                        )))
                    }
                },
                Some(_) => return Err(ProtoError::invalid("`limit` must be an integer")),
            };
            Ok(ClientMessage::Replay(Replay {
                after_event_id,
                resume,
                from_ledger,
                to_ledger,
                topic,
                filter: filter_of(&obj)?,
                limit,
            }))
        }
        "ping" => Ok(ClientMessage::Ping),
        other => Err(ProtoError {
            code: codes::UNKNOWN_TYPE,
            message: format!(
                "unknown message type `{}` (expected subscribe, unsubscribe, replay or ping)",
                truncate(other, 64)
            ),
        }),
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The value of the first of `names` present (top level, then inside `filter`); aliases that
/// disagree are an error.
fn alias<'a>(obj: &'a Map<String, Value>, names: &[&str]) -> Result<Option<&'a Value>, ProtoError> {
    let nested = obj.get("filter").and_then(Value::as_object);
    let mut found: Option<&'a Value> = None;
    for n in names {
        for v in [obj.get(*n), nested.and_then(|f| f.get(*n))]
            .into_iter()
            .flatten()
        {
            if v.is_null() {
                continue;
            }
            match found {
                Some(f) if f != v => {
                    return Err(ProtoError::invalid(format!(
                        "`{}` aliases must not carry conflicting values",
                        names[0]
                    )))
                }
                _ => found = Some(v),
            }
        }
    }
    Ok(found)
}

fn address_of(obj: &Map<String, Value>, names: &[&str]) -> Result<Option<String>, ProtoError> {
    match alias(obj, names)? {
        None => Ok(None),
        Some(Value::String(s)) => {
            let s = s.trim();
            crate::config::check_address(s)
                .map_err(|e| ProtoError::invalid(format!("`{}`: {e}", names[0])))?;
            Ok(Some(s.to_string()))
        }
        Some(_) => Err(ProtoError::invalid(format!(
            "`{}` must be a Stellar address string",
            names[0]
        ))),
    }
}

fn filter_of(obj: &Map<String, Value>) -> Result<Option<Filter>, ProtoError> {
    if let Some(f) = obj.get("filter") {
        if !f.is_object() && !f.is_null() {
            return Err(ProtoError::invalid("`filter` must be an object"));
        }
    }
    let stream = match alias(obj, &["stream_id", "streamId"])? {
        None => None,
        Some(Value::String(s)) => Some(parse_stream_id(s.trim())?),
        Some(Value::Number(n)) => Some(
            n.as_u64()
                .ok_or_else(|| ProtoError::invalid("`stream_id` must be a stream id (u64)"))?,
        ),
        Some(_) => return Err(ProtoError::invalid("`stream_id` must be a string")),
    };
    let recipient = address_of(obj, &["recipient_address", "recipientAddress"])?;
    let sender = address_of(obj, &["sender_address", "senderAddress"])?;
    let all = match alias(obj, &["all"])? {
        None | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(_) => return Err(ProtoError::invalid("`all` must be a boolean")),
    };
    let n = usize::from(stream.is_some())
        + usize::from(recipient.is_some())
        + usize::from(sender.is_some())
        + usize::from(all);
    if n > 1 {
        return Err(ProtoError::invalid(
            "a subscription filter takes one of stream_id, recipient_address, sender_address or \
             all, not several",
        ));
    }
    Ok(if let Some(id) = stream {
        Some(Filter::Stream(id))
    } else if let Some(a) = recipient {
        Some(Filter::Recipient(a))
    } else if let Some(a) = sender {
        Some(Filter::Sender(a))
    } else if all {
        Some(Filter::All)
    } else {
        None
    })
}

fn parse_stream_id(s: &str) -> Result<u64, ProtoError> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ProtoError::invalid(format!(
            "`stream_id` `{}` is not a stream id (a decimal u64)",
            truncate(s, 40)
        )));
    }
    s.parse()
        .map_err(|_| ProtoError::invalid("`stream_id` is out of the u64 range"))
}

fn ledger_of(obj: &Map<String, Value>, names: &[&str]) -> Result<Option<u32>, ProtoError> {
    match alias(obj, names)? {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .map(Some)
            .ok_or_else(|| ProtoError::invalid(format!("`{}` must be a ledger number", names[0]))),
        Some(_) => Err(ProtoError::invalid(format!(
            "`{}` must be a ledger number",
            names[0]
        ))),
    }
}

fn resume_of(obj: &Map<String, Value>) -> Result<Option<Resume>, ProtoError> {
    let position = match alias(obj, &["resume_from", "resumeFrom"])? {
        None => return Ok(None),
        Some(v) => non_negative(v).ok_or_else(|| {
            ProtoError::invalid("`resume_from` must be a position (a non-negative integer)")
        })?,
    };
    let epoch = match obj.get("epoch") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            non_negative(v)
                .ok_or_else(|| ProtoError::invalid("`epoch` must be a non-negative integer"))?
                as u64,
        ),
    };
    Ok(Some(Resume { position, epoch }))
}

/// A non-negative integer given as a JSON number or a decimal string.
fn non_negative(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().filter(|p| *p >= 0),
        Value::String(s) => s.trim().parse::<i64>().ok().filter(|p| *p >= 0),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: &str = "GAAZI4TCR3TY5OJHCTJC2A4QSY6CJWJH5IAJTGKIN2ER7LBNVKOCCWN7";

    #[test]
    fn filters_and_aliases() {
        assert_eq!(
            parse(r#"{"type":"subscribe","stream_id":"42"}"#).unwrap(),
            ClientMessage::Subscribe(Subscribe {
                filter: Filter::Stream(42),
                batching: false,
                resume: None
            })
        );
        assert_eq!(
            parse(r#"{"type":"subscribe","streamId":"42","stream_id":"42","batching":true}"#)
                .unwrap(),
            ClientMessage::Subscribe(Subscribe {
                filter: Filter::Stream(42),
                batching: true,
                resume: None
            })
        );
        let m = parse(&format!(
            r#"{{"type":"subscribe","recipientAddress":"{G}","resume_from":7,"epoch":2}}"#
        ))
        .unwrap();
        assert_eq!(
            m,
            ClientMessage::Subscribe(Subscribe {
                filter: Filter::Recipient(G.into()),
                batching: false,
                resume: Some(Resume {
                    position: 7,
                    epoch: Some(2)
                })
            })
        );
        assert_eq!(
            parse(&format!(
                r#"{{"type":"unsubscribe","filter":{{"sender_address":"{G}"}}}}"#
            ))
            .unwrap(),
            ClientMessage::Unsubscribe(Filter::Sender(G.into()))
        );
        assert_eq!(
            parse(r#"{"type":"subscribe","all":true}"#).unwrap(),
            ClientMessage::Subscribe(Subscribe {
                filter: Filter::All,
                batching: false,
                resume: None
            })
        );
    }

    #[test]
    fn invalid_messages_name_the_problem() {
        let code = |t: &str| parse(t).unwrap_err().code;
        assert_eq!(code("nope"), codes::INVALID_MESSAGE);
        assert_eq!(code("[1]"), codes::INVALID_MESSAGE);
        assert_eq!(code(r#"{"type":"dance"}"#), codes::UNKNOWN_TYPE);
        assert_eq!(code(r#"{"type":"subscribe"}"#), codes::INVALID_MESSAGE);
        assert_eq!(
            code(&format!(
                r#"{{"type":"subscribe","stream_id":"1","recipient_address":"{G}"}}"#
            )),
            codes::INVALID_MESSAGE
        );
        assert_eq!(
            code(r#"{"type":"subscribe","stream_id":"1","streamId":"2"}"#),
            codes::INVALID_MESSAGE
        );
        assert_eq!(
            code(r#"{"type":"subscribe","stream_id":"abc"}"#),
            codes::INVALID_MESSAGE
        );
        assert_eq!(
            code(r#"{"type":"subscribe","recipient_address":"GABC"}"#),
            codes::INVALID_MESSAGE
        );
        assert_eq!(
            code(r#"{"type":"subscribe","all":true,"resume_from":-1}"#),
            codes::INVALID_MESSAGE
        );
        assert_eq!(
            code(r#"{"type":"replay","limit":5000}"#),
            codes::INVALID_MESSAGE
        );
        assert_eq!(
            code(r#"{"type":"replay","afterEventId":"x"}"#),
            codes::INVALID_MESSAGE
        );
    }
}
