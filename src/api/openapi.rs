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
        super::admin_webhooks::event_types,
        super::admin_webhooks::create,
        super::admin_webhooks::list,
        super::admin_webhooks::get_one,
        super::admin_webhooks::update,
        super::admin_webhooks::delete,
        super::admin_webhooks::rotate,
        super::admin_webhooks::deliveries,
        super::admin_webhooks::delivery,
        super::admin_webhooks::retry,
        super::admin_webhooks::replay,
        super::admin_webhooks::ping,
    ),
    modifiers(&AdminKey),
    tags(
        (name = "streams", description = "Stream state and history"),
        (name = "events", description = "The global event feed"),
        (name = "ledgers", description = "Ingested ledgers and the reorg log"),
        (name = "frontend", description = "The Fluxora frontend's flat surface (`{\"data\": …}` bodies)"),
        (name = "ops", description = "Health and version"),
        (name = "webhooks-admin", description = "Webhook endpoints and deliveries (`Authorization: Bearer <ADMIN_API_KEY>`)"),
    )
)]
pub struct ApiDoc;

/// The admin API's bearer scheme.
struct AdminKey;

impl utoipa::Modify for AdminKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_key",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

pub fn routes() -> Router<ApiContext> {
    Router::new().route("/openapi.json", get(openapi))
}

async fn openapi() -> Response {
    Json(ApiDoc::openapi()).into_response()
}
