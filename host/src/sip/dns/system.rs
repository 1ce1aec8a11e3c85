//! Answers the [`Locator`](super::Locator)'s queries with hickory-resolver:
//! the system's resolvers (`/etc/resolv.conf`), or the servers of
//! `[sip] dns`. Its own cache is off: [`super::cache`] is the one that
//! counts, so TTLs and negative answers behave as documented there.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as HickoryDns, NetError};
use hickory_resolver::proto::rr::{RData, RecordType as HickoryType};

use super::{Answer, DnsError, Located, Locator, Query, Record, RecordType, Target, Wanted};

/// How long one query may take, retries and TCP fallback included.
const QUERY_DEADLINE: Duration = Duration::from_secs(8);

/// Puts queries to DNS servers: see the module documentation.
#[derive(Clone)]
pub struct SystemDns {
    resolver: TokioResolver,
}

impl std::fmt::Debug for SystemDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SystemDns")
    }
}

impl SystemDns {
    /// Asks `servers` (UDP, falling back to TCP for a truncated answer), or
    /// the system's resolvers when `servers` is empty.
    pub fn new(servers: &[SocketAddr]) -> Result<SystemDns, String> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if servers.is_empty() {
            TokioResolver::builder(provider)
                .map_err(|e| format!("reading the system resolver configuration: {e}"))?
        } else {
            let mut config = ResolverConfig::from_parts(None, Vec::new(), Vec::new());
            for server in servers {
                let mut ns = NameServerConfig::udp_and_tcp(server.ip());
                for c in &mut ns.connections {
                    c.port = server.port();
                }
                config.add_name_server(ns);
            }
            TokioResolver::builder_with_config(config, provider)
        };
        let opts = builder.options_mut();
        opts.cache_size = 0;
        opts.timeout = Duration::from_secs(2);
        opts.attempts = 2;
        opts.edns0 = true;
        opts.preserve_intermediates = false;
        let resolver = builder
            .build()
            .map_err(|e| format!("starting the DNS resolver: {e}"))?;
        Ok(SystemDns { resolver })
    }

    /// Locates `wanted` with `locator`, putting its queries to this
    /// resolver one after another: for tools that want one answer now
    /// (`switchboard config check`); the SIP stack runs queries
    /// concurrently instead.
    pub async fn locate(
        &self,
        locator: &mut Locator,
        wanted: Wanted,
    ) -> Result<Vec<Target>, DnsError> {
        let name = wanted.name.clone();
        let id = match locator.locate(Instant::now(), wanted) {
            Located::Ready(result) => return result,
            Located::Pending(id) => id,
        };
        while let Some(query) = locator.poll_query() {
            let answer = self.ask(&query).await;
            locator.answer(Instant::now(), &query, answer);
            while let Some((done, result)) = locator.poll_done() {
                if done == id {
                    return result;
                }
            }
        }
        Err(DnsError::Failed {
            name,
            reason: "the lookup stopped without a result".into(),
        })
    }

    /// Whether `name` (absolute) has a CNAME record.
    async fn is_alias(&self, name: &str) -> bool {
        let lookup = self.resolver.lookup(name, HickoryType::CNAME);
        matches!(
            tokio::time::timeout(QUERY_DEADLINE, lookup).await,
            Ok(Ok(l)) if l.answers().iter().any(|r| matches!(r.data, RData::CNAME(_)))
        )
    }

    /// The answer to `query`; never an error, and never longer than 8 s.
    pub async fn ask(&self, query: &Query) -> Answer {
        let rtype = match query.rtype {
            RecordType::Naptr => HickoryType::NAPTR,
            RecordType::Srv => HickoryType::SRV,
            RecordType::A => HickoryType::A,
            RecordType::Aaaa => HickoryType::AAAA,
        };
        // Absolute: SIP names are never completed from the search list.
        let name = format!("{}.", query.name);
        let lookup = self.resolver.lookup(name.as_str(), rtype);
        let result = match tokio::time::timeout(QUERY_DEADLINE, lookup).await {
            Ok(result) => result,
            Err(_) => {
                return Answer::Failed {
                    reason: "the DNS server did not answer".into(),
                };
            }
        };
        match result {
            Ok(lookup) => {
                let mut ttl = u32::MAX;
                let mut records = Vec::new();
                let mut aliases = 0;
                for r in lookup.answers() {
                    if matches!(r.data, RData::CNAME(_)) {
                        aliases += 1;
                    }
                    let record = match &r.data {
                        RData::A(a) => Record::Address(a.0.into()),
                        RData::AAAA(a) => Record::Address(a.0.into()),
                        RData::SRV(srv) => Record::Srv {
                            priority: srv.priority,
                            weight: srv.weight,
                            port: srv.port,
                            target: srv.target.to_ascii(),
                        },
                        RData::NAPTR(n) => Record::Naptr {
                            order: n.order,
                            preference: n.preference,
                            flags: String::from_utf8_lossy(&n.flags).into_owned(),
                            service: String::from_utf8_lossy(&n.services).into_owned(),
                            replacement: n.replacement.to_ascii(),
                        },
                        _ => continue, // CNAMEs on the way, other types
                    };
                    let wanted = matches!(
                        (&record, query.rtype),
                        (Record::Address(ip), RecordType::A) if ip.is_ipv4()
                    ) || matches!(
                        (&record, query.rtype),
                        (Record::Address(ip), RecordType::Aaaa) if ip.is_ipv6()
                    ) || matches!(
                        (&record, query.rtype),
                        (Record::Srv { .. }, RecordType::Srv)
                    ) || matches!(
                        (&record, query.rtype),
                        (Record::Naptr { .. }, RecordType::Naptr)
                    );
                    if wanted {
                        ttl = ttl.min(r.ttl);
                        records.push(record);
                    }
                }
                if records.is_empty() && aliases > 0 {
                    return Answer::Failed {
                        reason:
                            "its CNAME chain leads to no record (a loop, or an alias of nothing)"
                                .into(),
                    };
                }
                if records.is_empty() {
                    return Answer::Empty {
                        nxdomain: false,
                        ttl: None,
                    };
                }
                Answer::Records {
                    records,
                    ttl: Duration::from_secs(u64::from(ttl)),
                }
            }
            Err(NetError::Dns(HickoryDns::NoRecordsFound(none))) => {
                let nxdomain =
                    none.response_code == hickory_resolver::proto::op::ResponseCode::NXDomain;
                // No data, but the name exists: if it is an alias, the
                // resolver followed it (up to 8 deep) to nothing, which is
                // a loop or an alias of a name without such records.
                if !nxdomain && self.is_alias(&name).await {
                    return Answer::Failed {
                        reason:
                            "its CNAME chain leads to no record: a loop, or an alias of nothing"
                                .into(),
                    };
                }
                Answer::Empty {
                    nxdomain,
                    ttl: none.negative_ttl.map(|s| Duration::from_secs(u64::from(s))),
                }
            }
            Err(NetError::Timeout) => Answer::Failed {
                reason: "the DNS server did not answer".into(),
            },
            Err(e) => Answer::Failed {
                reason: e.to_string(),
            },
        }
    }
}
