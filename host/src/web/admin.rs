//! The operators' pages and JSON API: plugin slots (upload a version,
//! roll back, run a candidate router in the shadow and promote it), live
//! sessions (end one), providers with their statistics, credit top-up.
//!
//! The pages sit behind a login with the admin token (a session cookie
//! scoped to `/admin`, `SameSite=Strict`); the API under `/admin/api`
//! wants the token itself on every request (`Authorization: Bearer …`).
//! Both call the same operations, so they validate alike.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::multipart::MultipartRejection;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Form, Multipart, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use maud::html;

use super::layout::{Flash, page, time};
use super::public::parse_address;
use super::{WebState, cookie, set_cookie};
use crate::billing::{BillingError, Micros, unix_ms};
use crate::plugin::{PluginError, ShadowStats, SlotName, SlotStats, VersionId};
use crate::session::SessionView;

/// The admin session cookie.
const COOKIE: &str = "sb_admin";

/// The admin routes: pages and API.
pub fn routes() -> Router<Arc<WebState>> {
    Router::new()
        .route("/admin", get(dashboard))
        .route("/admin/login", post(login))
        .route("/admin/logout", post(logout))
        .route("/admin/plugins/upload", post(page_upload))
        .route("/admin/plugins/rollback", post(page_rollback))
        .route("/admin/shadow/upload", post(page_shadow_upload))
        .route("/admin/shadow/promote", post(page_shadow_promote))
        .route("/admin/shadow/stop", post(page_shadow_stop))
        .route("/admin/sessions/end", post(page_end_session))
        .route("/admin/credit", post(page_credit))
        .route("/admin/api/plugins", get(api_plugins))
        .route("/admin/api/plugins/{slot}", put(api_upload))
        .route("/admin/api/plugins/{slot}/rollback", post(api_rollback))
        .route(
            "/admin/api/shadow",
            get(api_shadow)
                .put(api_shadow_upload)
                .delete(api_shadow_stop),
        )
        .route("/admin/api/shadow/promote", post(api_shadow_promote))
        .route("/admin/api/sessions", get(api_sessions))
        .route("/admin/api/sessions/{id}", delete(api_end_session))
        .route("/admin/api/providers", get(api_providers))
        .route("/admin/api/credit", post(api_credit))
        .route("/admin/api/reload", post(api_reload))
        .route("/admin/api/drain", post(api_drain))
}

/// Why an admin operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The request is missing something or holds a bad value.
    #[error("{0}")]
    BadInput(String),
    /// The plugin host refused (a candidate failing its checks, nothing to
    /// roll back to...).
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// No such session.
    #[error("no live session {0}")]
    NoSession(String),
    /// The database refused or failed.
    #[error(transparent)]
    Billing(#[from] BillingError),
    /// What was asked cannot be done by this process (the demo takes no
    /// reload), or it failed (a configuration that does not load).
    #[error("{0}")]
    Unavailable(String),
}

impl AdminError {
    fn status(&self) -> StatusCode {
        match self {
            AdminError::BadInput(_) | AdminError::Plugin(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AdminError::NoSession(_) => StatusCode::NOT_FOUND,
            AdminError::Billing(BillingError::Refused(_)) => StatusCode::UNPROCESSABLE_ENTITY,
            AdminError::Billing(_) | AdminError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        (
            self.status(),
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

// ---- the operations, shared by pages and API ----

fn slot_of(name: &str) -> Result<SlotName, AdminError> {
    SlotName::from_str(name.trim()).map_err(|_| {
        AdminError::BadInput(format!(
            "unknown plugin slot {name:?}: use parser, router or replies"
        ))
    })
}

/// Loads `bytes` as a new version of `slot` (compile, imports, world,
/// conformance), off the async threads.
async fn upload_version(
    state: &WebState,
    slot: SlotName,
    bytes: Vec<u8>,
    origin: String,
) -> Result<VersionId, AdminError> {
    if bytes.is_empty() {
        return Err(AdminError::BadInput(
            "the file is empty: choose a .wasm component".into(),
        ));
    }
    let plugins = Arc::clone(&state.manager.services().plugins);
    let loaded = tokio::task::spawn_blocking(move || plugins.load(slot, &bytes, &origin))
        .await
        .map_err(|e| AdminError::BadInput(format!("the upload was interrupted: {e}")))?;
    Ok(loaded?)
}

async fn load_shadow(
    state: &WebState,
    bytes: Vec<u8>,
    origin: String,
) -> Result<VersionId, AdminError> {
    if bytes.is_empty() {
        return Err(AdminError::BadInput(
            "the file is empty: choose a .wasm router component".into(),
        ));
    }
    let plugins = Arc::clone(&state.manager.services().plugins);
    let loaded = tokio::task::spawn_blocking(move || plugins.load_shadow(&bytes, &origin))
        .await
        .map_err(|e| AdminError::BadInput(format!("the upload was interrupted: {e}")))?;
    Ok(loaded?)
}

async fn promote_shadow(state: &WebState) -> Result<VersionId, AdminError> {
    let plugins = Arc::clone(&state.manager.services().plugins);
    let promoted = tokio::task::spawn_blocking(move || plugins.promote_shadow())
        .await
        .map_err(|e| AdminError::BadInput(format!("the promotion was interrupted: {e}")))?;
    Ok(promoted?)
}

/// Adds `amount` (a positive decimal) to `account`'s credit; returns the
/// new balance.
async fn top_up(state: &WebState, account: &str, amount: &str) -> Result<Micros, AdminError> {
    let jid = parse_address(account).map_err(AdminError::BadInput)?;
    let amount = amount.trim();
    if amount.is_empty() {
        return Err(AdminError::BadInput(
            "enter an amount, like 10 or 2.50".into(),
        ));
    }
    let amount = Micros::from_str(amount)
        .map_err(|e| AdminError::BadInput(format!("amount {amount:?}: {e}")))?;
    if amount.0 <= 0 {
        return Err(AdminError::BadInput(
            "a top-up must be more than zero".into(),
        ));
    }
    if amount.0 > 1_000_000 * 1_000_000 {
        return Err(AdminError::BadInput(
            "a top-up is at most 1000000 at a time".into(),
        ));
    }
    let services = state.manager.services();
    let now = unix_ms(SystemTime::now());
    Ok(services
        .billing
        .store()
        .credit(jid.as_str(), amount, &services.currency, now)
        .await?)
}

/// A provider as the admin page and API show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProviderView {
    /// Its name.
    pub name: String,
    /// Its SIP address.
    pub address: String,
    /// What the last OPTIONS probe said; none when it is not probed.
    pub up: Option<bool>,
    /// Attempts in the statistics window.
    pub attempts: u32,
    /// Of which answered.
    pub answered: u32,
    /// Answer-seizure ratio in basis points (10000 = all answered).
    pub asr_bp: Option<u32>,
    /// Average talk time, seconds.
    pub acd_secs: Option<u32>,
    /// Average post-dial delay, ms.
    pub pdd_ms: Option<u32>,
    /// Its registration, when it registers.
    pub registration: Option<crate::sip::RegistrationView>,
}

fn providers(state: &WebState) -> Vec<ProviderView> {
    let services = state.manager.services();
    let now = unix_ms(SystemTime::now());
    let registrations = services.sip.registrations();
    let mut list: Vec<ProviderView> = services
        .providers
        .iter()
        .map(|(name, address)| {
            let s = services.billing.provider_stats(name, now);
            ProviderView {
                name: name.clone(),
                address: address.to_string(),
                up: services.probed_up(name),
                attempts: s.attempts,
                answered: s.answered,
                asr_bp: s.asr_bp,
                acd_secs: s.acd_secs,
                pdd_ms: s.pdd_ms,
                registration: registrations.get(name).cloned(),
            }
        })
        .collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    list
}

/// A registration in words: registered until when, or failed with the
/// reason and the next try.
fn registration_text(view: Option<&crate::sip::RegistrationView>) -> String {
    let Some(view) = view else {
        return "—".into();
    };
    let at = |ms: Option<i64>| ms.map_or_else(|| "?".into(), super::layout::time);
    match view.state {
        "registered" => format!("registered until {}", at(view.until_ms)),
        "failed" => format!(
            "failed: {}; next try {}",
            view.reason.as_deref().unwrap_or("?"),
            at(view.retry_ms)
        ),
        other => other.to_string(),
    }
}

/// A slot as the API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SlotView {
    /// `parser`, `router` or `replies`.
    pub slot: &'static str,
    /// Its versions and counters.
    #[serde(flatten)]
    pub stats: SlotStats,
}

fn slots(state: &WebState) -> Vec<SlotView> {
    let plugins = &state.manager.services().plugins;
    SlotName::ALL
        .into_iter()
        .map(|slot| SlotView {
            slot: slot.as_str(),
            stats: plugins.stats(slot),
        })
        .collect()
}

// ---- the API ----

/// The answer to a request without the admin token; none when it has it.
fn api_refusal(state: &WebState, headers: &HeaderMap) -> Option<Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if token.is_some_and(|t| state.is_admin_token(t.trim())) {
        return None;
    }
    Some(
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"switchboard-admin\"")],
            Json(serde_json::json!({ "error": "the admin API needs the admin token: Authorization: Bearer <token>" })),
        )
            .into_response(),
    )
}

macro_rules! authorised {
    ($state:expr, $headers:expr) => {
        if let Some(refused) = api_refusal(&$state, &$headers) {
            return refused;
        }
    };
}

fn origin_of(headers: &HeaderMap, fallback: &str) -> String {
    headers
        .get("x-plugin-origin")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(200).collect())
        .unwrap_or_else(|| fallback.to_string())
}

fn json_result<T: serde::Serialize>(result: Result<T, AdminError>) -> Response {
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn api_plugins(State(state): State<Arc<WebState>>, headers: HeaderMap) -> Response {
    authorised!(state, headers);
    Json(slots(&state)).into_response()
}

async fn api_upload(
    State(state): State<Arc<WebState>>,
    headers: HeaderMap,
    Path(slot): Path<String>,
    body: Bytes,
) -> Response {
    authorised!(state, headers);
    let result = async {
        let slot = slot_of(&slot)?;
        let origin = origin_of(&headers, "admin API upload");
        let version = upload_version(&state, slot, body.to_vec(), origin).await?;
        Ok::<_, AdminError>(
            serde_json::json!({ "slot": slot.as_str(), "version": version.as_str() }),
        )
    };
    json_result(result.await)
}

async fn api_rollback(
    State(state): State<Arc<WebState>>,
    headers: HeaderMap,
    Path(slot): Path<String>,
) -> Response {
    authorised!(state, headers);
    let result = slot_of(&slot).and_then(|slot| {
        let version = state.manager.services().plugins.rollback(slot)?;
        Ok(serde_json::json!({ "slot": slot.as_str(), "version": version.as_str() }))
    });
    json_result(result)
}

async fn api_shadow(State(state): State<Arc<WebState>>, headers: HeaderMap) -> Response {
    authorised!(state, headers);
    Json(state.manager.services().plugins.shadow_stats()).into_response()
}

async fn api_shadow_upload(
    State(state): State<Arc<WebState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    authorised!(state, headers);
    let origin = origin_of(&headers, "admin API upload");
    let result = load_shadow(&state, body.to_vec(), origin)
        .await
        .map(|v| serde_json::json!({ "shadow": v.as_str() }));
    json_result(result)
}

async fn api_shadow_stop(State(state): State<Arc<WebState>>, headers: HeaderMap) -> Response {
    authorised!(state, headers);
    let stopped = state.manager.services().plugins.clear_shadow();
    Json(serde_json::json!({ "stopped": stopped })).into_response()
}

async fn api_shadow_promote(State(state): State<Arc<WebState>>, headers: HeaderMap) -> Response {
    authorised!(state, headers);
    let result = promote_shadow(&state)
        .await
        .map(|v| serde_json::json!({ "slot": "router", "version": v.as_str() }));
    json_result(result)
}

async fn api_sessions(State(state): State<Arc<WebState>>, headers: HeaderMap) -> Response {
    authorised!(state, headers);
    Json(state.manager.sessions().await).into_response()
}

async fn api_end_session(
    State(state): State<Arc<WebState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    authorised!(state, headers);
    if state.manager.end(&id) {
        (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "ending": id })),
        )
            .into_response()
    } else {
        AdminError::NoSession(id).into_response()
    }
}

async fn api_providers(State(state): State<Arc<WebState>>, headers: HeaderMap) -> Response {
    authorised!(state, headers);
    Json(providers(&state)).into_response()
}

/// Re-reads the configuration file, as SIGHUP does: what was applied and
/// what needs a restart, or why the file was refused (nothing changes then).
async fn api_reload(State(state): State<Arc<WebState>>, headers: HeaderMap) -> Response {
    authorised!(state, headers);
    let (tx, rx) = tokio::sync::oneshot::channel();
    if !state.control(crate::service::Control::Reload(tx)) {
        return AdminError::Unavailable("this process does not take reloads".into())
            .into_response();
    }
    match rx.await {
        Ok(Ok(report)) => Json(report).into_response(),
        Ok(Err(why)) => {
            AdminError::Unavailable(format!("configuration not reloaded: {why}")).into_response()
        }
        Err(_) => AdminError::Unavailable("the process is stopping".into()).into_response(),
    }
}

/// Starts a drain, as SIGUSR1 does: no new CALLBACKs, live calls go on for
/// up to `[sessions] drain_secs`, then the process exits.
async fn api_drain(State(state): State<Arc<WebState>>, headers: HeaderMap) -> Response {
    authorised!(state, headers);
    let (tx, rx) = tokio::sync::oneshot::channel();
    if !state.control(crate::service::Control::Drain(tx)) {
        return AdminError::Unavailable("this process does not drain".into()).into_response();
    }
    let started = rx.await.unwrap_or(false);
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({
            "draining": true,
            "started_now": started,
            "live_sessions": state.manager.live(),
        })),
    )
        .into_response()
}

/// A top-up's fields.
#[derive(Debug, Default, serde::Deserialize)]
pub struct CreditForm {
    #[serde(default)]
    account: String,
    #[serde(default)]
    amount: String,
}

async fn api_credit(
    State(state): State<Arc<WebState>>,
    headers: HeaderMap,
    body: Result<Json<CreditForm>, JsonRejection>,
) -> Response {
    authorised!(state, headers);
    let Json(form) = match body {
        Ok(b) => b,
        Err(e) => {
            return AdminError::BadInput(format!(
                "the body must be JSON {{\"account\": ..., \"amount\": \"10.00\"}}: {e}"
            ))
            .into_response();
        }
    };
    let result = top_up(&state, &form.account, &form.amount).await.map(|balance| {
        serde_json::json!({ "account": form.account.trim(), "balance": balance.to_string(), "currency": state.manager.services().currency })
    });
    json_result(result)
}

// ---- the pages ----

fn page_admin(state: &WebState, headers: &HeaderMap) -> bool {
    cookie(headers, COOKIE).is_some_and(|t| state.logins().is_admin(t, Instant::now()))
}

fn login_page(flash: Option<&Flash>) -> Response {
    let body = html! {
        form #admin-login method="post" action="/admin/login" {
            label for="token" { "Admin token" }
            input #token type="password" name="token" autocomplete="current-password";
            " "
            button #admin-login-button type="submit" { "Log in" }
        }
    };
    let mut response = page("Admin", flash, body);
    if flash.is_none() {
        *response.status_mut() = StatusCode::UNAUTHORIZED;
    }
    response
}

/// The login form's field.
#[derive(Debug, Default, serde::Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    token: String,
}

async fn login(State(state): State<Arc<WebState>>, Form(form): Form<TokenForm>) -> Response {
    if form.token.trim().is_empty() {
        return login_page(Some(&Flash::Error("Enter the admin token.".into())));
    }
    if !state.is_admin_token(form.token.trim()) {
        let mut r = login_page(Some(&Flash::Error("That is not the admin token.".into())));
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        return r;
    }
    let opened = state.logins().admin_login(Instant::now());
    match opened {
        Ok(token) => {
            let cookie = set_cookie(
                COOKIE,
                &token,
                "/admin",
                super::login::SESSION_IDLE.as_secs(),
            );
            ([(header::SET_COOKIE, cookie)], Redirect::to("/admin")).into_response()
        }
        Err(e) => login_page(Some(&Flash::Error(e.to_string()))),
    }
}

async fn logout(State(state): State<Arc<WebState>>, headers: HeaderMap) -> Response {
    if let Some(t) = cookie(&headers, COOKIE) {
        state.logins().logout(t);
    }
    (
        [(header::SET_COOKIE, set_cookie(COOKIE, "", "/admin", 0))],
        Redirect::to("/admin"),
    )
        .into_response()
}

async fn dashboard(State(state): State<Arc<WebState>>, headers: HeaderMap) -> Response {
    if !page_admin(&state, &headers) {
        return login_page(None);
    }
    dashboard_page(&state, None).await
}

/// The fields of an upload form.
struct Upload {
    slot: Option<String>,
    file: Option<(String, Vec<u8>)>,
}

async fn read_upload(form: Result<Multipart, MultipartRejection>) -> Result<Upload, AdminError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| AdminError::BadInput(format!("{what}: {e}"));
    let mut form = form.map_err(|e| bad("the upload is not a file form", &e))?;
    let mut upload = Upload {
        slot: None,
        file: None,
    };
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| bad("the upload could not be read", &e))?
    {
        match field.name() {
            Some("slot") => {
                let text = field.text().await;
                upload.slot = Some(text.map_err(|e| bad("the slot could not be read", &e))?);
            }
            Some("file") => {
                let name = field
                    .file_name()
                    .unwrap_or("upload.wasm")
                    .chars()
                    .take(200)
                    .collect();
                let bytes = field.bytes().await;
                let bytes =
                    bytes.map_err(|e| bad("the file could not be read (too large?)", &e))?;
                upload.file = Some((name, bytes.to_vec()));
            }
            _ => {}
        }
    }
    Ok(upload)
}

/// The dashboard after a form's operation: its outcome on top, or the
/// login form when the request has no admin session (the operation is
/// then not run).
macro_rules! page_operation {
    ($state:expr, $headers:expr, $refused:literal, $operation:expr) => {{
        if !page_admin(&$state, &$headers) {
            return login_page(None);
        }
        let outcome: Result<String, AdminError> = $operation.await;
        let flash = match outcome {
            Ok(text) => Flash::Ok(text),
            Err(e) => Flash::Error(format!("{}: {e}", $refused)),
        };
        dashboard_page(&$state, Some(&flash)).await
    }};
}

async fn page_upload(
    State(state): State<Arc<WebState>>,
    headers: HeaderMap,
    form: Result<Multipart, MultipartRejection>,
) -> Response {
    page_operation!(state, headers, "Upload refused", async {
        let upload = read_upload(form).await?;
        let slot = slot_of(upload.slot.as_deref().unwrap_or(""))?;
        let Some((name, bytes)) = upload.file else {
            return Err(AdminError::BadInput("choose a .wasm file to upload".into()));
        };
        let version = upload_version(&state, slot, bytes, format!("upload {name}")).await?;
        Ok(format!(
            "{name} is now the active {slot} plugin (version {version})."
        ))
    })
}

/// A form naming a slot.
#[derive(Debug, Default, serde::Deserialize)]
pub struct SlotForm {
    #[serde(default)]
    slot: String,
}

async fn page_rollback(
    State(state): State<Arc<WebState>>,
    headers: HeaderMap,
    Form(form): Form<SlotForm>,
) -> Response {
    page_operation!(state, headers, "Rollback refused", async {
        let slot = slot_of(&form.slot)?;
        let version = state.manager.services().plugins.rollback(slot)?;
        Ok(format!("The {slot} slot is back on version {version}."))
    })
}

async fn page_shadow_upload(
    State(state): State<Arc<WebState>>,
    headers: HeaderMap,
    form: Result<Multipart, MultipartRejection>,
) -> Response {
    page_operation!(state, headers, "Shadow router refused", async {
        let upload = read_upload(form).await?;
        let Some((name, bytes)) = upload.file else {
            return Err(AdminError::BadInput(
                "choose a .wasm router to run in the shadow".into(),
            ));
        };
        let version = load_shadow(&state, bytes, format!("upload {name}")).await?;
        Ok(format!(
            "{name} (version {version}) now routes in the shadow of the active router; its answers reach no call."
        ))
    })
}

async fn page_shadow_promote(State(state): State<Arc<WebState>>, headers: HeaderMap) -> Response {
    page_operation!(state, headers, "Promotion refused", async {
        let version = promote_shadow(&state).await?;
        Ok(format!(
            "The shadow router (version {version}) is now the active router."
        ))
    })
}

async fn page_shadow_stop(State(state): State<Arc<WebState>>, headers: HeaderMap) -> Response {
    page_operation!(state, headers, "Cannot stop", async {
        if !state.manager.services().plugins.clear_shadow() {
            return Err(AdminError::BadInput("no shadow router runs".into()));
        }
        Ok("The shadow router is stopped.".to_string())
    })
}

/// A form naming a session.
#[derive(Debug, Default, serde::Deserialize)]
pub struct SessionForm {
    #[serde(default)]
    id: String,
}

async fn page_end_session(
    State(state): State<Arc<WebState>>,
    headers: HeaderMap,
    Form(form): Form<SessionForm>,
) -> Response {
    page_operation!(state, headers, "Cannot end it", async {
        let id = form.id.trim();
        if id.is_empty() {
            return Err(AdminError::BadInput("no session given".into()));
        }
        if !state.manager.end(id) {
            return Err(AdminError::NoSession(format!(
                "{id} (it may have just ended)"
            )));
        }
        // Give it a moment, so the list below no longer shows it.
        for _ in 0..20 {
            if state.manager.sessions().await.iter().all(|s| s.id != id) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Ok(format!(
            "Session {id} is ended; its owner was told (Reason = EndedByOperator)."
        ))
    })
}

async fn page_credit(
    State(state): State<Arc<WebState>>,
    headers: HeaderMap,
    Form(form): Form<CreditForm>,
) -> Response {
    page_operation!(state, headers, "Top-up refused", async {
        let balance = top_up(&state, &form.account, &form.amount).await?;
        let currency = &state.manager.services().currency;
        Ok(format!(
            "Credited {} {currency} to {}: the balance is now {balance} {currency}.",
            form.amount.trim(),
            form.account.trim(),
        ))
    })
}

async fn dashboard_page(state: &WebState, flash: Option<&Flash>) -> Response {
    let sessions = state.manager.sessions().await;
    let shadow = state.manager.services().plugins.shadow_stats();
    let body = html! {
        form.inline method="post" action="/admin/logout" { button #admin-logout type="submit" { "Log out" } }
        p.muted { "Up " (state.started.elapsed().as_secs()) " s. JSON API under " code { "/admin/api" } " with " code { "Authorization: Bearer <token>" } "; " a href="/metrics" { "metrics" } ", " a href="/health" { "health" } "." }
        section #sessions {
            h2 { "Live sessions (" (sessions.len()) ")" }
            @if sessions.is_empty() {
                p #no-sessions { "No calls in progress." }
            } @else {
                table {
                    tr { th { "Session" } th { "Owner" } th { "Started" } th { "Legs" } th {} }
                    @for s in &sessions { (session_row(s)) }
                }
            }
        }
        section #providers {
            h2 { "Providers" }
            table {
                tr { th { "Name" } th { "Address" } th { "Status" } th { "Registration" } th { "Attempts" } th { "ASR" } th { "ACD" } th { "PDD" } }
                @for p in providers(state) {
                    tr id={ "provider-" (p.name) } {
                        td { (p.name) }
                        td { (p.address) }
                        td.status { @match p.up { Some(true) => "up", Some(false) => "down", None => "not probed" } }
                        td.registration { (registration_text(p.registration.as_ref())) }
                        td.attempts { (p.attempts) " (" (p.answered) " answered)" }
                        td.asr { @match p.asr_bp { Some(bp) => { (bp / 100) "." (format!("{:02}", bp % 100)) " %" }, None => "—" } }
                        td.acd { @match p.acd_secs { Some(s) => { (s) " s" }, None => "—" } }
                        td.pdd { @match p.pdd_ms { Some(ms) => { (ms) " ms" }, None => "—" } }
                    }
                }
            }
        }
        section #plugins {
            h2 { "Plugins" }
            table {
                tr { th { "Slot" } th { "Active version" } th { "From" } th { "Previous" } th { "Calls" } th { "Fallbacks" } th { "Traps / out of fuel / backstop / invalid" } th { "Suspicious" } th { "Breaker" } th {} }
                @for s in slots(state) {
                    tr id={ "slot-" (s.slot) } {
                        td { (s.slot) }
                        td.version { code { (s.stats.active) } }
                        td.origin { (s.stats.active_origin) }
                        td { @if let Some(p) = &s.stats.previous { code { (p) } } @else { "—" } }
                        td { (s.stats.calls) }
                        td { (s.stats.fallbacks) }
                        td { (s.stats.traps) " / " (s.stats.out_of_fuel) " / " (s.stats.deadlines) " / " (s.stats.invalid) }
                        td.suspicious { (s.stats.suspicious) }
                        td.breaker {
                            (s.stats.breaker_trips) " trips"
                            @if let Some(why) = &s.stats.last_breaker_trip { br; small { (why) } }
                        }
                        td {
                            form.inline method="post" action="/admin/plugins/rollback" {
                                input type="hidden" name="slot" value=(s.slot);
                                button id={ "rollback-" (s.slot) } type="submit" disabled[s.stats.previous.is_none()] { "Roll back" }
                            }
                        }
                    }
                }
            }
            form #upload method="post" action="/admin/plugins/upload" enctype="multipart/form-data" {
                label for="upload-slot" { "Upload a new version" }
                select #upload-slot name="slot" {
                    @for slot in SlotName::ALL { option value=(slot.as_str()) { (slot.as_str()) } }
                }
                " "
                input #upload-file type="file" name="file" accept=".wasm";
                " "
                button #upload-button type="submit" { "Upload" }
            }
            p.muted { "A new version is compiled, type-checked and run through the slot's conformance set before it replaces the running one; calls in progress are not dropped." }
        }
        section #shadow {
            h2 { "Shadow routing" }
            p { "A candidate router answers every routing request beside the active one; its answers reach no call. Here is where they differ." }
            @match &shadow {
                Some(s) => (shadow_table(s)),
                None => p #no-shadow { "No shadow router runs." },
            }
            form #shadow-upload method="post" action="/admin/shadow/upload" enctype="multipart/form-data" {
                label for="shadow-file" { "Run a candidate router in the shadow" }
                input #shadow-file type="file" name="file" accept=".wasm";
                " "
                button #shadow-upload-button type="submit" { "Start shadow" }
            }
            @if shadow.is_some() {
                form.inline method="post" action="/admin/shadow/promote" { button #shadow-promote type="submit" { "Promote to active router" } }
                " "
                form.inline method="post" action="/admin/shadow/stop" { button #shadow-stop type="submit" { "Stop shadow" } }
            }
        }
        section #credit {
            h2 { "Credit top-up" }
            form #credit-form method="post" action="/admin/credit" {
                label for="credit-account" { "Account (XMPP address)" }
                input #credit-account type="text" name="account" placeholder="alice@example.org";
                label for="credit-amount" { "Amount (" (state.manager.services().currency) ")" }
                input #credit-amount type="text" name="amount" placeholder="10.00" inputmode="decimal";
                " "
                button #credit-button type="submit" { "Add credit" }
            }
        }
    };
    page("Admin", flash, body)
}

fn session_row(s: &SessionView) -> maud::Markup {
    html! {
        tr.session data-id=(s.id) {
            td { code { (s.id) } }
            td.owner { (s.owner) }
            td { (time(s.started_ms)) }
            td {
                @for l in &s.legs {
                    div.leg {
                        (l.role) ": " (l.address)
                        @if let Some(p) = &l.provider { " via " (p) }
                        " — " (l.state)
                        @if let Some(secs) = l.talking_secs { " " (secs) " s" }
                    }
                }
            }
            td {
                form.inline method="post" action="/admin/sessions/end" {
                    input type="hidden" name="id" value=(s.id);
                    button.end type="submit" { "End" }
                }
            }
        }
    }
}

fn shadow_table(s: &ShadowStats) -> maud::Markup {
    let differ = s.first_differs + s.order_differs;
    let percent = |n: u64| {
        if s.compared == 0 {
            "—".to_string()
        } else {
            format!("{:.1} %", n as f64 * 100.0 / s.compared as f64)
        }
    };
    html! {
        table #shadow-stats {
            tr { th { "Candidate" } td { code { (s.version) } " from " (s.origin) ", since " (time(s.since_ms)) } }
            tr { th { "Routing requests" } td.requests { (s.requests) } }
            tr { th { "Compared" } td.compared { (s.compared) } }
            tr { th { "Same answer" } td.same { (s.same) } }
            tr { th { "Different" } td.differ { (differ) " (" (percent(differ)) "): first choice " (s.first_differs) ", failover order only " (s.order_differs) } }
            tr { th { "Shadow failed / skipped" } td { (s.failed) " / " (s.skipped) } }
        }
        @if !s.by_prefix.is_empty() {
            table #shadow-prefixes {
                tr { th { "Destination prefix" } th { "Compared" } th { "Different" } }
                @for (prefix, f) in &s.by_prefix { tr { td { "+" (prefix) "…" } td { (f.compared) } td { (f.differ) } } }
            }
        }
        @if !s.moves.is_empty() {
            table #shadow-moves {
                tr { th { "First choice: active → candidate" } th { "Times" } }
                @for (m, n) in &s.moves { tr { td { (m) } td { (n) } } }
            }
        }
        @if !s.recent.is_empty() {
            table #shadow-recent {
                tr { th { "When" } th { "Leg" } th { "Active" } th { "Candidate" } }
                @for d in &s.recent {
                    tr { td { (time(d.at_ms)) } td { (d.leg) } td { (d.active.join(", ")) } td { (d.candidate.join(", ")) } }
                }
            }
        }
    }
}
