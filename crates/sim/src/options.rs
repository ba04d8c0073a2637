//! Per-seed parameters. Swarm testing (TigerBeetle's `options_swarm`): each
//! seed also draws its own fault rates, so some runs are calm and some are
//! storms, and rare interleavings get a chance.

use ferrite_raft::{Canary, Prng};
use ferrite_state::watch::WatchCanary;
use ferrite_state::AlarmCanary;

/// Virtual time, in microseconds.
pub type Micros = u64;

#[derive(Clone, Debug)]
pub struct Options {
    pub seed: u64,
    pub voters: usize,
    pub clients: usize,
    pub keys: u64,
    /// Events processed while faults are injected.
    pub steps: u64,
    pub tick: Micros,
    pub latency_min: Micros,
    pub latency_max: Micros,
    pub drop_per_million: u64,
    pub duplicate_per_million: u64,
    pub disk_latency_max: Micros,
    /// Mean time between fault injections.
    pub nemesis_interval: Micros,
    pub crash_weight: u64,
    /// Process pauses (as by SIGSTOP or a long GC): the node sees nothing
    /// and does nothing, then resumes with its old view of the world.
    pub pause_weight: u64,
    /// Each node's tick interval is up to this many per mille longer or
    /// shorter than `tick` (the bound `eps` on clock-rate differences that
    /// the lease checker assumes): the lessor counts ticks, so a node whose
    /// ticks come fast has a fast clock.
    pub clock_skew_per_mille: u64,
    pub partition_weight: u64,
    pub transfer_weight: u64,
    pub membership_weight: u64,
    /// Compact when this many entries are applied past the last snapshot.
    pub compact_every: u64,
    pub snapshot_chunk_bytes: usize,
    /// WAL segment size: small ones make segments roll and get deleted often.
    pub segment_bytes_max: u64,
    /// Entries per AppendEntries: small values split a new leader's catch-up
    /// into many messages, which opens the windows Figure 8 is about.
    pub append_entries_max: usize,
    pub inflight_appends_max: usize,
    pub client_timeout: Micros,
    /// Of every thousand clients, how many send writes without a session
    /// (as plain etcd clients do): their writes are applied once only if
    /// the server never re-proposes one whose outcome is unknown.
    pub sessionless_per_mille: u64,
    /// The apply thread takes up to this long per task.
    pub apply_latency_max: Micros,
    /// The core's apply budget: payload bytes handed to apply and not yet
    /// applied.
    pub apply_bytes_max: usize,
    /// Ticks a request may wait in the replica.
    pub request_ticks: u64,
    /// After healing, everything must settle within this much virtual time.
    pub heal_deadline: Micros,
    pub canary: Canary,
    /// Test-only: nodes answer reads from their local state machine without
    /// ReadIndex, so deposed leaders and lagging followers serve stale data.
    /// The linearizability checker must catch it.
    pub stale_reads: bool,
    /// Test-only: writes are acknowledged without their fdatasync, so a
    /// crash loses acknowledged state. The safety checks must catch it.
    pub skip_sync: bool,
    /// KV clients: each writes a few KV keys (puts, deletes, a txn over
    /// several keys, rare compactions) and holds leases (grant, attach
    /// keys, keep alive, lapse or revoke).
    pub kv_clients: usize,
    /// Watch clients, each on a member, running the real `WatchStream`.
    pub watchers: usize,
    /// Entries each member's event stream keeps for readers that are
    /// behind (the real server keeps 4096): small, so readers lag.
    pub watch_ring_entries: usize,
    /// Test-only: a broken watch stream (`WatchCanary::DropLagged`: lag
    /// notices are ignored, as by a hub that drops events under
    /// backpressure). The watch checker must catch it.
    pub watch_canary: WatchCanary,
    /// Test-only: the lessor is given no way to propose revokes, so no
    /// lease ever expires. The lease lifetime check must catch it.
    pub lease_revokes_off: bool,
    /// etcd's auth in the mix (`auth.rs`): the first KV client enables it,
    /// KV clients revoke and grant back the watchers' read permissions,
    /// and most watchers watch as a limited user.
    pub auth: bool,
    /// etcd's alarms in the mix (`alarm.rs`): the first KV client raises
    /// NOSPACE now and then and clears it later, while the others write.
    pub alarms: bool,
    /// Test-only: a state machine that applies KV puts under NOSPACE. The
    /// alarm checker must catch it.
    pub alarm_canary: AlarmCanary,
}

impl Options {
    /// Draws the options of `seed`. `voters` 0 lets the seed choose 3 or 5.
    pub fn swarm(seed: u64, steps: u64, voters: usize) -> Options {
        let mut p = Prng::new(seed ^ 0x005E_ED0F_5EED);
        let voters = if voters == 0 {
            [3, 5][p.below(2) as usize]
        } else {
            voters
        };
        let latency_min = p.range(100, 2_000);
        Options {
            seed,
            voters,
            clients: p.range(1, 8) as usize,
            keys: p.range(1, 4),
            steps,
            tick: 10_000,
            latency_min,
            latency_max: latency_min + p.range(0, 30_000),
            drop_per_million: [0, 10_000, 50_000, 200_000][p.below(4) as usize],
            duplicate_per_million: [0, 10_000, 100_000][p.below(3) as usize],
            disk_latency_max: p.range(50, 8_000),
            nemesis_interval: p.range(50_000, 500_000),
            crash_weight: p.range(0, 10),
            pause_weight: p.range(0, 5),
            clock_skew_per_mille: [0, 20, 100, 500][p.below(4) as usize],
            partition_weight: p.range(0, 10),
            transfer_weight: p.range(0, 5),
            membership_weight: p.range(0, 5),
            compact_every: p.range(10, 300),
            snapshot_chunk_bytes: [64, 512, 1 << 20][p.below(3) as usize],
            segment_bytes_max: [512, 4096, 1 << 20][p.below(3) as usize],
            append_entries_max: [1, 4, 16, 64][p.below(4) as usize],
            inflight_appends_max: [1, 4, 16][p.below(3) as usize],
            client_timeout: p.range(100_000, 600_000),
            sessionless_per_mille: [0, 300, 500, 1000][p.below(4) as usize],
            apply_latency_max: [0, 200, 2_000, 20_000][p.below(4) as usize],
            apply_bytes_max: [128, 1024, 1 << 20][p.below(3) as usize],
            request_ticks: p.range(20, 60),
            heal_deadline: 60_000_000,
            canary: Canary::None,
            stale_reads: false,
            skip_sync: false,
            kv_clients: p.range(0, 3) as usize,
            watchers: p.range(0, 3) as usize,
            watch_ring_entries: [8, 16, 64][p.below(3) as usize],
            watch_canary: WatchCanary::None,
            lease_revokes_off: false,
            auth: p.below(2) == 0,
            alarms: p.below(3) == 0,
            alarm_canary: AlarmCanary::None,
        }
    }

    /// A harsher profile for showing that the checkers catch broken cores:
    /// three voters, leaders crashing often, one entry per append and a
    /// window of one, so that a new leader's catch-up of old entries spans
    /// many round trips (the windows Figure 8 is about).
    pub fn storm(seed: u64, steps: u64) -> Options {
        let mut o = Options::swarm(seed, steps, 3);
        let mut p = Prng::new(seed ^ 0x5707_3A11);
        o.nemesis_interval = p.range(30_000, 300_000);
        o.crash_weight = p.range(2, 6);
        o.partition_weight = 10;
        o.transfer_weight = p.range(0, 3);
        o.membership_weight = 0;
        o.append_entries_max = 1;
        o.inflight_appends_max = 1;
        o.disk_latency_max = p.range(1_000, 20_000);
        o.compact_every = 1_000_000;
        o.sessionless_per_mille = 500;
        o.apply_latency_max = p.range(1_000, 20_000);
        o.apply_bytes_max = 128;
        o.kv_clients = p.range(2, 3) as usize;
        o.watchers = p.range(2, 3) as usize;
        o
    }

    pub fn describe(&self) -> String {
        format!(
            "seed={} voters={} clients={} keys={} steps={} latency={}..{}us drop={}ppm dup={}ppm disk<={}us \
             nemesis={}us skew={}permille weights(crash={} pause={} partition={} transfer={} membership={}) compact={} chunk={} segment={} append={}x{} \
             sessionless={}permille apply<={}us/{}B request={}ticks kv_clients={} watchers={} ring={} auth={} alarms={} canary={}{}{}{}",
            self.seed,
            self.voters,
            self.clients,
            self.keys,
            self.steps,
            self.latency_min,
            self.latency_max,
            self.drop_per_million,
            self.duplicate_per_million,
            self.disk_latency_max,
            self.nemesis_interval,
            self.clock_skew_per_mille,
            self.crash_weight,
            self.pause_weight,
            self.partition_weight,
            self.transfer_weight,
            self.membership_weight,
            self.compact_every,
            self.snapshot_chunk_bytes,
            self.segment_bytes_max,
            self.append_entries_max,
            self.inflight_appends_max,
            self.sessionless_per_mille,
            self.apply_latency_max,
            self.apply_bytes_max,
            self.request_ticks,
            self.kv_clients,
            self.watchers,
            self.watch_ring_entries,
            self.auth,
            self.alarms,
            self.canary.name(),
            match (self.stale_reads, self.skip_sync) {
                (true, true) => " stale-reads skip-sync",
                (true, false) => " stale-reads",
                (false, true) => " skip-sync",
                (false, false) => "",
            },
            if self.watch_canary == WatchCanary::None {
                String::new()
            } else {
                format!(" watch-canary={}", self.watch_canary.name())
            },
            if self.alarm_canary == AlarmCanary::None {
                String::new()
            } else {
                format!(" alarm-canary={}", self.alarm_canary.name())
            },
        )
    }
}
