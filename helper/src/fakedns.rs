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
use std::net::IpAddr;

use ipnet::IpNet;
use plist::{Dictionary, Value};

/// The TTL answers carry, in seconds.
pub const TTL: u32 = 10;
/// How long a mapping is kept after its last use, in seconds.
pub const LIFETIME: u64 = 600;
/// The most names one pool holds (about 100 bytes each): an IPv6 pool, or
/// a large IPv4 one, is bounded in memory by this, not by its size.
pub const MAX_NAMES: usize = 65_536;
/// The header of a DNS message (RFC 1035 §4.1.1).
const HEADER: usize = 12;
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
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
    /// The address family asked for: `Some(false)` for A, `Some(true)`
    /// for AAAA (class IN); `None` for every other question.
    pub fn wants_address(&self) -> Option<bool> {
        match (self.qtype, self.qclass) {
            (TYPE_A, CLASS_IN) => Some(false),
            (TYPE_AAAA, CLASS_IN) => Some(true),
            _ => None,
        }
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
    /// and with `address` one A or AAAA record naming it by a pointer to
    /// the question (0xc00c, RFC 1035 §4.1.4).
    pub fn answer(&self, rcode: Rcode, address: Option<IpAddr>, out: &mut Vec<u8>) {
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
            let (kind, len) = match a {
                IpAddr::V4(_) => (TYPE_A, 4_u16),
                IpAddr::V6(_) => (TYPE_AAAA, 16),
            };
            out.extend_from_slice(&kind.to_be_bytes());
            out.extend_from_slice(&CLASS_IN.to_be_bytes());
            out.extend_from_slice(&TTL.to_be_bytes());
            out.extend_from_slice(&len.to_be_bytes());
            match a {
                IpAddr::V4(v4) => out.extend_from_slice(&v4.octets()),
                IpAddr::V6(v6) => out.extend_from_slice(&v6.octets()),
            }
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

/// What a destination address is to the fake DNS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// Outside the pools: a real address, used as it is.
    NotFake,
    /// A pool address no name holds.
    Unknown,
    /// A pool address, standing for this name.
    Name(&'a str),
}

/// A tunnel's fake DNS: where it answers, for which names, its pool, and
/// the file its map is saved in.
#[derive(Debug)]
pub struct FakeDns {
    pub pool: Pool,
    /// AAAA answers come from here; without it they carry no data.
    pub pool6: Option<Pool>,
    /// Answer queries to any address (full mode: every query entering the
    /// tunnel; names outside the route domains are passed on), or only
    /// those to this one (targeted mode: the peer, where the system's
    /// split-DNS configuration sends the route domains; names outside
    /// them are refused).
    pub answer_at: Option<std::net::IpAddr>,
    /// Names answered; empty: all.
    pub domains: Vec<String>,
    /// Where each pool's map is saved.
    pub file: Option<crate::state::StateFile>,
    pub file6: Option<crate::state::StateFile>,
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
        self.answers_at(dst) && (self.domains.is_empty() || self.answer_at.is_some())
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
            if self.answer_at.is_some() {
                q.answer(Rcode::Refused, None, reply);
                return Handled::Answered;
            }
            return Handled::PassOn;
        }
        let pool = match q.wants_address() {
            Some(false) => Some(&mut self.pool),
            Some(true) => self.pool6.as_mut(),
            None => None,
        };
        match pool {
            None => q.answer(Rcode::NoError, None, reply),
            Some(_) if !q.is_host_name() => q.answer(Rcode::Refused, None, reply),
            Some(pool) => {
                let address = pool.assign(&q.name, now);
                if address.is_none() {
                    self.exhausted += 1;
                }
                let rcode = address.map_or(Rcode::ServFail, |_| Rcode::NoError);
                q.answer(rcode, address, reply);
            }
        }
        Handled::Answered
    }

    /// What a flow's destination stands for (a flow to it is a use).
    pub fn lookup(&mut self, addr: IpAddr, now: u64) -> Lookup<'_> {
        let pool = match addr {
            IpAddr::V4(_) => Some(&mut self.pool),
            IpAddr::V6(_) => self.pool6.as_mut(),
        };
        match pool {
            Some(p) if p.contains(addr) => {
                p.name_of(addr, now).map_or(Lookup::Unknown, Lookup::Name)
            }
            _ => Lookup::NotFake,
        }
    }

    /// Each pool whose map changed, with its file, as it is to be saved.
    pub fn to_save(&mut self, now: u64) -> Vec<(crate::state::StateFile, Value)> {
        let mut out = Vec::new();
        for (pool, file) in [
            (Some(&mut self.pool), &self.file),
            (self.pool6.as_mut(), &self.file6),
        ] {
            if let (Some(pool), Some(file)) = (pool, file) {
                if pool.is_dirty() {
                    out.push((file.clone(), pool.saved(now)));
                }
            }
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Mapping {
    name: String,
    /// Unix seconds after which the address may go to another name.
    expires: u64,
}

/// The fake addresses handed out, by name and by address: one family.
#[derive(Debug, Clone)]
pub struct Pool {
    net: IpNet,
    /// The tunnel's own addresses and peer: never handed out.
    reserved: Vec<IpAddr>,
    by_name: HashMap<String, IpAddr>,
    by_addr: HashMap<IpAddr, Mapping>,
    /// The next offset to try.
    cursor: u128,
    /// Changed since [`Pool::saved`].
    dirty: bool,
}

impl Pool {
    pub fn new(net: IpNet, reserved: Vec<IpAddr>) -> Self {
        Self {
            net,
            reserved,
            by_name: HashMap::new(),
            by_addr: HashMap::new(),
            cursor: 1,
            dirty: false,
        }
    }

    pub fn net(&self) -> IpNet {
        self.net
    }

    /// Names mapped now, expired ones included until reused.
    pub fn len(&self) -> usize {
        self.by_addr.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_addr.is_empty()
    }

    /// Addresses in the prefix (the pool's prefix is at least a /32 for
    /// IPv6, so this fits).
    fn size(&self) -> u128 {
        1_u128 << (self.net.max_prefix_len() - self.net.prefix_len())
    }

    fn base(&self) -> u128 {
        match self.net.network() {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        }
    }

    fn nth(&self, offset: u128) -> IpAddr {
        let n = self.base() + offset;
        match self.net {
            // The offset stays inside the IPv4 prefix: it fits in 32 bits.
            IpNet::V4(_) => IpAddr::V4(u32::try_from(n).unwrap_or(u32::MAX).into()),
            IpNet::V6(_) => IpAddr::V6(n.into()),
        }
    }

    /// Whether `addr` is one this pool hands out (its own address range,
    /// less the network address, the IPv4 broadcast and the tunnel's own).
    pub fn contains(&self, addr: IpAddr) -> bool {
        let broadcast = match self.net {
            IpNet::V4(n) => addr == IpAddr::V4(n.broadcast()),
            IpNet::V6(_) => false,
        };
        self.net.contains(&addr)
            && addr != self.net.network()
            && !broadcast
            && !self.reserved.contains(&addr)
    }

    /// The address for `name`, handing out a new one if it has none; its
    /// life starts again from `now` (unix seconds). `None` when every
    /// address (or [`MAX_NAMES`]) is held by a mapping that has not
    /// expired.
    pub fn assign(&mut self, name: &str, now: u64) -> Option<IpAddr> {
        let expires = now.saturating_add(LIFETIME);
        if let Some(&addr) = self.by_name.get(name) {
            if let Some(m) = self.by_addr.get_mut(&addr) {
                m.expires = expires;
                self.dirty = true;
            }
            return Some(addr);
        }
        let addr = if self.by_addr.len() < MAX_NAMES {
            self.next_free(now)?
        } else {
            // Full: only an expired mapping's address may be taken.
            *self.by_addr.iter().find(|(_, m)| m.expires <= now)?.0
        };
        if let Some(old) = self.by_addr.remove(&addr) {
            self.by_name.remove(&old.name);
        }
        self.map(addr, name, expires);
        self.dirty = true;
        Some(addr)
    }

    /// From the cursor on, the first address no live mapping holds.
    fn next_free(&mut self, now: u64) -> Option<IpAddr> {
        let size = self.size();
        // Every address but a few is tried at most once; a pool larger than
        // the cap always has a free one within MAX_NAMES + reserved steps.
        let tries = size.min(MAX_NAMES as u128 * 2 + 8);
        for step in 0..tries {
            let offset = (self.cursor + step) % size;
            let addr = self.nth(offset);
            if !self.contains(addr) {
                continue;
            }
            if self.by_addr.get(&addr).is_some_and(|m| m.expires > now) {
                continue;
            }
            self.cursor = (offset + 1) % size;
            return Some(addr);
        }
        None
    }

    /// Records that `addr` stands for `name` until `expires`.
    fn map(&mut self, addr: IpAddr, name: &str, expires: u64) {
        let name = name.to_owned();
        self.by_name.insert(name.clone(), addr);
        self.by_addr.insert(addr, Mapping { name, expires });
    }

    /// The name `addr` stands for, its life started again from `now` (a
    /// flow to it is a use). `None` for an address no name holds.
    pub fn name_of(&mut self, addr: IpAddr, now: u64) -> Option<&str> {
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
        let mut names: Vec<(&IpAddr, &Mapping)> = self
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
                .and_then(|a| a.parse::<IpAddr>().ok());
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
            let last = match last {
                IpAddr::V4(a) => u128::from(u32::from(*a)),
                IpAddr::V6(a) => u128::from(*a),
            };
            self.cursor = (last - self.base() + 1) % self.size();
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

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn pool() -> Pool {
        Pool::new(
            "198.18.0.0/28".parse().unwrap(),
            vec![ip("198.18.0.1"), ip("198.18.0.2")],
        )
    }

    #[test]
    fn an_a_query_is_answered_with_the_question_echoed_and_one_record() {
        let q = parse_query(QUERY).unwrap();
        assert_eq!(q.name, "www.example.com");
        assert_eq!(q.wants_address(), Some(false));
        let mut out = Vec::new();
        q.answer(Rcode::NoError, Some(ip("198.18.0.3")), &mut out);
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
        // The same question for HTTPS (65), with dig's OPT record after it.
        let mut query = QUERY.to_vec();
        let qtype_low = query.len() - 3;
        query[qtype_low] = 65;
        query[11] = 1;
        query.extend_from_slice(&[0, 0x00, 0x29, 0x04, 0xd0, 0, 0, 0, 0, 0x00, 0x00]);
        let q = parse_query(&query).unwrap();
        assert_eq!(q.wants_address(), None);
        let mut out = Vec::new();
        q.answer(Rcode::NoError, None, &mut out);
        assert_eq!(
            &out[..12],
            &[0x12, 0x34, 0x85, 0x80, 0, 1, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(&out[12..], &query[12..QUERY.len()]);
    }

    #[test]
    fn an_aaaa_query_gets_an_address_from_the_ipv6_pool_or_no_data() {
        let mut query = QUERY.to_vec();
        let qtype_low = query.len() - 3;
        query[qtype_low] = 28;
        let mut dns = FakeDns {
            pool: pool(),
            pool6: None,
            answer_at: None,
            domains: Vec::new(),
            file: None,
            file6: None,
            exhausted: 0,
        };
        let mut out = Vec::new();
        assert_eq!(dns.handle(&query, 0, &mut out), Handled::Answered);
        assert_eq!(&out[6..8], &[0, 0], "no IPv6 pool: no data");
        dns.pool6 = Some(Pool::new("2001:db8:fa::/64".parse().unwrap(), vec![]));
        dns.handle(&query, 0, &mut out);
        let mut want = vec![0x12, 0x34, 0x85, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        want.extend_from_slice(&query[12..]);
        want.extend_from_slice(&[0xc0, 0x0c, 0, 28, 0, 1, 0, 0, 0, 10, 0, 16]);
        want.extend_from_slice(&[
            0x20, 0x01, 0x0d, 0xb8, 0, 0xfa, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
        ]);
        assert_eq!(out, want);
        assert_eq!(
            dns.lookup(ip("2001:db8:fa::1"), 0),
            Lookup::Name("www.example.com")
        );
        assert_eq!(dns.lookup(ip("2001:db8:fb::1"), 0), Lookup::NotFake);
        assert_eq!(
            dns.lookup(ip("198.18.0.9"), 0),
            Lookup::Unknown,
            "in the pool, no name"
        );
    }

    #[test]
    fn an_ipv6_pool_holds_at_most_max_names_and_then_reuses_only_expired_ones() {
        let mut p = Pool::new("2001:db8:fa::/64".parse().unwrap(), vec![]);
        for i in 0..MAX_NAMES {
            assert!(p.assign(&format!("n{i}"), 0).is_some());
        }
        assert_eq!(
            p.assign("over", 1),
            None,
            "the cap, not the 2^64 addresses, bounds it"
        );
        let reused = p.assign("over", LIFETIME).unwrap();
        assert_eq!(p.name_of(reused, LIFETIME), Some("over"));
        assert_eq!(p.len(), MAX_NAMES);
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
        assert_eq!(p.name_of(ip("198.18.0.5"), 5), Some("c"));
        assert_eq!(p.name_of(ip("198.18.0.9"), 5), None);
        assert!(!p.contains(ip("198.18.0.1")));
        assert!(!p.contains(ip("198.18.0.15")), "broadcast");
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
