//! A webhook receiver that verifies Fluxora deliveries with the library's `verify` function.
//!
//! ```sh
//! cargo run --release -- demo                      # prints the admin key
//! WEBHOOK_SECRET=whsec_... cargo run --example webhook_receiver   # listens on 127.0.0.1:9000
//! curl -H 'Authorization: Bearer <admin key>' -H 'Content-Type: application/json' \
//!      -d '{"url":"http://127.0.0.1:9000/hook"}' http://127.0.0.1:8787/api/admin/webhooks
//! ```
//!
//! Register first to get the secret (it is shown once), then start the receiver with it; until
//! then deliveries fail and are retried. `RECEIVER_ADDR` changes the address,
//! `WEBHOOK_PREVIOUS_SECRET` adds a rotated-out secret to accept.
//!
//! What it does, in the order a receiver should:
//! 1. reads the body as raw bytes (never re-serialized JSON: the signature covers the bytes);
//! 2. verifies `x-fluxora-*` headers: secret, delivery id, timestamp within 300 s, signature in
//!    constant time (current secret, or the previous one during a rotation), and answers the
//!    verifier's status (400/401/409/413) on failure;
//! 3. deduplicates on `x-fluxora-delivery-id` (a delivery may arrive more than once: at least
//!    once is the guarantee) and answers 200 to a duplicate so that it is not retried;
//! 4. handles `stream.reverted` by undoing what the reverted event did;
//! 5. answers 2xx quickly (within the sender's 30 s timeout); slow work goes to a queue.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use fluxora::webhooks::verify::{verify, VerifyCode, VerifyInput};

#[derive(Clone)]
struct App {
    secret: String,
    previous: Option<String>,
    seen: Arc<Mutex<HashSet<String>>>,
}

async fn hook(State(app): State<App>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    // During a rotation the sender also signs with the previous secret.
    let signature = match (h("x-fluxora-signature"), h("x-fluxora-signature-previous")) {
        (Some(a), Some(b)) => Some(format!("{a},{b}")),
        (a, _) => a.map(str::to_string),
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let seen = app.seen.clone();
    let is_dup = move |id: &str| seen.lock().map(|s| s.contains(id)).unwrap_or(false);
    let v = verify(&VerifyInput {
        secret: Some(&app.secret),
        previous_secret: app.previous.as_deref(),
        delivery_id: h("x-fluxora-delivery-id"),
        timestamp: h("x-fluxora-timestamp"),
        signature: signature.as_deref(),
        raw_body: &body,
        now,
        is_duplicate: Some(&is_dup),
        ..VerifyInput::default()
    });
    match v.code {
        VerifyCode::Ok => {}
        // Already processed: acknowledge so the sender stops retrying.
        VerifyCode::DuplicateDelivery => return (StatusCode::OK, "duplicate".into()),
        _ => {
            eprintln!("rejected: {} ({})", v.code.as_str(), v.message);
            return (
                StatusCode::from_u16(v.status).unwrap_or(StatusCode::UNAUTHORIZED),
                v.code.as_str().into(),
            );
        }
    }
    let id = h("x-fluxora-delivery-id").unwrap_or_default().to_string();
    if let Ok(mut s) = app.seen.lock() {
        s.insert(id.clone());
    }
    let event: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let d = &event["data"];
    match event["type"].as_str().unwrap_or("") {
        "stream.reverted" => println!(
            "{id}: REVERTED {} (event {}, ledger {}) of stream {}: undo it",
            d["revertedType"], d["eventId"], d["ledger"], d["id"]
        ),
        "webhook.ping" => println!("{id}: ping"),
        t => println!(
            "{id}: {t} stream {} status {} streamed {} of {} (ledger {}, position {})",
            d["id"],
            d["status"],
            d["streamedAmount"],
            d["depositAmount"],
            d["ledger"],
            d["position"]
        ),
    }
    (StatusCode::OK, "ok".into())
}

#[tokio::main]
async fn main() {
    let secret = std::env::var("WEBHOOK_SECRET").unwrap_or_else(|_| {
        eprintln!("set WEBHOOK_SECRET to the endpoint's secret (whsec_…)");
        std::process::exit(2)
    });
    let addr: SocketAddr = std::env::var("RECEIVER_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:9000".into())
        .parse()
        .expect("RECEIVER_ADDR is host:port");
    let app = App {
        secret,
        previous: std::env::var("WEBHOOK_PREVIOUS_SECRET").ok(),
        seen: Arc::new(Mutex::new(HashSet::new())),
    };
    let router = Router::new().route("/hook", post(hook)).with_state(app);
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    println!("webhook receiver on http://{addr}/hook");
    axum::serve(listener, router).await.expect("serve");
}
