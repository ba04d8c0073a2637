//! `ferrite status`: every member with its role, naming the leader; exits
//! non-zero when the cluster has no leader.

use std::net::SocketAddr;
use std::time::Duration;

use ferrite_client::{node_status, Client};

/// Polls the endpoints until one reports a leader.
pub async fn wait_for_leader(endpoints: &[SocketAddr], within: Duration) -> Option<u64> {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        for e in endpoints {
            if let Ok(s) = node_status(&e.to_string()).await {
                if s.leader_id != 0 {
                    return Some(s.leader_id);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

pub fn role_name(role: i32) -> &'static str {
    match role {
        3 => "leader",
        2 => "candidate",
        1 => "pre-candidate",
        _ => "follower",
    }
}

pub async fn run(client: &mut Client) -> anyhow::Result<bool> {
    let members = client.cluster_status().await?;
    let mut leader = None;
    println!(
        "{:<8} {:<18} {:<24} {:<14} {:>6} {:>10} {:>10}",
        "NAME", "ID", "CLIENT", "ROLE", "TERM", "COMMIT", "APPLIED"
    );
    for m in &members {
        let url = m.client_urls.first().cloned().unwrap_or_default();
        match &m.status {
            Some(s) => {
                if s.role == 3 {
                    leader = Some(m.name.clone());
                }
                println!(
                    "{:<8} {:<18x} {:<24} {:<14} {:>6} {:>10} {:>10}",
                    m.name,
                    m.id,
                    url,
                    role_name(s.role),
                    s.term,
                    s.commit_index,
                    s.applied_index
                );
            }
            None => println!(
                "{:<8} {:<18x} {:<24} unreachable: {}",
                m.name, m.id, url, m.error
            ),
        }
    }
    match leader {
        Some(name) => {
            println!("leader: {name}");
            Ok(true)
        }
        None => {
            println!("no leader");
            Ok(false)
        }
    }
}
