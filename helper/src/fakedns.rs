//! Fake-IP DNS (`dns = fake`): the helper answers the A queries that enter
//! the tunnel with addresses from a pool it routes into the tunnel, and
//! remembers which name each address stands for. A flow to such an address
//! then reaches the proxy by name (SOCKS5 ATYP domain, HTTP CONNECT host),
//! so names are resolved by the proxy, never on this machine, and no query
//! leaves it.
//!
//! - Messages (RFC 1035 §4): the query's header and question are read and
//!   the answer written here, with no allocation but the reply buffer. A
//!   message the parser does not take apart fully is answered FORMERR when
//!   its header can be read, never guessed at. Only standard queries of
//!   class IN for one name are answered: A with a pool address, every other
//!   type NODATA (NOERROR with no answer), so an application asking AAAA,
//!   HTTPS or SVCB falls back to A at once. Reading the question without a
//!   library is deliberate: simple-dns 0.13 refuses a whole message whose
//!   QTYPE it does not know, which would make a new record type a FORMERR.
//! - The pool ([`Pool`]): addresses are handed out in order, skipping the
//!   network and broadcast addresses and the tunnel's own address and peer.
//!   Answers carry a short TTL ([`TTL`]); a mapping lives [`LIFETIME`] past
//!   its last use (an answer or a flow), far beyond any cache of the
//!   answer, so an address is never handed to a second name while a client
//!   may still hold it for the first. With every address in use the query
//!   is answered SERVFAIL (counted), not with an address still in use.
//! - The map survives a restart: it is saved (a plist in the state
//!   directory) and loaded at `up` when the pool is the same. A flow to a
//!   pool address the map does not know is refused at once (TCP reset, ICMP
//!   unreachable), which makes applications resolve the name again.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use plist::{Dictionary, Value};

/// The TTL answers carry, in seconds.
pub const TTL: u32 = 10;
/// How long a mapping is kept after its last use, in seconds.
pub const LIFETIME: u64 = 600;
/// The header of a DNS message (RFC 1035 §4.1.1).
const HEADER: usize = 12;
const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;
/// Flags: QR, opcode (4 bits), AA, TC, RD; RA (RFC 1035 §4.1.1).
const QR: u16 = 0x8000;
const OPCODE_MASK: u16 = 0x7800;
const AA: u16 = 0x0400;
const RD: u16 = 0x0100;
const RA: u16 = 0x0080;

/// RCODEs (RFC 1035 §4.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rcode {
    NoError = 0,
    FormErr = 1,
    ServFail = 2,
    NotImp = 4,
    Refused = 5,
}

/// A standard query for one name, as read from the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query<'a> {
    pub id: u16,
    /// Recursion desired, echoed in the answer.
    rd: bool,
    /// The name in lower case, without the trailing dot.
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    /// The question section as received (name, type, class), echoed back.
    question: &'a [u8],
}

/// Why a message gets no answer from [`parse_query`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unanswerable {
    /// Too short for a header, or a response: dropped.
    Drop,
    /// The header is readable: answer with this code and no question.
    Reply { id: u16, flags: u16, rcode: Rcode },
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Reads a query: header, one question, nothing required after it (an
/// EDNS OPT record in the additional section is ignored, and the answer
/// carries none, as a server without EDNS answers; RFC 6891 §7).
pub fn parse_query(msg: &[u8]) -> Result<Query<'_>, Unanswerable> {
    if msg.len() < HEADER {
        return Err(Unanswerable::Drop);
    }
    let (id, flags) = (u16_at(msg, 0), u16_at(msg, 2));
    if flags & QR != 0 {
        return Err(Unanswerable::Drop);
    }
    let reply = |rcode| Unanswerable::Reply { id, flags, rcode };
    if flags & OPCODE_MASK != 0 {
        return Err(reply(Rcode::NotImp));
    }
    if u16_at(msg, 4) != 1 {
        return Err(reply(Rcode::FormErr));
    }
    // The name: labels up to the root label; a query has no compression
    // (and a pointer there is refused), at most 255 bytes (§2.3.4).
    let mut at = HEADER;
    let mut name = String::new();
    loop {
        let Some(&len) = msg.get(at) else {
            return Err(reply(Rcode::FormErr));
        };
        let len = usize::from(len);
        at += 1;
        if len == 0 {
            break;
        }
        if len > 63 || at + len > msg.len() || at - HEADER + len > 255 {
            return Err(reply(Rcode::FormErr));
        }
        if !name.is_empty() {
            name.push('.');
        }
        for &b in &msg[at..at + len] {
            name.push(char::from(b.to_ascii_lowercase()));
        }
        at += len;
    }
    if at + 4 > msg.len() {
        return Err(reply(Rcode::FormErr));
    }
    let (qtype, qclass) = (u16_at(msg, at), u16_at(msg, at + 2));
    Ok(Query {
        id,
        rd: flags & RD != 0,
        name,
        qtype,
        qclass,
        question: &msg[HEADER..at + 4],
    })
}

impl Query<'_> {
    /// An A query of class IN: the one kind answered with an address.
    pub fn wants_address(&self) -> bool {
        self.qtype == TYPE_A && self.qclass == CLASS_IN
    }

    /// Whether the name is a host name a proxy can be handed: letters,
    /// digits, `-` and `_` in labels (any byte may sit in a DNS label, and
    /// none of the others belongs in a SOCKS5 domain or a CONNECT line).
    pub fn is_host_name(&self) -> bool {
        !self.name.is_empty()
            && self.name.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
    }

    /// Writes the answer into `out` (cleared first): the question echoed,
    /// and with `address` one A record naming it by a pointer to the
    /// question (0xc00c, RFC 1035 §4.1.4).
    pub fn answer(&self, rcode: Rcode, address: Option<Ipv4Addr>, out: &mut Vec<u8>) {
        out.clear();
        let mut flags = QR | AA | RA | rcode as u16;
        if self.rd {
            flags |= RD;
        }
        let answers = u16::from(address.is_some());
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&flags.to_be_bytes());
        for count in [1, answers, 0, 0] {
            out.extend_from_slice(&u16::to_be_bytes(count));
        }
        out.extend_from_slice(self.question);
        if let Some(a) = address {
            out.extend_from_slice(&[0xc0, 0x0c]);
            out.extend_from_slice(&TYPE_A.to_be_bytes());
            out.extend_from_slice(&CLASS_IN.to_be_bytes());
            out.extend_from_slice(&TTL.to_be_bytes());
            out.extend_from_slice(&4_u16.to_be_bytes());
            out.extend_from_slice(&a.octets());
        }
    }
}

/// The answer to a message [`parse_query`] could not take: its header back
/// with `rcode` and no sections.
pub fn refusal(id: u16, flags: u16, rcode: Rcode, out: &mut Vec<u8>) {
    out.clear();
    let flags = QR | (flags & (OPCODE_MASK | RD)) | RA | rcode as u16;
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&[0; 8]);
}

/// Now, in unix seconds: the map's clock, which must outlive the process.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What the data plane does with a DNS message that reached the fake DNS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// The answer is in the reply buffer.
    Answered,
    /// Not a name to fake (outside the route domains, in full mode): the
    /// query goes on to the resolver it was sent to, like any UDP.
    PassOn,
    /// Nothing to answer (a response, a runt).
    Dropped,
}

/// A tunnel's fake DNS: where it answers, for which names, its pool, and
/// the file its map is saved in.
#[derive(Debug)]
pub struct FakeDns {
    pub pool: Pool,
    /// Answer queries to any address (full mode: every query entering the
    /// tunnel), or only those to this one (the peer, where the system's
    /// split-DNS configuration sends the route domains).
    pub answer_at: Option<std::net::IpAddr>,
    /// Names answered; empty: all.
    pub domains: Vec<String>,
    /// Every A query whose name is not a route domain's is refused
    /// (targeted mode), rather than passed on.
    pub refuse_others: bool,
    /// Where the map is saved.
    pub file: Option<crate::state::StateFile>,
    /// Queries answered SERVFAIL because every address was in use.
    pub exhausted: u64,
}

impl FakeDns {
    /// Whether a DNS message to `dst` port 53 is the fake DNS's to answer.
    pub fn answers_at(&self, dst: std::net::IpAddr) -> bool {
        self.answer_at.is_none_or(|a| a == dst)
    }

    /// Whether DNS over TCP to `dst` is answered here. Over TCP a query
    /// cannot be handed on once its connection is taken, so only where
    /// every query is the fake DNS's: every name, or a targeted tunnel's
    /// peer.
    pub fn answers_tcp_at(&self, dst: std::net::IpAddr) -> bool {
        self.answers_at(dst) && (self.domains.is_empty() || self.refuse_others)
    }

    /// Answers one DNS message into `reply`.
    pub fn handle(&mut self, msg: &[u8], now: u64, reply: &mut Vec<u8>) -> Handled {
        let q = match parse_query(msg) {
            Ok(q) => q,
            Err(Unanswerable::Drop) => return Handled::Dropped,
            Err(Unanswerable::Reply { id, flags, rcode }) => {
                refusal(id, flags, rcode, reply);
                return Handled::Answered;
            }
        };
        if !ztun_proto::name_in_domains(&self.domains, &q.name) {
            if self.refuse_others {
                q.answer(Rcode::Refused, None, reply);
                return Handled::Answered;
            }
            return Handled::PassOn;
        }
        if !q.wants_address() {
            q.answer(Rcode::NoError, None, reply);
        } else if !q.is_host_name() {
            q.answer(Rcode::Refused, None, reply);
        } else if let Some(a) = self.pool.assign(&q.name, now) {
            q.answer(Rcode::NoError, Some(a), reply);
        } else {
            self.exhausted += 1;
            q.answer(Rcode::ServFail, None, reply);
        }
        Handled::Answered
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Mapping {
    name: String,
    /// Unix seconds after which the address may go to another name.
    expires: u64,
}

/// The fake addresses handed out, by name and by address.
#[derive(Debug, Clone)]
pub struct Pool {
    net: Ipv4Net,
    /// The tunnel's own address and peer: never handed out.
    reserved: [Ipv4Addr; 2],
    by_name: HashMap<String, Ipv4Addr>,
    by_addr: HashMap<Ipv4Addr, Mapping>,
    /// The next offset to try.
    cursor: u32,
    /// Changed since [`Pool::saved`].
    dirty: bool,
}

impl Pool {
    pub fn new(net: Ipv4Net, reserved: [Ipv4Addr; 2]) -> Self {
        Self {
            net,
            reserved,
            by_name: HashMap::new(),
            by_addr: HashMap::new(),
            cursor: 1,
            dirty: false,
        }
    }

    pub fn net(&self) -> Ipv4Net {
        self.net
    }

    /// Names mapped now, expired ones included until reused.
    pub fn len(&self) -> usize {
        self.by_addr.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_addr.is_empty()
    }

    /// Whether `addr` is one this pool hands out (its own address range,
    /// less what is never handed out).
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        self.net.contains(&addr)
            && addr != self.net.network()
            && addr != self.net.broadcast()
            && !self.reserved.contains(&addr)
    }

    /// The address for `name`, handing out a new one if it has none; its
    /// life starts again from `now` (unix seconds). `None` when every
    /// address is held by a mapping that has not expired.
    pub fn assign(&mut self, name: &str, now: u64) -> Option<Ipv4Addr> {
        let expires = now.saturating_add(LIFETIME);
        if let Some(&addr) = self.by_name.get(name) {
            if let Some(m) = self.by_addr.get_mut(&addr) {
                m.expires = expires;
                self.dirty = true;
            }
            return Some(addr);
        }
        let size = 1_u32 << (32 - self.net.prefix_len());
        let base = u32::from(self.net.network());
        for step in 0..size {
            let offset = (self.cursor + step) % size;
            let addr = Ipv4Addr::from(base + offset);
            if !self.contains(addr) {
                continue;
            }
            match self.by_addr.get(&addr) {
                Some(m) if m.expires > now => continue,
                Some(m) => {
                    let old = m.name.clone();
                    self.by_name.remove(&old);
                }
                None => {}
            }
            self.map(addr, name, expires);
            self.cursor = (offset + 1) % size;
            self.dirty = true;
            return Some(addr);
        }
        None
    }

    /// Records that `addr` stands for `name` until `expires`.
    fn map(&mut self, addr: Ipv4Addr, name: &str, expires: u64) {
        let name = name.to_owned();
        self.by_name.insert(name.clone(), addr);
        self.by_addr.insert(addr, Mapping { name, expires });
    }

    /// The name `addr` stands for, its life started again from `now` (a
    /// flow to it is a use). `None` for an address no name holds.
    pub fn name_of(&mut self, addr: Ipv4Addr, now: u64) -> Option<&str> {
        let m = self.by_addr.get_mut(&addr)?;
        let expires = now.saturating_add(LIFETIME);
        if m.expires < expires {
            m.expires = expires;
            self.dirty = true;
        }
        Some(&m.name)
    }

    /// Whether the map changed since the last [`Pool::saved`].
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// The map as saved: `{v: 1, pool, names: [{name, address, expires}]}`,
    /// expired mappings left out. Clears the dirty mark.
    pub fn saved(&mut self, now: u64) -> Value {
        self.dirty = false;
        let mut names: Vec<(&Ipv4Addr, &Mapping)> = self
            .by_addr
            .iter()
            .filter(|(_, m)| m.expires > now)
            .collect();
        names.sort_unstable_by_key(|(a, _)| **a);
        let names: Vec<Value> = names
            .into_iter()
            .map(|(a, m)| {
                let mut d = Dictionary::new();
                d.insert("name".into(), m.name.clone().into());
                d.insert("address".into(), a.to_string().into());
                d.insert("expires".into(), m.expires.into());
                Value::Dictionary(d)
            })
            .collect();
        let mut d = Dictionary::new();
        d.insert("v".into(), 1_i64.into());
        d.insert("pool".into(), self.net.to_string().into());
        d.insert("names".into(), names.into());
        Value::Dictionary(d)
    }

    /// Takes back the mappings of a saved map of the same pool that have
    /// not expired by `now`; returns how many. A map of another pool, or
    /// one that does not read, is ignored (0): clients holding its
    /// addresses get refused and resolve again.
    pub fn restore(&mut self, saved: &Value, now: u64) -> usize {
        let Some(d) = saved.as_dictionary() else {
            return 0;
        };
        let same_pool = d.get("v").and_then(Value::as_signed_integer) == Some(1)
            && d.get("pool").and_then(Value::as_string) == Some(self.net.to_string().as_str());
        if !same_pool {
            return 0;
        }
        let mut restored = 0;
        for entry in d
            .get("names")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice)
        {
            let Some(e) = entry.as_dictionary() else {
                continue;
            };
            let name = e.get("name").and_then(Value::as_string);
            let addr = e
                .get("address")
                .and_then(Value::as_string)
                .and_then(|a| a.parse::<Ipv4Addr>().ok());
            let expires = e.get("expires").and_then(Value::as_unsigned_integer);
            let (Some(name), Some(addr), Some(expires)) = (name, addr, expires) else {
                continue;
            };
            if expires <= now
                || !self.contains(addr)
                || self.by_addr.contains_key(&addr)
                || self.by_name.contains_key(name)
            {
                continue;
            }
            self.map(addr, name, expires);
            restored += 1;
        }
        // Hand out new addresses after the ones taken back.
        if let Some(last) = self.by_addr.keys().max() {
            let size = 1_u32 << (32 - self.net.prefix_len());
            self.cursor = (u32::from(*last) - u32::from(self.net.network()) + 1) % size;
        }
        restored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `dig @198.18.0.2 www.Example.com A +noedns` sends: id 0x1234,
    /// RD, one question.
    const QUERY: &[u8] = &[
        0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
        3, b'w', b'w', b'w', 7, b'E', b'x', b'a', b'm', b'p', b'l', b'e', 3, b'c', b'o', b'm', 0,
        0x00, 0x01, 0x00, 0x01,
    ];

    fn pool() -> Pool {
        Pool::new(
            "198.18.0.0/28".parse().unwrap(),
            ["198.18.0.1".parse().unwrap(), "198.18.0.2".parse().unwrap()],
        )
    }

    #[test]
    fn an_a_query_is_answered_with_the_question_echoed_and_one_record() {
        let q = parse_query(QUERY).unwrap();
        assert_eq!(q.name, "www.example.com");
        assert!(q.wants_address());
        let mut out = Vec::new();
        q.answer(
            Rcode::NoError,
            Some("198.18.0.3".parse().unwrap()),
            &mut out,
        );
        let mut want = vec![
            0x12, 0x34, 0x85, 0x80, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
        ];
        want.extend_from_slice(&QUERY[12..]);
        want.extend_from_slice(&[
            0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x04, 198, 18, 0, 3,
        ]);
        assert_eq!(out, want);
    }

    #[test]
    fn other_types_get_nodata_and_the_edns_record_is_not_in_the_way() {
        // The same question for AAAA, with dig's OPT record after it.
        let mut query = QUERY.to_vec();
        let qtype_low = query.len() - 3;
        query[qtype_low] = 28;
        query[11] = 1;
        query.extend_from_slice(&[0, 0x00, 0x29, 0x04, 0xd0, 0, 0, 0, 0, 0x00, 0x00]);
        let q = parse_query(&query).unwrap();
        assert!(!q.wants_address());
        let mut out = Vec::new();
        q.answer(Rcode::NoError, None, &mut out);
        assert_eq!(
            &out[..12],
            &[0x12, 0x34, 0x85, 0x80, 0, 1, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(&out[12..], &query[12..QUERY.len()]);
    }

    #[test]
    fn malformed_messages_get_formerr_and_responses_are_dropped() {
        assert_eq!(parse_query(&QUERY[..5]), Err(Unanswerable::Drop));
        let mut response = QUERY.to_vec();
        response[2] |= 0x80;
        assert_eq!(parse_query(&response), Err(Unanswerable::Drop));
        let cut = &QUERY[..QUERY.len() - 2];
        let Err(Unanswerable::Reply { id, flags, rcode }) = parse_query(cut) else {
            panic!("a cut question is answered");
        };
        assert_eq!(rcode, Rcode::FormErr);
        let mut out = Vec::new();
        refusal(id, flags, rcode, &mut out);
        assert_eq!(out, [0x12, 0x34, 0x81, 0x81, 0, 0, 0, 0, 0, 0, 0, 0]);
        let mut pointer = QUERY.to_vec();
        pointer[12] = 0xc0;
        assert!(matches!(
            parse_query(&pointer),
            Err(Unanswerable::Reply {
                rcode: Rcode::FormErr,
                ..
            })
        ));
        let mut notify = QUERY.to_vec();
        notify[2] = 0x20;
        assert!(matches!(
            parse_query(&notify),
            Err(Unanswerable::Reply {
                rcode: Rcode::NotImp,
                ..
            })
        ));
    }

    #[test]
    fn addresses_are_handed_out_in_order_skipping_the_tunnels_own() {
        let mut p = pool();
        let got: Vec<String> = ["a", "b", "c"]
            .iter()
            .map(|n| p.assign(n, 0).unwrap().to_string())
            .collect();
        assert_eq!(got, ["198.18.0.3", "198.18.0.4", "198.18.0.5"]);
        assert_eq!(
            p.assign("b", 5).unwrap().to_string(),
            "198.18.0.4",
            "same name, same address"
        );
        assert_eq!(p.name_of("198.18.0.5".parse().unwrap(), 5), Some("c"));
        assert_eq!(p.name_of("198.18.0.9".parse().unwrap(), 5), None);
        assert!(!p.contains("198.18.0.1".parse().unwrap()));
        assert!(!p.contains("198.18.0.15".parse().unwrap()), "broadcast");
    }

    #[test]
    fn a_full_pool_refuses_new_names_until_a_mapping_expires_and_then_reuses_it() {
        let mut p = pool();
        // 16 addresses less network, broadcast, the tunnel's and its peer.
        for i in 0..12 {
            assert!(p.assign(&format!("n{i}.example"), 100).is_some(), "n{i}");
        }
        assert_eq!(p.assign("late.example", 100), None, "all 12 in use");
        // n0 is used again; every other mapping expires.
        let n0 = p.assign("n0.example", 100 + LIFETIME - 1).unwrap();
        let reused = p.assign("late.example", 100 + LIFETIME).unwrap();
        assert_ne!(reused, n0, "the one still in use is not taken");
        assert_eq!(p.name_of(reused, 100 + LIFETIME), Some("late.example"));
        assert_eq!(p.len(), 12);
    }

    #[test]
    fn expiry_under_load_keeps_memory_bounded_by_the_pool() {
        let mut p = pool();
        // 10,000 names over 100 simulated minutes, 100 per minute: the
        // pool never holds more than its 12 addresses and always answers
        // once the oldest have expired.
        let mut refused = 0;
        for i in 0..10_000_u64 {
            let now = i * 6;
            if p.assign(&format!("host{i}.example"), now).is_none() {
                refused += 1;
            }
            assert!(p.len() <= 12);
        }
        // 12 names fit in each 600 s lifetime: 100 lifetimes, 1,200 answered.
        assert_eq!(10_000 - refused, 1_200);
    }

    #[test]
    fn the_map_survives_a_restart_of_the_same_pool_only() {
        let mut p = pool();
        let a = p.assign("www.example.com", 1_000).unwrap();
        p.assign("gone.example", 0).unwrap();
        assert!(p.is_dirty());
        let saved = p.saved(LIFETIME + 1);
        assert!(!p.is_dirty());
        let mut again = pool();
        assert_eq!(
            again.restore(&saved, LIFETIME + 1),
            1,
            "the expired one is left out"
        );
        assert_eq!(again.name_of(a, LIFETIME + 1), Some("www.example.com"));
        assert_ne!(again.assign("next.example", LIFETIME + 1), Some(a));
        let mut other = Pool::new("198.19.0.0/16".parse().unwrap(), pool().reserved);
        assert_eq!(other.restore(&saved, 0), 0);
    }
}
