//! `fluxora decode`: turn any chain payload an operator may have at hand into one JSON line per
//! contract event:
//! `{"ledger","tx_hash","event_id","contract_id","type","stream_id","fields":{…}}`.
//!
//! Accepted input (auto-detected):
//! * Horizon: a transaction record, or a HAL page (`_embedded.records`) of transactions;
//! * Stellar RPC: `getLedgers`, `getTransaction`, `getTransactions`, `getEvents` responses (bare
//!   `result`, a JSON-RPC envelope, or a `{request, response}` fixture envelope);
//! * a golden-fixture scenario file (`contract-oracle/*.json`);
//! * raw base64 XDR, one payload per line: `LedgerCloseMeta`, `TransactionMeta` or `ScVal`.

use std::io::{Read, Write};

use serde::Serialize;
use serde_json::Value;
use stellar_xdr::{LedgerCloseMeta, ScVal, TransactionMeta};

use crate::chain::meta::{
    contract_events, decode_b64, raw_event, tx_successful, ContractFilter, TxContext, XdrLimits,
};
use crate::chain::{ChainError, RawContractEvent};
use crate::contract::ContractEvent;

/// Options of the decode command.
#[derive(Debug, Clone, Default)]
pub struct DecodeOptions {
    /// Only events of this contract (`C…`); `None` = every contract.
    pub contract: Option<String>,
    /// Name of the input for error messages (file name or `-`).
    pub source_name: String,
    pub limits: Option<XdrLimits>,
}

/// What was printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeSummary {
    pub events: usize,
    pub unrecognized: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{source_name}: reading input: {message}")]
    Read {
        source_name: String,
        message: String,
    },
    #[error("{location}: {message}")]
    Parse { location: String, message: String },
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error("writing output: {0}")]
    Write(String),
}

/// One output line.
#[derive(Debug, Serialize)]
pub struct EventLine<'a> {
    pub ledger: Option<u32>,
    pub tx_hash: Option<&'a str>,
    pub event_id: Option<&'a str>,
    pub contract_id: &'a str,
    #[serde(rename = "type")]
    pub type_: &'a str,
    pub stream_id: Option<u64>,
    pub fields: &'a ContractEvent,
}

impl<'a> EventLine<'a> {
    pub fn from_raw(e: &'a RawContractEvent) -> Self {
        EventLine {
            ledger: Some(e.ledger),
            tx_hash: if e.tx_hash.is_empty() {
                None
            } else {
                Some(&e.tx_hash)
            },
            event_id: Some(&e.event_id),
            contract_id: &e.contract_id,
            type_: e.decoded.type_name(),
            stream_id: e.decoded.stream_id(),
            fields: &e.decoded,
        }
    }
}

struct Decoder<'w> {
    out: &'w mut dyn Write,
    filter: ContractFilter,
    limits: XdrLimits,
    summary: DecodeSummary,
}

fn parse_err(location: impl Into<String>, message: impl Into<String>) -> DecodeError {
    DecodeError::Parse {
        location: location.into(),
        message: message.into(),
    }
}

fn get_str<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// Numbers that some servers send as strings.
fn get_u64(v: &Value, key: &str) -> Option<u64> {
    match v.get(key)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn get_u32(v: &Value, key: &str) -> Option<u32> {
    get_u64(v, key).and_then(|x| u32::try_from(x).ok())
}

impl Decoder<'_> {
    fn emit(&mut self, e: &RawContractEvent) -> Result<(), DecodeError> {
        if e.decoded.is_unrecognized() {
            self.summary.unrecognized += 1;
        }
        self.summary.events += 1;
        let line = EventLine::from_raw(e);
        serde_json::to_writer(&mut *self.out, &line)
            .map_err(|e| DecodeError::Write(e.to_string()))?;
        self.out
            .write_all(b"\n")
            .map_err(|e| DecodeError::Write(e.to_string()))
    }

    fn meta(&mut self, ctx: TxContext<'_>, meta: &TransactionMeta) -> Result<(), DecodeError> {
        for e in contract_events(ctx, meta, &self.filter, None) {
            self.emit(&e)?;
        }
        Ok(())
    }

    fn lcm(&mut self, lcm: &LedgerCloseMeta) -> Result<(), DecodeError> {
        let seq = crate::chain::meta::lcm_sequence(lcm);
        let items = crate::chain::meta::lcm_results(lcm);
        for (i, (hash, result, meta)) in items.into_iter().enumerate() {
            if !tx_successful(result) {
                continue;
            }
            let tx_hash = hex::encode(hash);
            let ctx = TxContext {
                ledger: seq,
                tx_hash: &tx_hash,
                application_order: i as u32 + 1,
            };
            self.meta(ctx, meta)?;
        }
        Ok(())
    }

    fn json(&mut self, v: &Value, loc: &str) -> Result<(), DecodeError> {
        if let Value::Array(items) = v {
            for (i, item) in items.iter().enumerate() {
                self.json(item, &format!("{loc}[{i}]"))?;
            }
            return Ok(());
        }
        let Value::Object(obj) = v else {
            return Err(parse_err(loc, "expected a JSON object or array"));
        };
        if let Some(resp) = obj.get("response") {
            // `{request, response}` fixture envelope: getTransaction's hash is in the request.
            if let (Some(hash), Some(result)) = (
                obj.get("request")
                    .and_then(|r| r.pointer("/params/hash"))
                    .and_then(Value::as_str),
                resp.get("result"),
            ) {
                if result.get("resultMetaXdr").is_some() {
                    return self.rpc_tx(result, Some(hash), &format!("{loc}.response.result"));
                }
            }
            return self.json(resp, &format!("{loc}.response"));
        }
        if let Some(err) = obj.get("error") {
            return Err(parse_err(
                loc,
                format!("the response is a JSON-RPC error: {err}"),
            ));
        }
        if let Some(result) = obj.get("result") {
            return self.json(result, &format!("{loc}.result"));
        }
        if obj.contains_key("steps") && obj.contains_key("contract_id") {
            return self.scenario(v, loc);
        }
        if let Some(Value::Array(ledgers)) = obj.get("ledgers") {
            for (i, l) in ledgers.iter().enumerate() {
                let lloc = format!("{loc}.ledgers[{i}].metadataXdr");
                let b64 = get_str(l, "metadataXdr")
                    .ok_or_else(|| parse_err(&lloc, "missing (request without xdrFormat json?)"))?;
                let lcm: LedgerCloseMeta = decode_b64("LedgerCloseMeta", &lloc, b64, self.limits)?;
                self.lcm(&lcm)?;
            }
            return Ok(());
        }
        if let Some(Value::Array(txs)) = obj.get("transactions") {
            for (i, t) in txs.iter().enumerate() {
                self.rpc_tx(t, None, &format!("{loc}.transactions[{i}]"))?;
            }
            return Ok(());
        }
        if obj.contains_key("resultMetaXdr")
            || (obj.contains_key("status") && obj.contains_key("applicationOrder"))
        {
            return self.rpc_tx(v, None, loc);
        }
        if let Some(Value::Array(events)) = obj.get("events") {
            for (i, e) in events.iter().enumerate() {
                self.rpc_event(e, &format!("{loc}.events[{i}]"))?;
            }
            return Ok(());
        }
        if let Some(records) = obj.get("_embedded").and_then(|e| e.get("records")) {
            let Value::Array(records) = records else {
                return Err(parse_err(
                    format!("{loc}._embedded.records"),
                    "expected an array",
                ));
            };
            for (i, r) in records.iter().enumerate() {
                let rloc = format!("{loc}._embedded.records[{i}]");
                if r.get("envelope_xdr").is_some() {
                    self.horizon_tx(r, &rloc)?;
                } else if r.get("header_xdr").is_some() {
                    self.horizon_ledger(r, &rloc)?;
                }
            }
            return Ok(());
        }
        if obj.contains_key("envelope_xdr") || obj.contains_key("result_meta_xdr") {
            return self.horizon_tx(v, loc);
        }
        if obj.contains_key("header_xdr")
            || (obj.contains_key("sequence") && obj.contains_key("prev_hash"))
        {
            // A Horizon ledger: no events, but the header is checked.
            return self.horizon_ledger(v, loc);
        }
        if obj.contains_key("type_i") && obj.contains_key("transaction_hash") {
            // A Horizon operation record carries no contract events.
            return Ok(());
        }
        // OpenRPC example files: `{ "<Name>": {"name", "value"}, … }`; decode the responses.
        if !obj.is_empty()
            && obj
                .values()
                .all(|x| x.get("name").is_some() && x.get("value").is_some())
        {
            for (k, x) in obj {
                let val = &x["value"];
                let is_response = ["ledgers", "events", "transactions", "resultMetaXdr"]
                    .iter()
                    .any(|key| val.get(key).is_some());
                if is_response {
                    self.json(val, &format!("{loc}.{k}.value"))?;
                }
            }
            return Ok(());
        }
        Err(parse_err(
            loc,
            "unrecognized JSON: expected a Horizon transaction or page, an RPC getLedgers/getTransaction/getTransactions/getEvents response, or a golden scenario",
        ))
    }

    fn horizon_ledger(&mut self, l: &Value, loc: &str) -> Result<(), DecodeError> {
        if let Some(b64) = get_str(l, "header_xdr") {
            let hloc = format!("{loc}.header_xdr");
            crate::chain::meta::verify_header_b64(b64, get_str(l, "hash"), &hloc, self.limits)?;
        }
        Ok(())
    }

    fn horizon_tx(&mut self, t: &Value, loc: &str) -> Result<(), DecodeError> {
        if t.get("successful").and_then(Value::as_bool) == Some(false) {
            return Ok(());
        }
        let ledger = get_u32(t, "ledger")
            .ok_or_else(|| parse_err(format!("{loc}.ledger"), "missing or not a number"))?;
        let hash = get_str(t, "hash").unwrap_or_default();
        let order = get_u64(t, "paging_token")
            .map(|pt| ((pt >> 12) & 0xF_FFFF) as u32)
            .unwrap_or(0);
        let Some(b64) = get_str(t, "result_meta_xdr") else {
            return Err(parse_err(
                format!("{loc}.result_meta_xdr"),
                "missing: this Horizon runs with SKIP_TXMETA; fetch the transaction from Stellar RPC (getTransaction) instead",
            ));
        };
        let mloc = format!("{loc}.result_meta_xdr");
        let meta: TransactionMeta = decode_b64("TransactionMeta", &mloc, b64, self.limits)?;
        self.meta(
            TxContext {
                ledger,
                tx_hash: hash,
                application_order: order,
            },
            &meta,
        )
    }

    fn rpc_tx(&mut self, t: &Value, hash_hint: Option<&str>, loc: &str) -> Result<(), DecodeError> {
        match get_str(t, "status") {
            Some("SUCCESS") | None => {}
            Some(_) => return Ok(()),
        }
        let ledger = get_u32(t, "ledger")
            .ok_or_else(|| parse_err(format!("{loc}.ledger"), "missing or not a number"))?;
        let hash = get_str(t, "txHash").or(hash_hint).unwrap_or_default();
        let order = get_u32(t, "applicationOrder").unwrap_or(0);
        let mloc = format!("{loc}.resultMetaXdr");
        let b64 = get_str(t, "resultMetaXdr").ok_or_else(|| parse_err(&mloc, "missing"))?;
        let meta: TransactionMeta = decode_b64("TransactionMeta", &mloc, b64, self.limits)?;
        self.meta(
            TxContext {
                ledger,
                tx_hash: hash,
                application_order: order,
            },
            &meta,
        )
    }

    fn rpc_event(&mut self, e: &Value, loc: &str) -> Result<(), DecodeError> {
        if get_str(e, "type") != Some("contract") {
            return Ok(());
        }
        let cid = get_str(e, "contractId")
            .ok_or_else(|| parse_err(format!("{loc}.contractId"), "missing"))?;
        if let Ok(stellar_strkey::Strkey::Contract(c)) = stellar_strkey::Strkey::from_string(cid) {
            if !self.filter.matches_id(&c.0) {
                return Ok(());
            }
        }
        let ledger = get_u32(e, "ledger")
            .ok_or_else(|| parse_err(format!("{loc}.ledger"), "missing or not a number"))?;
        let mut topics = Vec::new();
        let Some(Value::Array(ts)) = e.get("topic") else {
            return Err(parse_err(format!("{loc}.topic"), "missing or not an array"));
        };
        for (i, t) in ts.iter().enumerate() {
            let tloc = format!("{loc}.topic[{i}]");
            let b64 = t.as_str().ok_or_else(|| parse_err(&tloc, "not a string"))?;
            topics.push(decode_b64::<ScVal>("ScVal", &tloc, b64, self.limits)?);
        }
        let vloc = format!("{loc}.value");
        let vb64 = get_str(e, "value").ok_or_else(|| parse_err(&vloc, "missing"))?;
        let data: ScVal = decode_b64("ScVal", &vloc, vb64, self.limits)?;
        let tx_hash = get_str(e, "txHash").unwrap_or_default();
        let order = get_u32(e, "transactionIndex").unwrap_or(0);
        let op = get_u32(e, "operationIndex").unwrap_or(0);
        let ctx = TxContext {
            ledger,
            tx_hash,
            application_order: order,
        };
        let mut raw = raw_event(ctx, op, 0, cid.to_string(), &topics, &data, None);
        if let Some(id) = get_str(e, "id") {
            raw.event_id = id.to_string();
            raw.event_index = id
                .rsplit('-')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
        }
        self.emit(&raw)
    }

    fn scenario(&mut self, v: &Value, loc: &str) -> Result<(), DecodeError> {
        let contract = get_str(v, "contract_id")
            .ok_or_else(|| parse_err(format!("{loc}.contract_id"), "missing"))?;
        let Some(Value::Array(steps)) = v.get("steps") else {
            return Err(parse_err(format!("{loc}.steps"), "not an array"));
        };
        let mut prev_ledger = None;
        let mut order = 0u32;
        for (si, step) in steps.iter().enumerate() {
            let sloc = format!("{loc}.steps[{si}]");
            let ledger = get_u32(step, "ledger_seq")
                .ok_or_else(|| parse_err(format!("{sloc}.ledger_seq"), "missing"))?;
            if prev_ledger == Some(ledger) {
                order += 1;
            } else {
                order = 1;
                prev_ledger = Some(ledger);
            }
            if !get_str(step, "result")
                .unwrap_or_default()
                .starts_with("Ok")
            {
                continue;
            }
            let ctx = TxContext {
                ledger,
                tx_hash: "",
                application_order: order,
            };
            let mut index = 0u32;
            let groups = [("events", None), ("other_contract_events", Some(()))];
            for (key, other) in groups {
                let Some(Value::Array(evs)) = step.get(key) else {
                    continue;
                };
                for (ei, ev) in evs.iter().enumerate() {
                    let eloc = format!("{sloc}.{key}[{ei}]");
                    let cid = if other.is_some() {
                        get_str(ev, "contract_id")
                            .ok_or_else(|| parse_err(format!("{eloc}.contract_id"), "missing"))?
                    } else {
                        contract
                    };
                    let raw = decode_fixture_event(ctx, index, cid, ev, &eloc, self.limits)?;
                    index += 1;
                    let keep = match stellar_strkey::Strkey::from_string(cid) {
                        Ok(stellar_strkey::Strkey::Contract(c)) => self.filter.matches_id(&c.0),
                        _ => true,
                    };
                    if keep {
                        self.emit(&raw)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn base64_line(&mut self, line: &str, loc: &str) -> Result<(), DecodeError> {
        if let Ok(lcm) = decode_b64::<LedgerCloseMeta>("LedgerCloseMeta", loc, line, self.limits) {
            return self.lcm(&lcm);
        }
        if let Ok(meta) = decode_b64::<TransactionMeta>("TransactionMeta", loc, line, self.limits) {
            return self.meta(
                TxContext {
                    ledger: 0,
                    tx_hash: "",
                    application_order: 0,
                },
                &meta,
            );
        }
        match decode_b64::<ScVal>("ScVal", loc, line, self.limits) {
            Ok(v) => {
                let json = serde_json::json!({ "type": "scval", "value": v });
                serde_json::to_writer(&mut *self.out, &json).map_err(|e| DecodeError::Write(e.to_string()))?;
                self.out.write_all(b"\n").map_err(|e| DecodeError::Write(e.to_string()))
            }
            Err(e) => Err(parse_err(
                loc,
                format!("not JSON, and not base64 XDR of a LedgerCloseMeta, TransactionMeta or ScVal (as ScVal: {e})"),
            )),
        }
    }
}

/// Decode one golden-fixture event `{topics_xdr: [..], data_xdr}`.
pub fn decode_fixture_event(
    ctx: TxContext<'_>,
    index: u32,
    contract_id: &str,
    ev: &Value,
    loc: &str,
    limits: XdrLimits,
) -> Result<RawContractEvent, DecodeError> {
    let Some(Value::Array(ts)) = ev.get("topics_xdr") else {
        return Err(parse_err(
            format!("{loc}.topics_xdr"),
            "missing or not an array",
        ));
    };
    let mut topics = Vec::with_capacity(ts.len());
    for (i, t) in ts.iter().enumerate() {
        let tloc = format!("{loc}.topics_xdr[{i}]");
        let b64 = t.as_str().ok_or_else(|| parse_err(&tloc, "not a string"))?;
        topics.push(decode_b64::<ScVal>("ScVal", &tloc, b64, limits)?);
    }
    let dloc = format!("{loc}.data_xdr");
    let b64 = get_str(ev, "data_xdr").ok_or_else(|| parse_err(&dloc, "missing"))?;
    let data: ScVal = decode_b64("ScVal", &dloc, b64, limits)?;
    Ok(raw_event(
        ctx,
        0,
        index,
        contract_id.to_string(),
        &topics,
        &data,
        None,
    ))
}

/// Run the decode command: read everything from `input`, write JSON lines to `out`.
pub fn decode(
    input: &mut dyn Read,
    out: &mut dyn Write,
    opts: &DecodeOptions,
) -> Result<DecodeSummary, DecodeError> {
    let name = if opts.source_name.is_empty() {
        "<input>".to_string()
    } else {
        opts.source_name.clone()
    };
    let filter = match &opts.contract {
        Some(c) => ContractFilter::contract(c)?,
        None => ContractFilter::all(),
    };
    let mut text = String::new();
    input
        .read_to_string(&mut text)
        .map_err(|e| DecodeError::Read {
            source_name: name.clone(),
            message: e.to_string(),
        })?;
    let mut d = Decoder {
        out,
        filter,
        limits: opts.limits.unwrap_or_default(),
        summary: DecodeSummary::default(),
    };
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let v: Value = serde_json::from_str(&text).map_err(|e| {
            parse_err(
                format!("{name}: line {} column {}", e.line(), e.column()),
                format!("invalid JSON: {e}"),
            )
        })?;
        d.json(&v, &format!("{name}: $"))?;
    } else {
        let mut any = false;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            any = true;
            d.base64_line(line, &format!("{name}: line {}", i + 1))?;
        }
        if !any {
            return Err(parse_err(name, "empty input"));
        }
    }
    d.out
        .flush()
        .map_err(|e| DecodeError::Write(e.to_string()))?;
    Ok(d.summary)
}
