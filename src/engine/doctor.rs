//! `firedrill doctor SCENARIO`: will this drill be able to run here, now?
//!
//! A preflight that injects nothing. For the engine: the ledger and report
//! directories take a write. For every target the faults (up to `--level`) act on:
//! it answers, its lock is free, nftables is usable there when a fault needs it, and
//! this process holds `CAP_NET_ADMIN` when one does; a Kubernetes cluster, which runs
//! no commands, is asked instead for every permission its faults need
//! (SelfSubjectAccessReview, as the run's own preflight). For every fault: its `prepare`
//! runs — the same side-effect-free resolution a real run makes before writing the
//! undo record — so a selector that matches no process, a name that does not
//! resolve or a proxy port already taken shows up now, with the words the drill
//! would have failed with. One line per check.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::lock;
use crate::fault::{FaultCtx, Undo};
use crate::rt::Runtime;
use crate::scenario::{Drill, Level};
use crate::target::{Cmd, Target};

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Ok,
    /// The drill can run, but something deserves a look.
    Warn,
    /// The drill would fail (or be refused) here.
    Fail,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        }
    }
}

/// One line of the doctor's report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub verdict: Verdict,
    /// What was checked: `engine`, `target local`, `fault "kill the worker"`.
    pub subject: String,
    pub message: String,
}

fn finding(verdict: Verdict, subject: &str, message: impl Into<String>) -> Finding {
    Finding {
        verdict,
        subject: subject.to_string(),
        message: message.into(),
    }
}

/// Every check, in order: engine, then per target, then per fault.
pub async fn examine(
    drill: &Drill,
    level: Level,
    state_dir: &Path,
    lock_dir: &Path,
    report_dir: &Path,
) -> Vec<Finding> {
    let mut out = Vec::new();
    out.push(writable("engine", "ledger directory", state_dir));
    out.push(writable("engine", "report directory", report_dir));

    let faults: Vec<_> = drill
        .faults
        .iter()
        .filter(|f| f.step.level <= level)
        .collect();
    if faults.is_empty() {
        out.push(finding(
            Verdict::Warn,
            "engine",
            format!("no fault at or below level {level}: the drill would inject nothing"),
        ));
    }
    // Each fault's resolution first: whether nftables is needed on a target is
    // known from what it resolved to.
    let runtime = Runtime::default();
    let mut per_target: BTreeMap<String, (Target, bool)> = BTreeMap::new();
    let mut fault_lines = Vec::new();
    for f in &faults {
        let subject = format!("fault \"{}\"", f.step.name);
        let ctx = FaultCtx {
            run_id: "doctor",
            step: &f.step.name,
            target: &f.target,
            ttl: Duration::from_secs(60),
            started: Instant::now(),
            cancel: CancellationToken::new(),
            runtime: &runtime,
        };
        let entry = per_target
            .entry(f.target.describe())
            .or_insert_with(|| (f.target.clone(), false));
        match f.spec.prepare(&ctx).await {
            Ok(undo) => {
                entry.1 |= needs_nft(&undo);
                fault_lines.push(proxy_port(&undo, &f.target, &subject).await.unwrap_or_else(
                    || {
                        finding(
                            Verdict::Ok,
                            &subject,
                            format!("{}: {}", f.spec.kind(), undo.preview()),
                        )
                    },
                ));
            }
            Err(e) => fault_lines.push(finding(
                Verdict::Fail,
                &subject,
                format!("{} would not be injected: {e}", f.spec.kind()),
            )),
        }
    }
    if per_target.values().any(|(_, nft)| *nft) {
        out.push(net_admin());
    }
    for (name, (target, nft)) in &per_target {
        let subject = format!("target {name}");
        match target.cluster() {
            // A cluster runs no commands: what it must grant is the faults' verbs.
            Some(cluster) => {
                let mut perms: Vec<_> = faults
                    .iter()
                    .filter(|f| f.target.describe() == *name)
                    .flat_map(|f| f.spec.permissions(&f.target))
                    .collect();
                perms.sort();
                perms.dedup();
                out.push(
                    match crate::target::kubernetes::preflight(cluster, &perms).await {
                        Ok(()) => finding(
                            Verdict::Ok,
                            &subject,
                            format!(
                                "{} permission(s) granted (SelfSubjectAccessReview)",
                                perms.len()
                            ),
                        ),
                        Err(e) => finding(Verdict::Fail, &subject, e),
                    },
                );
            }
            None => out.push(answers(target, &subject).await),
        }
        out.push(lock_free(lock_dir, target, &subject));
        if *nft {
            out.push(nft_usable(target, &subject).await);
        }
    }
    out.extend(fault_lines);
    out
}

/// A directory that exists (or can be made) and takes a small write.
fn writable(subject: &str, what: &str, dir: &Path) -> Finding {
    let probe = dir.join(format!(".firedrill-doctor-{}", std::process::id()));
    let r = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&probe, b"firedrill doctor\n"))
        .and_then(|()| std::fs::remove_file(&probe));
    match r {
        Ok(()) => finding(
            Verdict::Ok,
            subject,
            format!("{what} {} is writable", dir.display()),
        ),
        Err(e) => finding(
            Verdict::Fail,
            subject,
            format!("{what} {} is not writable: {e}", dir.display()),
        ),
    }
}

fn needs_nft(undo: &Undo) -> bool {
    match undo {
        Undo::NetworkPartition(_) | Undo::NetworkRateLimit(_) => true,
        Undo::Latency(u) | Undo::HttpFault(u) => u.redirect.is_some(),
        Undo::ProcessKill(_) | Undo::PodKill(_) | Undo::Scale(_) | Undo::Command(_) => false,
        Undo::Group(g) => g.members.iter().any(needs_nft),
    }
}

/// An explicit proxy's listen address must be free on its target when the drill
/// starts; None when the fault is not an explicit proxy.
async fn proxy_port(undo: &Undo, target: &Target, subject: &str) -> Option<Finding> {
    let (Undo::Latency(u) | Undo::HttpFault(u)) = undo else {
        return None;
    };
    u.upstream.as_ref()?;
    Some(match target.listen_tcp(u.listen).await {
        Ok(l) => {
            drop(l);
            finding(
                Verdict::Ok,
                subject,
                format!("{}: {} is free", undo.kind(), u.listen),
            )
        }
        Err(e) => finding(
            Verdict::Fail,
            subject,
            format!("{}: cannot listen on {}: {e}", undo.kind(), u.listen),
        ),
    })
}

/// `CAP_NET_ADMIN` (bit 12) in this process's effective set: nftables needs it.
fn net_admin() -> Finding {
    const CAP_NET_ADMIN: u32 = 12;
    let eff = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        });
    match eff {
        Some(caps) if caps & (1 << CAP_NET_ADMIN) != 0 => finding(
            Verdict::Ok,
            "engine",
            "CAP_NET_ADMIN held (network faults need it)",
        ),
        Some(_) => finding(
            Verdict::Fail,
            "engine",
            "CAP_NET_ADMIN missing: the network faults need it (run as root, or grant the capability)",
        ),
        None => finding(
            Verdict::Warn,
            "engine",
            "cannot read this process's capabilities",
        ),
    }
}

async fn answers(target: &Target, subject: &str) -> Finding {
    let started = Instant::now();
    match target
        .run(&Cmd::new("true").timeout(Duration::from_secs(10)))
        .await
    {
        Ok(o) if o.success() => finding(
            Verdict::Ok,
            subject,
            format!(
                "reachable (a command ran in {:.0} ms)",
                started.elapsed().as_secs_f64() * 1000.0
            ),
        ),
        Ok(o) => finding(
            Verdict::Fail,
            subject,
            format!("a command there exited with {:?}", o.code),
        ),
        Err(e) => finding(Verdict::Fail, subject, format!("not reachable: {e}")),
    }
}

/// Takes the target's lock and lets it go at once: a drill running there now holds
/// it, and the message names that run.
fn lock_free(lock_dir: &Path, target: &Target, subject: &str) -> Finding {
    match lock::acquire(lock_dir, &[target.lock_key()], "doctor") {
        Ok(held) => {
            drop(held);
            finding(
                Verdict::Ok,
                subject,
                format!("not locked by another drill ({})", lock_dir.display()),
            )
        }
        Err(e) => finding(Verdict::Fail, subject, e.to_string()),
    }
}

async fn nft_usable(target: &Target, subject: &str) -> Finding {
    let cmd = Cmd::new(crate::nft::nft_program())
        .args(["list", "tables"])
        .timeout(Duration::from_secs(10));
    match target.run(&cmd).await {
        Ok(o) if o.success() => {
            let tables = String::from_utf8_lossy(&o.stdout).lines().count();
            finding(
                Verdict::Ok,
                subject,
                format!("nftables usable ({tables} table(s) there now)"),
            )
        }
        Ok(o) => finding(
            Verdict::Fail,
            subject,
            format!(
                "nftables not usable: `nft list tables` exited with {:?}: {}",
                o.code,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
        ),
        Err(e) => finding(Verdict::Fail, subject, format!("nftables not usable: {e}")),
    }
}
