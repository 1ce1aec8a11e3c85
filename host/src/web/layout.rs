//! The page frame every page shares, and the messages forms answer with.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

const STYLE: &str = "
body{font-family:system-ui,sans-serif;max-width:72rem;margin:0 auto;padding:1rem 1.5rem;color:#1b1f24;line-height:1.45}
header{display:flex;gap:1.2rem;align-items:baseline;border-bottom:1px solid #d0d7de;padding-bottom:.5rem;margin-bottom:1rem}
header strong{font-size:1.3rem}
nav a{margin-right:1rem}
table{border-collapse:collapse;margin:.5rem 0 1rem}
th,td{border:1px solid #d0d7de;padding:.25rem .6rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}
code,pre{background:#f6f8fa;padding:.1rem .3rem;border-radius:4px}
pre{padding:.6rem;overflow-x:auto}
form.inline{display:inline}
label{display:block;margin:.4rem 0 .1rem}
input[type=text],input[type=password],select{padding:.3rem;min-width:18rem}
button{padding:.3rem .9rem;margin:.3rem 0}
.ok{background:#dafbe1;border:1px solid #4ac26b;padding:.5rem .8rem;border-radius:6px}
.error{background:#ffebe9;border:1px solid #ff8182;padding:.5rem .8rem;border-radius:6px}
.muted{color:#57606a}
section{margin-bottom:1.5rem}
";

/// What a form's handler says back: shown at the top of the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flash {
    /// It worked.
    Ok(String),
    /// It did not; the text says what is wrong.
    Error(String),
}

impl Flash {
    /// The HTTP status a page showing this message is sent with.
    pub fn status(flash: Option<&Flash>) -> StatusCode {
        match flash {
            Some(Flash::Error(_)) => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::OK,
        }
    }

    /// The message as HTML.
    pub fn markup(flash: Option<&Flash>) -> Markup {
        html! {
            @match flash {
                Some(Flash::Ok(text)) => p.ok id="flash" role="status" { (text) },
                Some(Flash::Error(text)) => p.error id="flash" role="alert" { (text) },
                None => {},
            }
        }
    }
}

/// A whole page: the frame, `title`, the message if any, and `body`.
pub fn page(title: &str, flash: Option<&Flash>, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Switchboard" }
                style { (maud::PreEscaped(STYLE)) }
            }
            body {
                header {
                    strong { a href="/" { "Switchboard" } }
                    nav {
                        a href="/" { "How it works" }
                        a href="/rates" { "Rates" }
                        a href="/account" { "Account" }
                        a href="/admin" { "Admin" }
                    }
                }
                h1 { (title) }
                (Flash::markup(flash))
                (body)
            }
        }
    };
    (Flash::status(flash), Html(markup.into_string())).into_response()
}

/// A price in micros as the bot writes it (`0.014`).
pub fn money(micros: i64) -> String {
    crate::billing::Micros(micros).to_string()
}

/// A time in ms since the Unix epoch, as UTC to the second.
pub fn time(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(at)
        .to_string()
        .replace('T', " ")
        .replace('Z', " UTC")
}
