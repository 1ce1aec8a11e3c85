//! HTTP Digest authentication for SIP (RFC 3261 §22, RFC 8760): answering a
//! provider's 401/407 challenge with MD5 or SHA-256, `qop=auth` and a nonce count.

use md5::Md5;
use sha2::{Digest, Sha256};

/// Why a challenge could not be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// The header is not a Digest challenge.
    #[error("not a Digest challenge")]
    NotDigest,
    /// A required parameter (realm, nonce) is missing.
    #[error("challenge has no {0}")]
    Missing(&'static str),
    /// An algorithm we do not implement (e.g. SHA-512-256, or a -sess variant).
    #[error("unsupported digest algorithm {0}")]
    Algorithm(String),
    /// Only `auth` quality of protection is implemented.
    #[error("unsupported qop {0}")]
    Qop(String),
}

/// Hash algorithms of RFC 8760 that we implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// MD5, the default when none is named.
    Md5,
    /// SHA-256.
    Sha256,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Sha256 => "SHA-256",
        }
    }

    fn hash(self, data: &str) -> String {
        match self {
            Self::Md5 => hex(&Md5::digest(data.as_bytes())),
            Self::Sha256 => hex(&Sha256::digest(data.as_bytes())),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One parsed `WWW-Authenticate` / `Proxy-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Protection realm.
    pub realm: String,
    /// Server nonce.
    pub nonce: String,
    /// Opaque value to echo back.
    pub opaque: Option<String>,
    /// Hash algorithm.
    pub algorithm: Algorithm,
    /// Whether `qop=auth` was offered.
    pub qop_auth: bool,
    /// Whether the server says the previous credentials were right but the nonce old.
    pub stale: bool,
}

impl Challenge {
    /// Reads a challenge header value.
    pub fn parse(value: &str) -> Result<Self, DigestError> {
        let value = value.trim();
        let rest = value
            .get(..6)
            .filter(|s| s.eq_ignore_ascii_case("Digest"))
            .map(|_| &value[6..])
            .ok_or(DigestError::NotDigest)?;
        let params = auth_params(rest);
        let get = |k: &str| {
            params
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        let algorithm = match get("algorithm") {
            None => Algorithm::Md5,
            Some(a) if a.eq_ignore_ascii_case("MD5") => Algorithm::Md5,
            Some(a) if a.eq_ignore_ascii_case("SHA-256") => Algorithm::Sha256,
            Some(a) => return Err(DigestError::Algorithm(a)),
        };
        let qop_auth = match get("qop") {
            None => false,
            Some(q) => {
                if !q.split(',').any(|o| o.trim().eq_ignore_ascii_case("auth")) {
                    return Err(DigestError::Qop(q));
                }
                true
            }
        };
        Ok(Challenge {
            realm: get("realm").ok_or(DigestError::Missing("realm"))?,
            nonce: get("nonce").ok_or(DigestError::Missing("nonce"))?,
            opaque: get("opaque"),
            algorithm,
            qop_auth,
            stale: get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
        })
    }

    /// Picks the challenge to answer from several (SHA-256 preferred over MD5).
    pub fn best<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Self, DigestError> {
        let mut first_error = None;
        let mut best: Option<Challenge> = None;
        for v in values {
            match Challenge::parse(v) {
                Ok(c) => {
                    if best.as_ref().is_none_or(|b| {
                        b.algorithm == Algorithm::Md5 && c.algorithm == Algorithm::Sha256
                    }) {
                        best = Some(c);
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        best.ok_or(first_error.unwrap_or(DigestError::NotDigest))
    }

    /// Computes the `Authorization` / `Proxy-Authorization` value.
    /// `nc` is the nonce count for this nonce (1 for its first use).
    pub fn answer(
        &self,
        username: &str,
        password: &str,
        method: &str,
        uri: &str,
        nc: u32,
        cnonce: &str,
    ) -> String {
        let alg = self.algorithm;
        let ha1 = alg.hash(&format!("{username}:{}:{password}", self.realm));
        let ha2 = alg.hash(&format!("{method}:{uri}"));
        let nc_text = format!("{nc:08x}");
        let response = if self.qop_auth {
            alg.hash(&format!(
                "{ha1}:{}:{nc_text}:{cnonce}:auth:{ha2}",
                self.nonce
            ))
        } else {
            alg.hash(&format!("{ha1}:{}:{ha2}", self.nonce))
        };
        let mut out = format!(
            "Digest username=\"{username}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", response=\"{response}\", algorithm={}",
            self.realm,
            self.nonce,
            alg.name()
        );
        if self.qop_auth {
            out.push_str(&format!(", qop=auth, nc={nc_text}, cnonce=\"{cnonce}\""));
        }
        if let Some(opaque) = &self.opaque {
            out.push_str(&format!(", opaque=\"{opaque}\""));
        }
        out
    }
}

/// Splits `k=v, k="quoted, value"` pairs.
fn auth_params(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if name.trim().is_empty() {
            break;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            let mut escaped = false;
            for c in chars.by_ref() {
                match c {
                    _ if escaped => {
                        value.push(c);
                        escaped = false;
                    }
                    '\\' => escaped = true,
                    '"' => break,
                    _ => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek() {
                if *c == ',' {
                    break;
                }
                value.push(*c);
                chars.next();
            }
        }
        out.push((name.trim().to_string(), value.trim().to_string()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7616 §3.9.1: the same credentials answered with SHA-256 and MD5.
    const SHA: &str = r#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#;
    const MD5: &str = r#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=MD5, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#;
    const CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";

    #[test]
    fn rfc7616_sha256_vector() {
        let c = Challenge::parse(SHA).expect("valid");
        let a = c.answer(
            "Mufasa",
            "Circle of Life",
            "GET",
            "/dir/index.html",
            1,
            CNONCE,
        );
        assert!(
            a.contains(
                "response=\"753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1\""
            ),
            "{a}"
        );
        assert!(a.contains("nc=00000001"));
        assert!(a.contains("opaque=\"FQhe/"));
    }

    #[test]
    fn rfc7616_md5_vector() {
        let c = Challenge::parse(MD5).expect("valid");
        let a = c.answer(
            "Mufasa",
            "Circle of Life",
            "GET",
            "/dir/index.html",
            1,
            CNONCE,
        );
        assert!(
            a.contains("response=\"8ca523f5e9506fed4657c9700eebdbec\""),
            "{a}"
        );
    }

    #[test]
    fn sha256_preferred_and_errors_are_clear() {
        let c = Challenge::best([MD5, SHA]).expect("one is fine");
        assert_eq!(c.algorithm, Algorithm::Sha256);
        assert_eq!(
            Challenge::parse("Basic realm=x"),
            Err(DigestError::NotDigest)
        );
        assert_eq!(
            Challenge::parse("Digest nonce=\"n\""),
            Err(DigestError::Missing("realm"))
        );
        assert!(matches!(
            Challenge::parse("Digest realm=r, nonce=n, algorithm=SHA-512-256"),
            Err(DigestError::Algorithm(_))
        ));
        // RFC 2617 without qop.
        let old = Challenge::parse("Digest realm=\"r\", nonce=\"n\"").expect("valid");
        assert!(!old.qop_auth);
        assert!(
            !old.answer("u", "p", "INVITE", "sip:x@y", 1, "c")
                .contains("qop")
        );
    }
}
