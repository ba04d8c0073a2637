//! Free loopback ports for local clusters and tests.
//!
//! Ports are picked below Linux's ephemeral range (32768–60999 by
//! default). A port the kernel hands out for `bind(0)` comes from that
//! range, and between the moment it is picked and the moment a member binds
//! it, any outgoing connection on the machine may take it as its local
//! port: the member then fails to start with "address in use". Ports under
//! 32768 are never given to outgoing connections.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Mutex;

const LOW: u32 = 20_000;
const SPAN: u32 = 12_000;

/// `n` distinct loopback ports, each free when picked, none handed out
/// before by this process.
pub fn free_loopback_ports(n: usize) -> std::io::Result<Vec<u16>> {
    static NEXT: Mutex<Option<u32>> = Mutex::new(None);
    let mut next = NEXT.lock().unwrap_or_else(|e| e.into_inner());
    // Start where this process's id points, so that processes started
    // together do not all probe the same ports.
    let mut at = next.unwrap_or_else(|| std::process::id().wrapping_mul(7_919) % SPAN);
    let mut picked = Vec::with_capacity(n);
    let mut tried = 0;
    while picked.len() < n {
        if tried >= SPAN {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("no free loopback port in {LOW}..{}", LOW + SPAN),
            ));
        }
        let port = (LOW + at % SPAN) as u16;
        at = (at + 1) % SPAN;
        tried += 1;
        if TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).is_ok() {
            picked.push(port);
        }
    }
    *next = Some(at);
    Ok(picked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let a = free_loopback_ports(20).unwrap();
        let b = free_loopback_ports(20).unwrap();
        let mut all: Vec<u16> = a.iter().chain(&b).copied().collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 40);
        assert!(all.iter().all(|p| (20_000..32_000).contains(p)));
        let held = TcpListener::bind(("127.0.0.1", all[0])).unwrap();
        drop(held);
    }
}
