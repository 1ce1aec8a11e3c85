//! The RFC 3263 §4 procedure as a pure function of the answers known so
//! far: either the queries still needed for the next step, or the result.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::super::message::Transport;
use super::cache::Value;
use super::srv::SrvTarget;
use super::{DnsError, Query, Record, RecordType, Target, Wanted};

/// One host's addresses, with its SRV priority and weight (zero for a
/// host that came from no SRV record).
pub(super) type Weighted = SrvTarget<Vec<Target>>;

/// The answers one lookup was given, by query.
pub(super) type Memo = HashMap<Query, Value>;

/// What the procedure needs next, or its result.
#[derive(Debug)]
pub(super) enum Eval {
    /// Ask these (all of them may go out at once).
    Need(Vec<Query>),
    /// Finished: the hosts' addresses with their SRV ordering fields.
    Done(Result<Vec<Weighted>, DnsError>),
}

/// What the procedure knows about this host.
pub(super) struct Procedure<'a> {
    /// Transports we can send on, in order of preference.
    pub(super) transports: &'a [Transport],
    pub(super) ipv4: bool,
    pub(super) ipv6: bool,
}

/// One step's outcome inside the procedure.
enum Step<T> {
    Need(Vec<Query>),
    Got(T),
    Fail(DnsError),
}

const DEFAULT_PORT: u16 = 5060;

fn query(name: &str, rtype: RecordType) -> Query {
    Query {
        name: name.trim_end_matches('.').to_ascii_lowercase(),
        rtype,
    }
}

fn srv_name(transport: Transport, name: &str) -> String {
    let proto = match transport {
        Transport::Udp => "_sip._udp",
        Transport::Tcp => "_sip._tcp",
    };
    format!("{proto}.{name}")
}

/// The transport a NAPTR service field stands for, if we speak it.
fn naptr_transport(service: &str) -> Option<Transport> {
    match service.to_ascii_uppercase().as_str() {
        "SIP+D2U" => Some(Transport::Udp),
        "SIP+D2T" => Some(Transport::Tcp),
        _ => None,
    }
}

impl Procedure<'_> {
    /// Runs the procedure as far as `known` answers allow.
    pub(super) fn evaluate(
        &self,
        wanted: &Wanted,
        known: &dyn Fn(&Query) -> Option<Value>,
    ) -> Eval {
        let name = wanted.name.trim_end_matches('.').to_ascii_lowercase();
        let hosts = match (wanted.port, wanted.transport) {
            (Some(port), transport) => Step::Got(vec![SrvHost::plain(
                &name,
                port,
                transport.unwrap_or(Transport::Udp),
            )]),
            (None, Some(transport)) => self.srv_hosts(
                &name,
                &[(srv_name(transport, &name), transport)],
                true,
                known,
            ),
            (None, None) => self.naptr_hosts(&name, known),
        };
        let hosts = match hosts {
            Step::Need(q) => return Eval::Need(q),
            Step::Fail(e) => return Eval::Done(Err(e)),
            Step::Got(hosts) => hosts,
        };
        Eval::Done(match self.addresses(&name, hosts, known) {
            Step::Need(q) => return Eval::Need(q),
            Step::Fail(e) => Err(e),
            Step::Got(targets) => Ok(targets),
        })
    }

    /// §4.1: NAPTR first; the services we speak, best first, each to its
    /// SRV name. Without a usable NAPTR, SRV for each transport we have.
    fn naptr_hosts(
        &self,
        name: &str,
        known: &dyn Fn(&Query) -> Option<Value>,
    ) -> Step<Vec<SrvHost>> {
        let q = query(name, RecordType::Naptr);
        let mut services: Vec<(u16, u16, String, Transport)> = match known(&q) {
            None => return Step::Need(vec![q]),
            Some(Value::Failed(reason)) => {
                return Step::Fail(DnsError::Failed {
                    name: name.into(),
                    reason,
                });
            }
            Some(Value::Empty { .. }) => Vec::new(),
            Some(Value::Records(records)) => records
                .into_iter()
                .filter_map(|r| match r {
                    Record::Naptr {
                        order,
                        preference,
                        flags,
                        service,
                        replacement,
                    } if flags.eq_ignore_ascii_case("s") => {
                        let transport = naptr_transport(&service)?;
                        self.transports.contains(&transport).then_some((
                            order,
                            preference,
                            replacement,
                            transport,
                        ))
                    }
                    _ => None,
                })
                .collect(),
        };
        if services.is_empty() {
            let chain: Vec<(String, Transport)> = self
                .transports
                .iter()
                .map(|t| (srv_name(*t, name), *t))
                .collect();
            return self.srv_hosts(name, &chain, true, known);
        }
        services.sort_by_key(|(order, preference, ..)| (*order, *preference));
        let chain: Vec<(String, Transport)> = services
            .into_iter()
            .map(|(_, _, replacement, t)| (replacement, t))
            .collect();
        self.srv_hosts(name, &chain, false, known)
    }

    /// The SRV names in `chain`, in turn: the first with records gives the
    /// hosts. With none, A/AAAA of `name` over UDP at 5060 if `fallback`.
    fn srv_hosts(
        &self,
        name: &str,
        chain: &[(String, Transport)],
        fallback: bool,
        known: &dyn Fn(&Query) -> Option<Value>,
    ) -> Step<Vec<SrvHost>> {
        for (srv, transport) in chain {
            let q = query(srv, RecordType::Srv);
            let records = match known(&q) {
                None => return Step::Need(vec![q]),
                Some(Value::Failed(reason)) => {
                    return Step::Fail(DnsError::Failed {
                        name: q.name,
                        reason,
                    });
                }
                Some(Value::Empty { .. }) => continue,
                Some(Value::Records(records)) => records,
            };
            let mut targets = Vec::new();
            for record in records {
                if let Record::Srv {
                    priority,
                    weight,
                    port,
                    target,
                } = record
                {
                    let target = target.trim_end_matches('.').to_ascii_lowercase();
                    if target.is_empty() {
                        // RFC 2782: a target of "." says the service is not offered here.
                        continue;
                    }
                    targets.push(SrvHost {
                        name: target,
                        port,
                        transport: *transport,
                        priority,
                        weight,
                    });
                }
            }
            if targets.is_empty() {
                return Step::Fail(DnsError::NotFound {
                    name: name.into(),
                    what: format!("{} says SIP is not offered there", q.name),
                });
            }
            return Step::Got(targets);
        }
        if !fallback {
            return Step::Fail(DnsError::NotFound {
                name: name.into(),
                what: "its NAPTR records lead to SRV names with no records".into(),
            });
        }
        // §4.1: UDP without NAPTR and SRV; a host that has no UDP
        // listener uses the transport it has.
        let transport = if self.transports.contains(&Transport::Udp) {
            Transport::Udp
        } else {
            self.transports.first().copied().unwrap_or(Transport::Udp)
        };
        Step::Got(vec![SrvHost::plain(name, DEFAULT_PORT, transport)])
    }

    /// A/AAAA of every host, asked at once; the targets in host order
    /// (SRV hosts weighted at random first).
    fn addresses(
        &self,
        name: &str,
        hosts: Vec<SrvHost>,
        known: &dyn Fn(&Query) -> Option<Value>,
    ) -> Step<Vec<Weighted>> {
        let mut types = Vec::new();
        if self.ipv4 {
            types.push(RecordType::A);
        }
        if self.ipv6 {
            types.push(RecordType::Aaaa);
        }
        let mut need = Vec::new();
        let mut failure = None;
        let mut found: HashMap<String, Vec<SocketAddr>> = HashMap::new();
        for host in &hosts {
            for rtype in &types {
                let q = query(&host.name, *rtype);
                match known(&q) {
                    None => need.push(q),
                    Some(Value::Records(records)) => {
                        let addrs = found.entry(host.name.clone()).or_default();
                        for r in records {
                            if let Record::Address(ip) = r {
                                addrs.push(SocketAddr::new(ip, host.port));
                            }
                        }
                    }
                    Some(Value::Empty { nxdomain }) => {
                        failure.get_or_insert(DnsError::NotFound {
                            name: host.name.clone(),
                            what: if nxdomain {
                                "no such domain (NXDOMAIN)".into()
                            } else {
                                "no address records".into()
                            },
                        });
                    }
                    Some(Value::Failed(reason)) => {
                        failure = Some(DnsError::Failed {
                            name: host.name.clone(),
                            reason,
                        });
                    }
                }
            }
        }
        if !need.is_empty() {
            need.sort();
            need.dedup();
            return Step::Need(need);
        }
        // The order is drawn by the locator for each use (RFC 2782), from
        // the hosts with their SRV fields and their addresses.
        let mut weighted: Vec<Weighted> = Vec::new();
        for host in hosts {
            let targets: Vec<Target> = found
                .get(&host.name)
                .into_iter()
                .flatten()
                .map(|addr| Target {
                    transport: host.transport,
                    addr: SocketAddr::new(addr.ip(), host.port),
                })
                .collect();
            if !targets.is_empty() {
                weighted.push(SrvTarget {
                    priority: host.priority,
                    weight: host.weight,
                    item: targets,
                });
            }
        }
        if weighted.is_empty() {
            return Step::Fail(failure.unwrap_or(DnsError::NotFound {
                name: name.into(),
                what: "no address records".into(),
            }));
        }
        Step::Got(weighted)
    }
}

/// A host to look up addresses for, with its SRV ordering fields
/// (zero for a host that came from no SRV record).
#[derive(Debug, Clone)]
struct SrvHost {
    name: String,
    port: u16,
    transport: Transport,
    priority: u16,
    weight: u16,
}

impl SrvHost {
    fn plain(name: &str, port: u16, transport: Transport) -> SrvHost {
        SrvHost {
            name: name.to_string(),
            port,
            transport,
            priority: 0,
            weight: 0,
        }
    }
}
