//! The public pages: what the service does and how to use it, with the
//! Invite form (the seed's second way to subscribe), and the rates page.

use std::str::FromStr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use maud::html;
use tokio_xmpp::parsers::jid::BareJid;

use super::WebState;
use super::layout::{Flash, money, page};
use crate::billing::Refusal;

/// Rows the rates page shows at most.
const MAX_RATE_ROWS: usize = 200;

/// The public routes.
pub fn routes() -> Router<Arc<WebState>> {
    Router::new()
        .route("/", get(landing))
        .route("/invite", post(invite))
        .route("/rates", get(rates))
}

/// The Invite form's fields. Every field is optional here so that a
/// missing one gets a message, not a bare rejection.
#[derive(Debug, Default, serde::Deserialize)]
pub struct InviteForm {
    #[serde(default)]
    address: String,
}

async fn landing(State(state): State<Arc<WebState>>) -> Response {
    landing_page(&state, None, "")
}

async fn invite(State(state): State<Arc<WebState>>, Form(form): Form<InviteForm>) -> Response {
    let jid = match parse_address(&form.address) {
        Ok(jid) => jid,
        Err(why) => return landing_page(&state, Some(&Flash::Error(why)), &form.address),
    };
    if !state.may_invite(jid.as_str(), std::time::Instant::now()) {
        let flash = Flash::Error(format!(
            "An invitation went to {jid} moments ago (or too many went out at once); check your messenger, or try again in a minute."
        ));
        let mut response = landing_page(&state, Some(&flash), jid.as_str());
        *response.status_mut() = axum::http::StatusCode::TOO_MANY_REQUESTS;
        return response;
    }
    let flash = match state.messenger.invite(jid.as_str()) {
        Ok(()) => Flash::Ok(format!(
            "Invitation sent to {jid}. Accept it in your messenger, then send HELP to {}.",
            state.bot_address
        )),
        Err(e) => {
            tracing::warn!(error = %e, "cannot send an invitation");
            Flash::Error("The bot cannot send invitations right now; try again later.".into())
        }
    };
    landing_page(&state, Some(&flash), "")
}

/// A chat address from a form: a bare XMPP address with a name part.
pub fn parse_address(input: &str) -> Result<BareJid, String> {
    let input = input.trim();
    let input = input.strip_prefix("xmpp:").unwrap_or(input);
    if input.is_empty() {
        return Err("Enter your XMPP address, like alice@example.org.".into());
    }
    if input.chars().count() > 3071 {
        return Err("That address is too long to be an XMPP address.".into());
    }
    let jid = BareJid::from_str(input).map_err(|e| {
        format!("{input:?} is not an XMPP address ({e}); use the form alice@example.org.")
    })?;
    if jid.node().is_none() {
        return Err(format!(
            "{input:?} is a server, not a person: an XMPP address has a name before the @ (alice@example.org)."
        ));
    }
    Ok(jid)
}

fn landing_page(state: &WebState, flash: Option<&Flash>, typed: &str) -> Response {
    let bot = &state.bot_address;
    let body = html! {
        p {
            "Call any phone from your instant messenger. Send the bot one message and it rings your phone, "
            "then the number you want, and connects the two: a callback call. Add more people and it becomes "
            "a conference. Every phone leg is billed per second from prepaid credit."
        }
        section {
            h2 { "1. Subscribe" }
            p { "Either add " code { (bot) } " to your contacts in any XMPP (Jabber) messenger, or enter your address here and accept the invitation the bot sends you:" }
            form #invite method="post" action="/invite" {
                label for="address" { "Your XMPP address" }
                input #address type="text" name="address" placeholder="alice@example.org" value=(typed) autocomplete="username";
                " "
                button #invite-button type="submit" { "Invite" }
            }
        }
        section {
            h2 { "2. Call" }
            p { "Send the bot:" }
            pre { "CALLBACK [phone:|gtalk:|yahoo:|msn:|sip:]SourceLeg [phone:|gtalk:|yahoo:|msn:|sip:]DestinationLeg [via provider1 provider2]" }
            p {
                "SourceLeg is where you are, DestinationLeg who you are calling. Phone numbers are written in international "
                "format (" code { "+442071234567" } " or " code { "phone:442071234567" } "). Without providers the bot tries "
                "the best rated provider first (answer rate and call length), then the next."
            }
            table {
                tr { th { "Example" } th { "What it does" } }
                tr { td { code { "CALLBACK +442071234567 +4915112345678" } } td { "rings your phone, then the destination, and connects you" } }
                tr { td { code { "CALLBACK +442071234567 +4915112345678 via MKS AVANGARD" } } td { "the same, your leg through MKS and the destination's through AVANGARD" } }
                tr { td { code { "CALLBACK sip:me@example.org +4915112345678" } } td { "rings your SIP phone first (free), then the number" } }
                tr { td { code { "CALLBACK +442071234567 gtalk:friend@example.org" } } td { "rings your phone, then an IM user through the gateway" } }
            }
        }
        section {
            h2 { "3. Talk, add people, hang up" }
            p { "Once the bot says " em { "Remote answered. Now talking." } ":" }
            table {
                tr { td { code { "LIST" } } td { "lists the connected legs: source, destination and additional" } }
                tr { td { code { "ADD +442071234568 [provider]" } } td { "calls one more party into the conference" } }
                tr { td { code { "DEL +442071234568" } } td { "drops an additional party (the source and destination cannot be dropped)" } }
                tr { td { code { "HANGUP" } } td { "ends the whole call" } }
                tr { td { code { "BALANCE" } } td { "tells your credit" } }
            }
            p { "If the source or the destination hangs up, the whole call ends; an additional party leaving does not." }
        }
        section {
            h2 { "Billing" }
            ul {
                li { "Calls to SIP addresses and IM users are free; phone legs are paid from prepaid credit." }
                li { "Each phone leg is billed separately, per second: with two phone legs you pay both. See the " a href="/rates" { "rates" } "." }
                li { "Your " a href="/account" { "account page" } " shows your balance and your calls, leg by leg." }
                li { "This service is not for emergency calls." }
            }
        }
    };
    page("Calls from your messenger", flash, body)
}

/// The rates search's query.
#[derive(Debug, Default, serde::Deserialize)]
pub struct RatesQuery {
    #[serde(default)]
    q: Option<String>,
}

/// Digits from what a person typed for a number or prefix: `+`, spaces,
/// dashes, dots, brackets and a leading `00` are dropped.
pub fn parse_digits(input: &str) -> Result<String, String> {
    let kept: String = input
        .trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')' | '+' | '\u{a0}'))
        .collect();
    let kept = kept.strip_prefix("00").unwrap_or(&kept).to_string();
    if kept.is_empty() {
        return Err(
            "Enter a number in international format (+44 20 7123 4567) or a prefix (44).".into(),
        );
    }
    if let Some(bad) = kept.chars().find(|c| !c.is_ascii_digit()) {
        return Err(format!(
            "{:?} is not a number: {bad:?} is not a digit. Enter a number in international format (+44 20 7123 4567) or a prefix (44).",
            input.trim()
        ));
    }
    if kept.len() > 15 {
        return Err(format!(
            "{:?} has {} digits; international numbers have at most 15.",
            input.trim(),
            kept.len()
        ));
    }
    Ok(kept)
}

async fn rates(State(state): State<Arc<WebState>>, Query(query): Query<RatesQuery>) -> Response {
    let typed = query.q.unwrap_or_default();
    let billing = &state.manager.services().billing;
    let form = |typed: &str| {
        html! {
            form #rates method="get" action="/rates" {
                label for="q" { "Number or prefix" }
                input #q type="text" name="q" value=(typed) placeholder="+44 20 7123 4567";
                " "
                button #search type="submit" { "Search" }
            }
        }
    };
    if typed.trim().is_empty() {
        let body = html! {
            p { "Prices are per minute of a phone leg, billed per second. Enter a number to see what each provider charges for it, or a prefix to see the destinations under it." }
            (form(""))
        };
        return page("Rates", None, body);
    }
    let digits = match parse_digits(&typed) {
        Ok(d) => d,
        Err(why) => return page("Rates", Some(&Flash::Error(why)), form(&typed)),
    };
    let refused = match billing.policy().check(&digits) {
        Err(r @ (Refusal::Emergency { .. } | Refusal::DeniedPrefix { .. })) => Some(r.to_string()),
        _ => None,
    };
    if let Some(why) = refused {
        return page(
            "Rates",
            Some(&Flash::Error(format!("+{digits} cannot be called: {why}."))),
            form(&typed),
        );
    }
    let found = billing.search_rates(&digits, MAX_RATE_ROWS);
    let (covering, deeper): (Vec<_>, Vec<_>) = found
        .into_iter()
        .partition(|o| digits.starts_with(&o.prefix));
    // Per provider, only the longest prefix covering the number applies.
    let mut applies: Vec<_> = covering
        .iter()
        .filter(|o| {
            !covering
                .iter()
                .any(|p| p.provider == o.provider && p.prefix.len() > o.prefix.len())
        })
        .collect();
    applies.sort_by_key(|o| (o.rate.price_per_minute, o.provider.clone()));
    let body = html! {
        (form(&typed))
        @if applies.is_empty() && deeper.is_empty() {
            p #no-rates { "No provider carries calls to +" (digits) "." }
        }
        @if !applies.is_empty() {
            h2 { "A call to +" (digits) }
            table #offers {
                tr { th { "Provider" } th { "Prefix" } th { "Per minute" } th { "Billing increment" } th { "Connection fee" } }
                @for o in &applies {
                    tr {
                        td { (o.provider) } td { "+" (o.prefix) } td { (money(o.rate.price_per_minute.0)) }
                        td { (o.rate.increment_secs) " s" } td { (money(o.rate.connect_fee.0)) }
                    }
                }
            }
        }
        @if !deeper.is_empty() {
            h2 { "Destinations under +" (digits) }
            table #deeper {
                tr { th { "Prefix" } th { "Provider" } th { "Per minute" } }
                @for o in &deeper {
                    tr { td { "+" (o.prefix) } td { (o.provider) } td { (money(o.rate.price_per_minute.0)) } }
                }
            }
        }
    };
    page("Rates", None, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked() {
        assert_eq!(
            parse_address(" alice@example.org ").unwrap().as_str(),
            "alice@example.org"
        );
        assert_eq!(parse_address("xmpp:bob@x.y").unwrap().as_str(), "bob@x.y");
        assert!(
            parse_address("")
                .unwrap_err()
                .contains("Enter your XMPP address")
        );
        assert!(
            parse_address("example.org")
                .unwrap_err()
                .contains("name before the @")
        );
        assert!(parse_address("a@b@c").is_err());
        assert!(parse_address("@example.org").is_err());
    }

    #[test]
    fn digits_are_read_like_a_person_writes_them() {
        assert_eq!(parse_digits("+44 (20) 7123-4567").unwrap(), "442071234567");
        assert_eq!(parse_digits("0049 151").unwrap(), "49151");
        assert_eq!(parse_digits("44").unwrap(), "44");
        assert!(
            parse_digits("")
                .unwrap_err()
                .contains("international format")
        );
        assert!(
            parse_digits("44x")
                .unwrap_err()
                .contains("'x' is not a digit")
        );
        assert!(
            parse_digits("1234567890123456")
                .unwrap_err()
                .contains("16 digits")
        );
    }
}
