//! The account page: a user asks for a one-time code, the bot sends it over
//! chat, and the code opens a web session that shows the balance and the
//! recent calls with each leg's cost.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};

use super::layout::{Flash, money, page, time};
use super::public::parse_address;
use super::{WebState, cookie, set_cookie};
use crate::billing::Cdr;

/// The account session cookie.
const COOKIE: &str = "sb_account";
/// Call legs the page lists.
const RECENT_LEGS: u32 = 50;

/// The account routes.
pub fn routes() -> Router<Arc<WebState>> {
    Router::new()
        .route("/account", get(show))
        .route("/account/code", post(send_code))
        .route("/account/login", post(login))
        .route("/account/logout", post(logout))
}

/// The login forms' fields (all optional here, so a missing one gets a
/// message).
#[derive(Debug, Default, serde::Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    address: String,
    #[serde(default)]
    code: String,
}

async fn show(State(state): State<Arc<WebState>>, headers: HeaderMap) -> Response {
    let account = cookie(&headers, COOKIE).and_then(|t| state.logins().account(t, Instant::now()));
    match account {
        Some(account) => account_page(&state, &account).await,
        None => login_page(None, "", false),
    }
}

async fn send_code(State(state): State<Arc<WebState>>, Form(form): Form<LoginForm>) -> Response {
    let jid = match parse_address(&form.address) {
        Ok(jid) => jid,
        Err(why) => return login_page(Some(&Flash::Error(why)), &form.address, false),
    };
    let address = jid.as_str();
    let exists = match state
        .manager
        .services()
        .billing
        .store()
        .account(address)
        .await
    {
        Ok(a) => a.is_some(),
        Err(e) => {
            tracing::error!(error = %e, "cannot read an account");
            let flash = Flash::Error("Accounts cannot be read right now; try again later.".into());
            return login_page(Some(&flash), address, false);
        }
    };
    // The same answer whether or not the account exists: the page does not
    // tell strangers who has one.
    if exists {
        let issued = state.logins().issue(address, Instant::now());
        match issued {
            Ok(code) => {
                let mins = state.logins().code_ttl().as_secs() / 60;
                let text = format!(
                    "Your Switchboard login code is {code}. It is valid for {mins} minutes. \
                     If you did not ask for it, ignore this message."
                );
                if let Err(e) = state.messenger.send(address, &text) {
                    tracing::warn!(error = %e, "cannot send a login code");
                    let flash = Flash::Error(
                        "The bot cannot send messages right now; try again later.".into(),
                    );
                    return login_page(Some(&flash), address, false);
                }
            }
            Err(e) => {
                let flash = Flash::Error(format!("{}.", capitalised(&e.to_string())));
                let mut response = login_page(Some(&flash), address, true);
                *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
                return response;
            }
        }
    }
    let flash = Flash::Ok(format!(
        "If {address} has an account, the bot ({}) has sent it a login code. Enter it below.",
        state.bot_address
    ));
    login_page(Some(&flash), address, true)
}

async fn login(State(state): State<Arc<WebState>>, Form(form): Form<LoginForm>) -> Response {
    let jid = match parse_address(&form.address) {
        Ok(jid) => jid,
        Err(why) => return login_page(Some(&Flash::Error(why)), &form.address, false),
    };
    let code = form.code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        let flash = Flash::Error("The code is the six digits the bot sent you.".into());
        return login_page(Some(&flash), jid.as_str(), true);
    }
    let redeemed = state.logins().redeem(jid.as_str(), code, Instant::now());
    match redeemed {
        Ok(token) => {
            let cookie = set_cookie(
                COOKIE,
                &token,
                "/account",
                super::login::SESSION_IDLE.as_secs(),
            );
            ([(header::SET_COOKIE, cookie)], Redirect::to("/account")).into_response()
        }
        Err(e) => {
            let flash = Flash::Error(format!("{}.", capitalised(&e.to_string())));
            login_page(Some(&flash), jid.as_str(), true)
        }
    }
}

async fn logout(State(state): State<Arc<WebState>>, headers: HeaderMap) -> Response {
    if let Some(token) = cookie(&headers, COOKIE) {
        state.logins().logout(token);
    }
    let cookie = set_cookie(COOKIE, "", "/account", 0);
    ([(header::SET_COOKIE, cookie)], Redirect::to("/account")).into_response()
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn login_page(flash: Option<&Flash>, address: &str, code_sent: bool) -> Response {
    let body = html! {
        p { "Your account is your XMPP address. To see your balance and calls, ask for a login code: the bot sends it to you as a chat message." }
        form #send-code method="post" action="/account/code" {
            label for="address" { "Your XMPP address" }
            input #address type="text" name="address" value=(address) placeholder="alice@example.org" autocomplete="username";
            " "
            button #send-code-button type="submit" { "Send me a code" }
        }
        @if code_sent {
            form #login method="post" action="/account/login" {
                input type="hidden" name="address" value=(address);
                label for="code" { "Code from the bot" }
                input #code type="text" name="code" inputmode="numeric" autocomplete="one-time-code" maxlength="6";
                " "
                button #login-button type="submit" { "Log in" }
            }
        }
    };
    page("Your account", flash, body)
}

async fn account_page(state: &WebState, account: &str) -> Response {
    let store = state.manager.services().billing.store();
    let (record, cdrs) = match (
        store.account(account).await,
        store.cdrs(account, RECENT_LEGS).await,
    ) {
        (Ok(a), Ok(c)) => (a, c),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot read an account");
            let flash =
                Flash::Error("Your account cannot be read right now; try again later.".into());
            return page("Your account", Some(&flash), html! {});
        }
    };
    let body = html! {
        p { "Logged in as " strong #account { (account) } "." }
        form.inline method="post" action="/account/logout" { button #logout type="submit" { "Log out" } }
        @match &record {
            Some(a) => {
                h2 { "Balance" }
                p #balance { strong { (a.available()) " " (a.currency) } }
                @if a.reserved.0 > 0 {
                    p.muted { (a.reserved) " " (a.currency) " is set aside for calls in progress (settled balance " (a.balance) ")." }
                }
            }
            None => p #balance { "This address has no credit yet." }
        }
        h2 { "Recent calls" }
        (calls(&cdrs))
    };
    page("Your account", None, body)
}

/// The legs, newest call first, one row per leg with its cost.
fn calls(cdrs: &[Cdr]) -> Markup {
    if cdrs.is_empty() {
        return html! { p #no-calls { "No calls yet." } };
    }
    html! {
        table #calls {
            tr {
                th { "Started" } th { "Call" } th { "Leg" } th { "To" } th { "Provider" }
                th { "Per minute" } th { "Billed" } th { "Cost" } th { "Ended" }
            }
            @for c in cdrs {
                tr {
                    td { (time(c.started_ms)) }
                    td.muted { (c.session_id) }
                    td { (c.role) }
                    td { (c.address) }
                    td { (c.provider.as_deref().unwrap_or("direct (free)")) }
                    td { (money(c.price_per_minute.0)) }
                    td { @match c.billed_secs { Some(s) => { (s) " s" }, None => "—" } }
                    td.cost { @match c.cost { Some(x) => (x), None => "in progress" } }
                    td { (c.end_reason.as_deref().unwrap_or("")) @if let Some(s) = c.sip_status { " (SIP " (s) ")" } }
                }
            }
        }
    }
}
