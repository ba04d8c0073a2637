//! Lease expiry, judged from the outside: what the clients were told and
//! when the cluster carried out revokes.
//!
//! Inputs (all times in microseconds of one clock, the simulator's virtual
//! time or a test's monotonic clock):
//! - for every lease, its granted TTL, and every renewal a client asked for:
//!   the grant itself and each keepalive, with the time it was SENT and,
//!   if the client got one, the TTL the answer carried (etcd's client also
//!   computes its deadline from the send time);
//! - when the client itself asked for a revoke (first send);
//! - when the lease's revoke was first applied on any member (its keys
//!   deleted).
//!
//! Rules, with `eps` the bound on clock-rate differences (a member's tick
//! interval is within nominal·(1 ± eps), so its clock measures a TTL in real
//! time between ttl·(1 − eps) and ttl·(1 + eps)):
//! - **safety**: a lease is never revoked at a time `t` when an
//!   acknowledged renewal sent at `s` with TTL `ttl` still covers it:
//!   `s + ttl·(1 − eps) − slack > t` is a violation. `slack` is the lessor's
//!   granularity (its clock advances by whole ticks, so a renewal is dated
//!   up to one tick before it happens): the simulator states it as two
//!   nominal ticks. Revokes the client asked for are exempt from the time
//!   it first sent that revoke on.
//! - **bounded lifetime** (`overdue`): once faults have stopped, a lease
//!   must be revoked by `base + ttl·(1 + eps) + revoke_bound`, where `base`
//!   is the latest of: the last renewal sent (acknowledged or not) plus the
//!   time a request can take to reach the leader (`reach`), the time its
//!   grant was first applied, and the latest promote of a leader's lessor
//!   (a new leader restarts the clock, by design, at up to the full TTL).
//!   `revoke_bound` covers proposing, retrying and committing the revoke;
//!   the caller states both bounds.

use std::collections::BTreeMap;

use crate::Violation;

/// One renewal a client asked for: the grant, or a keepalive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Renewal {
    pub sent: u64,
    /// The TTL (seconds) the acknowledgement carried; `None`: no answer,
    /// or a refusal.
    pub acked_ttl_s: Option<i64>,
}

#[derive(Clone, Debug, Default)]
pub struct LeaseRecord {
    pub ttl_s: i64,
    pub renewals: Vec<Renewal>,
    pub client_revoke_sent: Option<u64>,
    pub granted_at: Option<u64>,
    pub revoked_at: Option<u64>,
}

/// The bounds the rules are checked with (microseconds, per mille).
#[derive(Clone, Copy, Debug)]
pub struct LeaseBounds {
    pub eps_per_mille: u64,
    pub slack: u64,
    pub reach: u64,
    pub revoke_bound: u64,
}

#[derive(Clone, Debug, Default)]
pub struct LeaseHistory {
    leases: BTreeMap<i64, LeaseRecord>,
}

impl LeaseHistory {
    pub fn leases(&self) -> &BTreeMap<i64, LeaseRecord> {
        &self.leases
    }

    /// A client sends a grant of `id` at `sent`; returns its renewal index.
    pub fn granting(&mut self, id: i64, ttl_s: i64, sent: u64) -> usize {
        let l = self.leases.entry(id).or_default();
        l.ttl_s = ttl_s;
        l.renewals.push(Renewal {
            sent,
            acked_ttl_s: None,
        });
        l.renewals.len() - 1
    }

    /// A client sends a keepalive of `id` at `sent`; returns its index.
    pub fn keepalive(&mut self, id: i64, sent: u64) -> usize {
        let l = self.leases.entry(id).or_default();
        l.renewals.push(Renewal {
            sent,
            acked_ttl_s: None,
        });
        l.renewals.len() - 1
    }

    /// The renewal `index` of `id` was acknowledged with `ttl_s`.
    pub fn acked(&mut self, id: i64, index: usize, ttl_s: i64) {
        if let Some(r) = self
            .leases
            .get_mut(&id)
            .and_then(|l| l.renewals.get_mut(index))
        {
            r.acked_ttl_s = Some(ttl_s);
        }
    }

    pub fn client_revoke(&mut self, id: i64, sent: u64) {
        let l = self.leases.entry(id).or_default();
        l.client_revoke_sent.get_or_insert(sent);
    }

    /// A member applied the grant of `id` at `at` (the first one counts).
    pub fn granted(&mut self, id: i64, at: u64) {
        self.leases
            .entry(id)
            .or_default()
            .granted_at
            .get_or_insert(at);
    }

    /// A member applied the revoke of `id` at `at` (the first one counts).
    pub fn revoked(&mut self, id: i64, at: u64) {
        self.leases
            .entry(id)
            .or_default()
            .revoked_at
            .get_or_insert(at);
    }

    /// The safety rule over everything recorded.
    pub fn check_safety(&self, b: &LeaseBounds) -> Result<(), Violation> {
        for (id, l) in &self.leases {
            let Some(t) = l.revoked_at else { continue };
            if l.client_revoke_sent.is_some_and(|r| r <= t) {
                continue;
            }
            for r in &l.renewals {
                let Some(ttl_s) = r.acked_ttl_s else { continue };
                let covered = r.sent + scaled(ttl_s, 1000 - b.eps_per_mille.min(1000));
                if covered.saturating_sub(b.slack) > t {
                    return Err(Violation::new(
                        "lease safety",
                        format!(
                            "lease {id} was revoked at {t}us, but a keepalive sent at {}us was acknowledged with ttl {ttl_s}s: covered until {covered}us (eps {}permille, slack {}us)",
                            r.sent, b.eps_per_mille, b.slack
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// When `id` must be revoked by (see the module header); `None` if
    /// nothing is known of it.
    pub fn deadline(&self, id: i64, last_promote: u64, b: &LeaseBounds) -> Option<u64> {
        let l = self.leases.get(&id)?;
        let last_sent = l.renewals.iter().map(|r| r.sent).max()?;
        let base = (last_sent + b.reach)
            .max(l.granted_at.unwrap_or(0))
            .max(last_promote);
        Some(base + scaled(l.ttl_s, 1000 + b.eps_per_mille) + b.revoke_bound)
    }

    /// The bounded-lifetime rule for a lease still in the table at `now`.
    pub fn overdue(
        &self,
        id: i64,
        now: u64,
        last_promote: u64,
        b: &LeaseBounds,
    ) -> Result<(), Violation> {
        match self.deadline(id, last_promote, b) {
            Some(deadline) if now > deadline => Err(Violation::new(
                "lease lifetime",
                format!(
                    "lease {id} (ttl {}s) still held at {now}us, past its deadline {deadline}us (last promote {last_promote}us, reach {}us, revoke bound {}us)",
                    self.leases.get(&id).map_or(0, |l| l.ttl_s),
                    b.reach,
                    b.revoke_bound
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// `ttl_s` seconds in microseconds, times `per_mille / 1000`.
fn scaled(ttl_s: i64, per_mille: u64) -> u64 {
    (ttl_s.max(0) as u64).saturating_mul(1_000 * per_mille)
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: LeaseBounds = LeaseBounds {
        eps_per_mille: 100,
        slack: 0,
        reach: 0,
        revoke_bound: 0,
    };

    #[test]
    fn a_revoke_inside_an_acknowledged_keepalive_is_a_violation() {
        let mut h = LeaseHistory::default();
        let g = h.granting(7, 2, 0);
        h.acked(7, g, 2);
        let k = h.keepalive(7, 1_000_000);
        h.acked(7, k, 2);
        // Covered until 1s + 2s·0.9 = 2.8s.
        h.revoked(7, 2_700_000);
        assert_eq!(h.check_safety(&B).unwrap_err().kind, "lease safety");
        let mut ok = LeaseHistory::default();
        let g = ok.granting(7, 2, 0);
        ok.acked(7, g, 2);
        ok.keepalive(7, 1_000_000); // not acknowledged: covers nothing
        ok.revoked(7, 1_900_000);
        assert!(ok.check_safety(&B).is_ok());
    }

    #[test]
    fn a_revoke_the_client_asked_for_is_exempt() {
        let mut h = LeaseHistory::default();
        let g = h.granting(7, 5, 0);
        h.acked(7, g, 5);
        h.client_revoke(7, 100);
        h.revoked(7, 200);
        assert!(h.check_safety(&B).is_ok());
    }

    #[test]
    fn a_lease_held_past_its_deadline_is_overdue() {
        let mut h = LeaseHistory::default();
        h.granting(7, 2, 0);
        h.granted(7, 0);
        assert_eq!(h.deadline(7, 0, &B), Some(2_200_000));
        assert!(h.overdue(7, 2_200_000, 0, &B).is_ok());
        assert_eq!(
            h.overdue(7, 2_200_001, 0, &B).unwrap_err().kind,
            "lease lifetime"
        );
        // A later promote moves the deadline.
        assert!(h.overdue(7, 2_200_001, 1_000_000, &B).is_ok());
    }
}
