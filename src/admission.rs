//! Per-address connection limits, shared by the RTMP listener and the HTTP server: one client
//! must not be able to take every connection slot.
//!
//! A connection holds an [`AddressSlot`] for as long as it is open; dropping the slot gives it
//! back. Addresses are grouped before counting: an IPv4 address (also when it arrives mapped into
//! IPv6) counts alone, an IPv6 address counts with its whole /64, because one IPv6 host usually
//! owns a /64 and could otherwise open each connection from a fresh address. Addresses in the
//! exempt list (by default loopback, so local tools and the load tests are not limited; a reverse
//! proxy in front of tidecast belongs there too) are never limited.
//!
//! Invariant: the table holds one entry per address group with at least one open connection, so
//! its size is bounded by the connections open, not by the addresses ever seen.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use ipnet::IpNet;

/// Why an exempt-list entry could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error("{entry:?} is neither an IP address nor a network in CIDR notation (\"10.0.0.0/8\")")]
    BadNetwork { entry: String },
}

/// Parse one exempt-list entry: an address (`"127.0.0.1"`, `"::1"`) or a network (`"10.0.0.0/8"`).
pub fn parse_network(entry: &str) -> Result<IpNet, AdmissionError> {
    let entry = entry.trim();
    IpNet::from_str(entry)
        .or_else(|_| IpAddr::from_str(entry).map(IpNet::from))
        .map_err(|_| AdmissionError::BadNetwork { entry: entry.to_owned() })
}

/// The group an address is counted in: the IPv4 address, or the IPv6 /64.
fn group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Open connections per address group, and the limit on them.
#[derive(Debug)]
pub struct PerAddressLimit {
    /// Connections one address group may hold at once; 0 disables the limit.
    limit: usize,
    exempt: Vec<IpNet>,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// The connection was refused: its address already holds `limit` connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverLimit {
    pub limit: usize,
}

impl PerAddressLimit {
    pub fn new(limit: usize, exempt: Vec<IpNet>) -> Arc<Self> {
        Arc::new(PerAddressLimit { limit, exempt, open: Mutex::new(HashMap::new()) })
    }

    /// Take a slot for a connection from `ip`, or refuse it.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<AddressSlot, OverLimit> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if self.limit == 0 || self.exempt.iter().any(|n| n.contains(&ip)) {
            return Ok(AddressSlot { owner: None, group: ip });
        }
        let group = group(ip);
        let mut open = self.open.lock().expect("the per-address table is never poisoned: no panics under it");
        let n = open.entry(group).or_insert(0);
        if *n >= self.limit {
            return Err(OverLimit { limit: self.limit });
        }
        *n += 1;
        Ok(AddressSlot { owner: Some(self.clone()), group })
    }

    /// Connections counted for `ip`'s group now (tests and diagnostics).
    pub fn open(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().expect("the per-address table is never poisoned: no panics under it");
        open.get(&group(ip)).copied().unwrap_or(0)
    }

    fn release(&self, group: IpAddr) {
        let mut open = self.open.lock().expect("the per-address table is never poisoned: no panics under it");
        if let Some(n) = open.get_mut(&group) {
            *n -= 1;
            if *n == 0 {
                open.remove(&group);
            }
        }
    }
}

/// One open connection's share of its address's limit; given back on drop.
#[derive(Debug)]
pub struct AddressSlot {
    /// `None` when the address is exempt or the limit is off: nothing to give back.
    owner: Option<Arc<PerAddressLimit>>,
    group: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        if let Some(owner) = self.owner.take() {
            owner.release(self.group);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn refuses_over_the_limit_and_frees_on_drop() {
        let l = PerAddressLimit::new(2, vec![]);
        let a = l.try_acquire(ip("192.0.2.1")).unwrap();
        let _b = l.try_acquire(ip("192.0.2.1")).unwrap();
        assert_eq!(l.try_acquire(ip("192.0.2.1")).unwrap_err(), OverLimit { limit: 2 });
        // Another address is counted on its own.
        let _c = l.try_acquire(ip("192.0.2.2")).unwrap();
        drop(a);
        let _d = l.try_acquire(ip("192.0.2.1")).unwrap();
        assert_eq!(l.open(ip("192.0.2.1")), 2);
    }

    #[test]
    fn the_table_forgets_addresses_without_connections() {
        let l = PerAddressLimit::new(5, vec![]);
        for i in 0..100u8 {
            drop(l.try_acquire(IpAddr::from([198, 51, 100, i])).unwrap());
        }
        assert!(l.open.lock().unwrap().is_empty());
    }

    #[test]
    fn exempt_networks_are_not_limited() {
        let exempt = vec![parse_network("127.0.0.0/8").unwrap(), parse_network("::1").unwrap()];
        let l = PerAddressLimit::new(1, exempt);
        let held: Vec<_> = (0..10).map(|_| l.try_acquire(ip("127.0.0.1")).unwrap()).collect();
        let _v6: Vec<_> = (0..10).map(|_| l.try_acquire(ip("::1")).unwrap()).collect();
        // Mapped IPv4 loopback is loopback too.
        let _m = l.try_acquire(ip("::ffff:127.0.0.2")).unwrap();
        assert_eq!(held.len(), 10);
        assert_eq!(l.open(ip("127.0.0.1")), 0);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let l = PerAddressLimit::new(1, vec![]);
        let _a = l.try_acquire(ip("2001:db8:1:2::1")).unwrap();
        assert!(l.try_acquire(ip("2001:db8:1:2:ffff::9")).is_err(), "same /64");
        let _b = l.try_acquire(ip("2001:db8:1:3::1")).unwrap();
        let _c = l.try_acquire(ip("192.0.2.7")).unwrap();
        assert!(l.try_acquire(ip("::ffff:192.0.2.7")).is_err(), "mapped is the same address");
    }

    #[test]
    fn zero_disables_the_limit() {
        let l = PerAddressLimit::new(0, vec![]);
        let _held: Vec<_> = (0..50).map(|_| l.try_acquire(ip("192.0.2.1")).unwrap()).collect();
    }

    #[test]
    fn parses_addresses_and_networks() {
        assert!(parse_network("10.0.0.0/8").unwrap().contains(&ip("10.1.2.3")));
        assert!(parse_network(" ::1 ").unwrap().contains(&ip("::1")));
        assert!(parse_network("localhost").is_err());
        assert!(parse_network("10.0.0.0/33").is_err());
    }
}
