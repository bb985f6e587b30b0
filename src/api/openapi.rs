//! `GET /openapi.json`: the OpenAPI 3.1 document, generated from the handlers' annotations and
//! the response types.

use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;

use super::ApiContext;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Fluxora stream ledger",
        description = "Streams, events, ledgers and health of the Fluxora token-streaming contract, indexed from Stellar. Amounts are decimal strings with the token's decimals.",
    ),
    paths(
        super::streams::list_streams,
        super::streams::get_stream,
        super::streams::stream_events,
        super::feed::events,
        super::feed::ledger,
        super::feed::reorgs,
        super::frontend::list,
        super::frontend::one,
        super::frontend::by_recipient,
        super::frontend::treasury_metrics,
        super::health::health,
        super::health::version,
    ),
    tags(
        (name = "streams", description = "Stream state and history"),
        (name = "events", description = "The global event feed"),
        (name = "ledgers", description = "Ingested ledgers and the reorg log"),
        (name = "frontend", description = "The Fluxora frontend's flat surface (`{\"data\": …}` bodies)"),
        (name = "ops", description = "Health and version"),
    )
)]
pub struct ApiDoc;

pub fn routes() -> Router<ApiContext> {
    Router::new().route("/openapi.json", get(openapi))
}

async fn openapi() -> Response {
    Json(ApiDoc::openapi()).into_response()
}
