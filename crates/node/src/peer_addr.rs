//! Where a member's peer port is, as other members dial it: an IP address
//! or a host name, and a port. A host name stays a name here; it is
//! resolved by the transport each time it connects (`peer_io::dial`), so a
//! member whose address changes behind its name (a rescheduled pod, a
//! replaced machine) is reached again on the next reconnect. Nothing here
//! does IO except `resolve`, and the replica never sees these: it knows
//! members by id only.
//!
//! The text form (`host:port`, IPv6 in brackets) is the one member ids are
//! derived from (`ferrite_service::ids`): for an IP address it is exactly
//! `SocketAddr`'s, so ids made before host names were allowed are
//! unchanged. Host names are kept lowercase (DNS ignores case), so two
//! spellings of one name are one member.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};

/// The longest host name DNS allows.
const HOST_NAME_BYTES_MAX: usize = 253;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerAddr {
    host: Host,
    port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Host {
    Ip(IpAddr),
    /// Invariant: a valid host name, lowercase.
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    #[error("{0:?}: expected host:port, http://host:port or https://host:port")]
    Form(String),
    #[error("{0:?}: the port is missing or not a number within 1..=65535")]
    Port(String),
    #[error("{0:?}: not an IP address or a valid host name")]
    Host(String),
}

impl PeerAddr {
    /// Parses a peer URL as etcd writes them (`http://host:port`,
    /// `https://host:port`, with or without a final `/`) or a bare
    /// `host:port`. The scheme is not kept: whether members talk TLS is
    /// this member's configuration, not the address's.
    pub fn parse(text: &str) -> Result<PeerAddr, AddrError> {
        let form = || AddrError::Form(text.to_string());
        let rest = text.trim();
        let rest = match rest.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => rest,
            Some(_) => return Err(form()),
            None => rest,
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
            return Err(form());
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (ip, port) = v6.split_once("]:").ok_or_else(form)?;
                let ip: std::net::Ipv6Addr =
                    ip.parse().map_err(|_| AddrError::Host(text.to_string()))?;
                (Host::Ip(IpAddr::V6(ip)), port)
            }
            None => {
                let (host, port) = authority.rsplit_once(':').ok_or_else(form)?;
                // An IPv6 address goes in brackets, as in URLs.
                let host = Host::parse(host)
                    .filter(|_| !host.contains(':'))
                    .ok_or_else(|| AddrError::Host(text.to_string()))?;
                (host, port)
            }
        };
        let port = match port.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(AddrError::Port(text.to_string())),
        };
        Ok(PeerAddr { host, port })
    }

    /// The address with `host` (an IP address or a host name) and `port`.
    pub fn new(host: &str, port: u16) -> Result<PeerAddr, AddrError> {
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let host = Host::parse(host).ok_or_else(|| AddrError::Host(host.to_string()))?;
        Ok(PeerAddr { host, port })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The IP address, when the host is one (not a name).
    pub fn ip(&self) -> Option<IpAddr> {
        match self.host {
            Host::Ip(ip) => Some(ip),
            Host::Name(_) => None,
        }
    }

    /// The socket address, when the host is an IP address.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.ip().map(|ip| SocketAddr::new(ip, self.port))
    }

    /// The host as written in URLs (IPv6 in brackets).
    pub fn host(&self) -> String {
        match &self.host {
            Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
            Host::Ip(ip) => ip.to_string(),
            Host::Name(name) => name.clone(),
        }
    }

    /// `scheme://host:port`.
    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{self}")
    }

    /// The socket addresses to try, now: the IP address itself, or what
    /// the system resolver (`/etc/hosts`, DNS) says the name is today.
    pub async fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        match &self.host {
            Host::Ip(ip) => Ok(vec![SocketAddr::new(*ip, self.port)]),
            Host::Name(name) => {
                let found: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), self.port))
                    .await?
                    .collect();
                if found.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{name} resolves to no address"),
                    ));
                }
                Ok(found)
            }
        }
    }
}

impl Host {
    fn parse(text: &str) -> Option<Host> {
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Some(Host::Ip(ip));
        }
        valid_host_name(text).then(|| Host::Name(text.to_ascii_lowercase()))
    }
}

/// Letters, digits, '-' and '_' in dot-separated labels of 1..=63 bytes
/// (underscores appear in real service names, e.g. SRV-style records).
fn valid_host_name(text: &str) -> bool {
    let text = text.strip_suffix('.').unwrap_or(text);
    !text.is_empty()
        && text.len() <= HOST_NAME_BYTES_MAX
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        // All digits and dots is a malformed IPv4 address, not a name.
        && !text.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            // Exactly `SocketAddr`'s text: member ids hash it.
            Host::Ip(ip) => SocketAddr::new(*ip, self.port).fmt(f),
            Host::Name(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

impl From<SocketAddr> for PeerAddr {
    fn from(addr: SocketAddr) -> PeerAddr {
        PeerAddr {
            host: Host::Ip(addr.ip()),
            port: addr.port(),
        }
    }
}

impl From<&PeerAddr> for PeerAddr {
    fn from(addr: &PeerAddr) -> PeerAddr {
        addr.clone()
    }
}

impl std::str::FromStr for PeerAddr {
    type Err = AddrError;

    fn from_str(text: &str) -> Result<PeerAddr, AddrError> {
        PeerAddr::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<PeerAddr, AddrError> {
        PeerAddr::parse(text)
    }

    #[test]
    fn ip_addresses_print_as_socket_addresses() {
        for text in [
            "127.0.0.1:2380",
            "10.250.1.2:1",
            "[::1]:2380",
            "[fe80::1:2]:65535",
        ] {
            let sa: SocketAddr = text.parse().unwrap();
            assert_eq!(p(text).unwrap().to_string(), sa.to_string());
            assert_eq!(PeerAddr::from(sa), p(text).unwrap());
            assert_eq!(
                p(&format!("http://{text}/")).unwrap().to_string(),
                sa.to_string()
            );
            assert_eq!(p(text).unwrap().socket_addr(), Some(sa));
        }
    }

    #[test]
    fn host_names_are_kept_lowercase() {
        let a = p("https://Ferrite-0.ferrite-peer.default.svc:2380").unwrap();
        assert_eq!(a.to_string(), "ferrite-0.ferrite-peer.default.svc:2380");
        assert_eq!(a.ip(), None);
        assert_eq!(
            a.url("http"),
            "http://ferrite-0.ferrite-peer.default.svc:2380"
        );
        assert_eq!(p("localhost:1").unwrap().host(), "localhost");
        assert_eq!(PeerAddr::new("[::1]", 7).unwrap().to_string(), "[::1]:7");
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            "",
            "h1",
            "h1:",
            "h1:0",
            "h1:65536",
            "h1:x",
            "ftp://h1:1",
            "http://h1:1/path",
            "http://u@h1:1",
            "-h1:1",
            "h 1:1",
            "1.2.3:1",
            "[::1:1",
            "::1:2380",
            "http://",
        ] {
            assert!(p(bad).is_err(), "{bad:?} was accepted");
        }
        let long = format!("{}:1", "a.".repeat(200));
        assert!(p(&long).is_err());
    }

    #[tokio::test]
    async fn resolves_names_and_ips() {
        let ip = p("127.0.0.1:5").unwrap().resolve().await.unwrap();
        assert_eq!(ip, vec![SocketAddr::from(([127, 0, 0, 1], 5))]);
        let local = p("localhost:5").unwrap().resolve().await.unwrap();
        assert!(
            local.iter().all(|a| a.ip().is_loopback() && a.port() == 5),
            "{local:?}"
        );
    }
}
