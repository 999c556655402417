//! The `ssh_group` target: a fleet of hosts reached the same way, of which a
//! selection is drilled (all, the first N, a percentage, or a seeded random pick).
//!
//! The selection is made once, when the scenario is loaded, so the plan, the run and
//! the ledger name the same hosts (a random pick without a `seed` draws one then,
//! and the seed is recorded with the chosen hosts). A group is a [`super::Target`]
//! like any other: programs run on every chosen host, at most `concurrency` at a
//! time (the output says which host said what; the exit code is the first
//! non-zero one), and faults fan out to one undo record per host
//! ([`crate::fault::group`]).
//!
//! Rounding of `percent: P` over N hosts: `ceil(P × N / 100)` hosts, so any P > 0
//! picks at least one host and `100` picks all.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ssh::{KnownHostsPolicy, SshSpec};
use crate::duration::HumanDuration;

/// A fleet of hosts over SSH, all logged in to the same way.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SshGroupSpec {
    /// The hosts (names or addresses), in order; `count` and `percent` take them from the start.
    pub hosts: Vec<String>,
    /// Which hosts are drilled: `all` (default), `{ count: N }`, `{ percent: P }` (1 to 100, rounded up: ceil(P × N / 100)), or `{ random: { count: N, seed: S } }` / `{ random: { percent: P, seed: S } }` (a seeded pick; without `seed` one is drawn and written to the journal).
    #[serde(default)]
    pub select: Selection,
    /// How many hosts are worked on at once (faults, probes, reverts).
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// SSH port of every host.
    #[serde(default = "default_port")]
    pub port: u16,
    /// User to log in as on every host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Private key file for every host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<String>,
    /// Run every program through `sudo -n` on the hosts.
    #[serde(default)]
    pub sudo: bool,
    /// Host-key policy: `strict` (default) or `accept_new`.
    #[serde(default)]
    pub known_hosts: KnownHostsPolicy,
    /// known_hosts file to check the hosts' keys against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts_file: Option<String>,
    /// How long connecting to one host may take.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// Reach every host through this jump host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jump: Option<String>,
}

/// Which hosts of a group are drilled.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Selection {
    /// Every host.
    #[default]
    All,
    /// The first N hosts, in the order listed.
    Count(u32),
    /// The first ceil(P × N / 100) hosts (P from 1 to 100).
    Percent(u32),
    /// A seeded random pick.
    Random(RandomPick),
}

/// A seeded random pick of hosts: exactly one of `count` and `percent`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RandomPick {
    /// How many hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Which share of the hosts (1 to 100, rounded up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
    /// Seed of the pick: the same seed picks the same hosts. Drawn when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

fn default_concurrency() -> u32 {
    8
}
fn default_port() -> u16 {
    22
}
fn default_connect_timeout() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(10))
}

/// A resolved group: the chosen hosts and how they were chosen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// The chosen hosts, in the order listed.
    pub members: Vec<SshSpec>,
    /// At most this many hosts at once.
    pub concurrency: u32,
    /// How many hosts the group lists.
    pub of: usize,
    /// The selection, in words (`count 5`, `random 3 seed 42`).
    pub selection: String,
    /// The seed of a random pick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// ceil(p × n / 100), at least 1 for p > 0, at most n.
pub(crate) fn percent_of(p: u32, n: usize) -> usize {
    (((p as usize) * n).div_ceil(100)).min(n)
}

impl SshGroupSpec {
    pub(crate) fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.hosts.is_empty() {
            out.push((
                "ssh_group.hosts".into(),
                "found no host, expected at least one".into(),
            ));
        }
        for (i, h) in self.hosts.iter().enumerate() {
            for (_, msg) in self.member(h).validate() {
                out.push((format!("ssh_group.hosts[{i}]"), msg));
            }
        }
        if self.concurrency == 0 {
            out.push((
                "ssh_group.concurrency".into(),
                "found 0, expected at least 1".into(),
            ));
        }
        let n = self.hosts.len();
        let pct = |p: u32, path: &str, out: &mut Vec<(String, String)>| {
            if p == 0 || p > 100 {
                out.push((
                    path.into(),
                    format!("found {p}, expected a percentage from 1 to 100"),
                ));
            }
        };
        let cnt = |c: u32, path: &str, out: &mut Vec<(String, String)>| {
            if c == 0 || c as usize > n {
                out.push((
                    path.into(),
                    format!("found {c}, expected from 1 to the number of hosts ({n})"),
                ));
            }
        };
        match &self.select {
            Selection::All => {}
            Selection::Count(c) => cnt(*c, "ssh_group.select.count", &mut out),
            Selection::Percent(p) => pct(*p, "ssh_group.select.percent", &mut out),
            Selection::Random(r) => match (r.count, r.percent) {
                (Some(c), None) => cnt(c, "ssh_group.select.random.count", &mut out),
                (None, Some(p)) => pct(p, "ssh_group.select.random.percent", &mut out),
                _ => out.push((
                    "ssh_group.select.random".into(),
                    "expected exactly one of `count` and `percent`".into(),
                )),
            },
        }
        out
    }

    fn member(&self, host: &str) -> SshSpec {
        SshSpec {
            host: host.to_string(),
            port: self.port,
            user: self.user.clone(),
            identity_file: self.identity_file.clone(),
            sudo: self.sudo,
            known_hosts: self.known_hosts,
            known_hosts_file: self.known_hosts_file.clone(),
            connect_timeout: self.connect_timeout,
            jump: self.jump.clone(),
        }
    }

    /// Makes the selection (drawing a seed for a random pick without one).
    pub(crate) fn resolve(&self) -> Group {
        let n = self.hosts.len();
        let mut idx: Vec<usize> = (0..n).collect();
        let (take, selection, seed) = match &self.select {
            Selection::All => (n, "all".to_string(), None),
            Selection::Count(c) => (*c as usize, format!("count {c}"), None),
            Selection::Percent(p) => (percent_of(*p, n), format!("percent {p}"), None),
            Selection::Random(r) => {
                let seed = r.seed.unwrap_or_else(|| fastrand::u64(..));
                let take = match (r.count, r.percent) {
                    (Some(c), _) => c as usize,
                    (_, Some(p)) => percent_of(p, n),
                    _ => n,
                };
                fastrand::Rng::with_seed(seed).shuffle(&mut idx);
                let what = match (r.count, r.percent) {
                    (_, Some(p)) => format!("percent {p}"),
                    _ => format!("count {take}"),
                };
                (take, format!("random {what} seed {seed}"), Some(seed))
            }
        };
        let mut chosen: Vec<usize> = idx.into_iter().take(take.min(n)).collect();
        chosen.sort_unstable();
        Group {
            members: chosen
                .iter()
                .map(|&i| self.member(&self.hosts[i]))
                .collect(),
            concurrency: self.concurrency.max(1),
            of: n,
            selection,
            seed,
        }
    }
}

impl Group {
    /// `ssh-group[3 of 20, random count 3 seed 42: 10.0.0.1, …]`.
    pub(crate) fn describe(&self) -> String {
        let hosts: Vec<&str> = self.members.iter().map(|m| m.host.as_str()).collect();
        format!(
            "ssh-group[{} of {}, {}: {}]",
            self.members.len(),
            self.of,
            self.selection,
            hosts.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `select` in YAML, read as the scenario loader reads it (through JSON).
    fn group(select: &str, n: usize) -> SshGroupSpec {
        let hosts: Vec<String> = (0..n).map(|i| format!("10.0.0.{}", i + 1)).collect();
        let v: serde_yaml::Value =
            serde_yaml::from_str(&format!("hosts: {hosts:?}\nselect: {select}")).unwrap();
        serde_json::from_value(serde_json::to_value(v).unwrap()).unwrap()
    }

    #[test]
    fn percent_rounds_up() {
        assert_eq!(percent_of(1, 20), 1);
        assert_eq!(percent_of(50, 20), 10);
        assert_eq!(percent_of(33, 20), 7); // 6.6 -> 7
        assert_eq!(percent_of(100, 20), 20);
        assert_eq!(percent_of(10, 3), 1); // 0.3 -> 1
    }

    #[test]
    fn selections_pick_the_right_hosts() {
        assert_eq!(group("all", 20).resolve().members.len(), 20);
        let g = group("{ count: 5 }", 20).resolve();
        assert_eq!(g.members.len(), 5);
        assert_eq!(g.members[0].host, "10.0.0.1");
        assert_eq!(group("{ percent: 50 }", 20).resolve().members.len(), 10);
        let a = group("{ random: { count: 3, seed: 42 } }", 20).resolve();
        let b = group("{ random: { count: 3, seed: 42 } }", 20).resolve();
        assert_eq!(a, b, "a seed picks the same hosts");
        assert_eq!(a.members.len(), 3);
        assert_eq!(a.seed, Some(42));
        let c = group("{ random: { percent: 25 } }", 20).resolve();
        assert_eq!(c.members.len(), 5);
        assert!(c.seed.is_some(), "a drawn seed is recorded");
    }

    #[test]
    fn bad_selections_are_refused() {
        assert!(!group("{ count: 0 }", 3).validate().is_empty());
        assert!(!group("{ count: 4 }", 3).validate().is_empty());
        assert!(!group("{ percent: 0 }", 3).validate().is_empty());
        assert!(!group("{ percent: 101 }", 3).validate().is_empty());
        assert!(!group("{ random: { seed: 1 } }", 3).validate().is_empty());
        assert!(
            group("{ random: { percent: 100, seed: 1 } }", 3)
                .validate()
                .is_empty()
        );
    }
}
