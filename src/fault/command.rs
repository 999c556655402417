//! `command`: a fault made of two shell commands, `apply` and `revert`, on any
//! target (local, netns, ssh). This is how a drill covers what no built-in kind
//! does (`systemctl stop relay` / `systemctl start relay`) without losing a
//! guarantee:
//!
//! - the `revert` line is in the undo record, so it is in the ledger before `apply`
//!   runs; the engine runs it on every path out of the drill, and `firedrill
//!   recover` replays it from the ledger (on the recorded target);
//! - a dead-man is armed **on the target's host** before `apply` runs: a detached
//!   watcher that runs `revert` by itself at the ttl, even if the engine dies or
//!   loses its link to the host. It is a `systemd-run --on-active` timer where
//!   systemd runs, else a `setsid` shell in its own session (it outlives the SSH
//!   session that started it). A normal revert cancels it first; a revert that
//!   finds it has already fired does not run `revert` again, and says so;
//! - an `apply` that fails is still reverted (it may have done half its work).
//!
//! The watcher's files live in `/tmp/firedrill-deadman-<uid>/` on the host (mode
//! 700): `<tag>.revert` (the line), `<tag>.pid` (the watcher), `<tag>.done` (its
//! exit code once it fired). `revert` must be idempotent: the dead-man and a
//! revert racing at the ttl may both run it.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Effect, FaultCtx, FaultError, RevertCtx, Reverted, ms_since};
use crate::duration::HumanDuration;
use crate::target::{Cmd, Target};

/// Parameters of `command`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CommandFault {
    /// Shell command line (`sh -c`, shell by design) that injects the fault on the target, e.g. `systemctl stop relay`. A non-zero exit fails the injection (exit 3), and `revert` still runs.
    pub apply: String,
    /// Shell command line (`sh -c`) that undoes `apply`, e.g. `systemctl start relay`. Written to the ledger before `apply` runs; run by the revert, by `firedrill recover` and by the dead-man on the host at the ttl. Must be idempotent.
    pub revert: String,
    /// Optional shell command line that exits 0 once the fault is in effect (the measured effect), polled until `verify_timeout`; without it the effect is `apply` exiting 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
    /// Time limit of each run of `apply`, `revert` and `check`.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// How long `check` may take to pass before the fault is declared not effective.
    #[serde(default = "default_verify")]
    pub verify_timeout: HumanDuration,
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

fn default_verify() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

/// Undo record of `command`: the revert line and where its dead-man waits.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Undo {
    /// Where `apply` ran; every revert runs there.
    pub target: Target,
    /// The shell line that undoes the fault.
    pub revert: String,
    /// Time limit of the revert.
    pub timeout_s: u64,
    /// Names the dead-man's files and unit on the host.
    pub deadman_tag: String,
    /// The dead-man's delay after injection, in seconds.
    pub ttl_s: u64,
    /// When the dead-man fires at the earliest (RFC 3339, UTC): the ttl counted
    /// from the moment this record was made, just before it was armed.
    pub fires_at: String,
}

/// Arms the watcher: `$1` tag, `$2` ttl in seconds, the revert line on stdin.
/// Prints `systemd` or `setsid` (how it was armed).
const ARM: &str = r#"set -e
d="/tmp/firedrill-deadman-$(id -u)"
mkdir -p -m 700 "$d"
[ -O "$d" ] || { echo "$d is not owned by this user" >&2; exit 1; }
b="$d/$1"
rm -f "$b.done" "$b.pid"
cat > "$b.revert"
w='rm -f "$0.pid"; sh "$0.revert" > "$0.log" 2>&1; echo $? > "$0.done"'
if [ -d /run/systemd/system ] && command -v systemd-run > /dev/null 2>&1 \
   && systemd-run --quiet --collect --unit "firedrill-deadman-$1" --on-active="$2" \
        sh -c "$w" "$b" > /dev/null 2>&1; then
  echo systemd > "$b.how"; echo systemd
else
  setsid sh -c "sleep \"\$1\"; $w" "$b" "$2" < /dev/null > /dev/null 2>&1 &
  echo "$!" > "$b.pid"; echo setsid > "$b.how"; echo setsid
fi
"#;

/// Cancels the watcher of tag `$1`, then runs the revert unless it already fired.
/// Last line: `reverted CODE` or `fired CODE`; the revert's output before it.
const REVERT: &str = r#"d="/tmp/firedrill-deadman-$(id -u)"
b="$d/$1"
# Fired: say so (once; its files go) and do not run the revert twice.
fired() { c=$(cat "$b.done"); rm -f "$b.done" "$b.how" "$b.revert" "$b.log" "$b.pid"; echo "fired $c"; exit 0; }
if [ -f "$b.done" ]; then fired; fi
if [ "$(cat "$b.how" 2>/dev/null)" = systemd ]; then
  systemctl stop "firedrill-deadman-$1.timer" > /dev/null 2>&1 || true
elif [ -f "$b.pid" ]; then
  p=$(cat "$b.pid")
  # Only the watcher itself (its command line names the tag): never a recycled pid.
  if tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | grep -qF "$b"; then kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p"; fi
fi
# Fired while we looked: do not run it twice.
if [ -f "$b.done" ]; then fired; fi
rm -f "$b.pid"
sh -c "$2"
c=$?
rm -f "$b.revert" "$b.how"
echo "reverted $c"
"#;

/// Whether the watcher of tag `$1` is still waiting: prints `armed`, `fired CODE` or `none`.
#[cfg(test)]
const STATE: &str = r#"b="/tmp/firedrill-deadman-$(id -u)/$1"
if [ -f "$b.done" ]; then echo "fired $(cat "$b.done")"
elif [ -f "$b.pid" ] || [ "$(cat "$b.how" 2>/dev/null)" = systemd ]; then echo armed
else echo none; fi
"#;

/// Retries of a revert whose link to the host was lost (after 1 s, 2 s, 4 s).
const RETRIES: u32 = 3;

fn sh(script: &str, args: &[&str]) -> Cmd {
    Cmd::new("sh")
        .args(["-c", script, "firedrill"])
        .args(args.iter().copied())
}

/// Letters, digits, `-` and `_` of `s`: safe in a file and a unit name.
fn tag_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect()
}

/// Arms the dead-man of tag `tag` on `target`: `revert` (a shell line) runs there
/// by itself `ttl_s` seconds from now unless [`cancel_and_revert`] comes first.
/// Returns how it was armed (`systemd` or `setsid`).
pub(crate) async fn arm(
    target: &Target,
    tag: &str,
    ttl_s: u64,
    revert: &str,
    timeout: Duration,
) -> Result<String, FaultError> {
    let armed = target
        .run(
            &sh(ARM, &[tag, &ttl_s.to_string()])
                .stdin(revert.as_bytes().to_vec())
                .timeout(timeout),
        )
        .await
        .map_err(|e| {
            FaultError::System(format!(
                "cannot arm the dead-man on {}: {e}",
                target.describe()
            ))
        })?;
    if !armed.success() {
        return Err(FaultError::System(format!(
            "cannot arm the dead-man on {}: {}",
            target.describe(),
            String::from_utf8_lossy(&armed.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&armed.stdout).trim().to_string())
}

/// What [`cancel_and_revert`] found and did.
pub(crate) enum Outcome {
    /// The dead-man had already run the revert, which exited with this code.
    Fired(String),
    /// The dead-man was cancelled and the revert ran: its exit code, its output
    /// (without the status line) and its stderr.
    Ran(String, String, String),
}

/// Cancels the dead-man of `tag` on `target`, then runs `revert` there unless the
/// dead-man already did. A lost link is retried with backoff (the ssh target
/// reconnects on the next call): a host that stays away keeps its dead-man. On
/// failure, the last error and the number of attempts.
pub(crate) async fn cancel_and_revert(
    target: &Target,
    tag: &str,
    revert: &str,
    timeout: Duration,
) -> Result<Outcome, (crate::target::TargetError, u32)> {
    let cmd = sh(REVERT, &[tag, revert]).timeout(timeout);
    let mut attempt = 0;
    let out = loop {
        match target.run(&cmd).await {
            Ok(out) => break out,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted && attempt < RETRIES => {
                tracing::warn!(host = %target.describe(), attempt, "revert: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
                attempt += 1;
            }
            Err(e) => return Err((e, attempt + 1)),
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines: Vec<&str> = stdout.lines().collect();
    let last = lines.pop().unwrap_or("").to_string();
    let code = last.split_whitespace().nth(1).unwrap_or("?").to_string();
    if last.starts_with("fired") {
        return Ok(Outcome::Fired(code));
    }
    Ok(Outcome::Ran(
        if out.success() { code } else { "?".into() },
        lines.join("\n"),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    ))
}

impl CommandFault {
    pub(crate) fn validate(&self, _target: &Target) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        for (field, v) in [("with.apply", &self.apply), ("with.revert", &self.revert)] {
            if v.trim().is_empty() {
                errs.push((
                    field.to_string(),
                    "found an empty command, expected a shell command line".into(),
                ));
            }
        }
        if self.check.as_ref().is_some_and(|c| c.trim().is_empty()) {
            errs.push((
                "with.check".into(),
                "found an empty command, expected a shell command line or no `check`".into(),
            ));
        }
        if self.timeout.0.is_zero() {
            errs.push((
                "with.timeout".into(),
                "found 0s, expected a positive duration".into(),
            ));
        }
        errs
    }

    pub(crate) fn describe(&self) -> String {
        format!("`{}` (undone by `{}`)", self.apply, self.revert)
    }

    pub(crate) async fn prepare(&self, ctx: &FaultCtx<'_>) -> Result<Undo, FaultError> {
        let nonce = fastrand::u32(..);
        Ok(Undo {
            target: ctx.target.clone(),
            revert: self.revert.clone(),
            timeout_s: self.timeout.0.as_secs().max(1),
            deadman_tag: format!(
                "{}-{}-{nonce:08x}",
                tag_part(ctx.run_id),
                tag_part(ctx.step)
            ),
            ttl_s: ctx.ttl.as_secs().max(1),
            fires_at: humantime::format_rfc3339_seconds(
                SystemTime::now() + Duration::from_secs(ctx.ttl.as_secs().max(1)),
            )
            .to_string(),
        })
    }

    pub(crate) async fn apply(
        &self,
        ctx: &FaultCtx<'_>,
        undo: &Undo,
    ) -> Result<Effect, FaultError> {
        let t = ctx.target;
        // The dead-man first: from here on the fault expires by itself.
        let how = arm(
            t,
            &undo.deadman_tag,
            undo.ttl_s,
            &undo.revert,
            self.timeout.0,
        )
        .await?;
        let fires_at = SystemTime::now() + Duration::from_secs(undo.ttl_s);
        let out = t
            .run(
                &Cmd::new("sh")
                    .args(["-c", &self.apply])
                    .timeout(self.timeout.0),
            )
            .await
            .map_err(|e| {
                FaultError::System(format!("`{}` on {}: {e}", self.apply, t.describe()))
            })?;
        if !out.success() {
            return Err(FaultError::System(format!(
                "`{}` on {} exited with {}: {}",
                self.apply,
                t.describe(),
                out.code.map_or("a signal".into(), |c| c.to_string()),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let mut measured = format!("`{}` exited 0", self.apply);
        let mut as_declared = true;
        if let Some(check) = &self.check {
            let deadline = Instant::now() + self.verify_timeout.0;
            loop {
                let ok = t
                    .run(&Cmd::new("sh").args(["-c", check]).timeout(self.timeout.0))
                    .await
                    .is_ok_and(|o| o.success());
                if ok {
                    measured.push_str(&format!("; `{check}` holds"));
                    break;
                }
                if Instant::now() >= deadline || ctx.cancel.is_cancelled() {
                    measured.push_str(&format!(
                        "; `{check}` did not hold within {}",
                        self.verify_timeout
                    ));
                    as_declared = false;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        if !as_declared {
            return Err(FaultError::NotEffective(measured));
        }
        Ok(Effect {
            declared: self.describe(),
            measured,
            as_declared,
            effective_after_ms: Some(ms_since(ctx.started)),
            details: serde_json::json!({
                "deadman": {
                    "armed_with": how,
                    "tag": undo.deadman_tag,
                    "fires_at_unix_s": fires_at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
                    "on": t.describe(),
                },
            }),
        })
    }
}

impl Undo {
    /// Whether the dead-man is still waiting (so the fault is in effect as far as
    /// the host knows); None when the host cannot be asked.
    #[cfg(test)]
    pub(crate) async fn deadman_state(&self) -> Option<String> {
        let out = self
            .target
            .run(&sh(STATE, &[&self.deadman_tag]).timeout(Duration::from_secs(10)))
            .await
            .ok()?;
        out.success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    pub(crate) async fn revert(&self, _ctx: &RevertCtx<'_>) -> Result<Reverted, FaultError> {
        let start = Instant::now();
        let t = &self.target;
        let timeout = Duration::from_secs(self.timeout_s);
        match cancel_and_revert(t, &self.deadman_tag, &self.revert, timeout).await {
            Err((e, attempts)) => Err(FaultError::System(format!(
                "revert pending on {}: {e} (after {attempts} attempts); its dead-man fires at {} and runs `{}` there by itself",
                t.describe(),
                self.fires_at,
                self.revert
            ))),
            Ok(Outcome::Fired(code)) if code == "0" => Ok(Reverted {
                measured: format!(
                    "the dead-man on {} had already run `{}` at the ttl (exit 0); not run again",
                    t.describe(),
                    self.revert
                ),
                restored_after_ms: None,
                details: serde_json::json!({ "by": "deadman" }),
            }),
            Ok(Outcome::Fired(code)) => Err(FaultError::System(format!(
                "the dead-man on {} ran `{}` at the ttl and it exited {code}",
                t.describe(),
                self.revert
            ))),
            Ok(Outcome::Ran(code, _, _)) if code == "0" => Ok(Reverted {
                measured: format!(
                    "`{}` exited 0 on {}; dead-man cancelled",
                    self.revert,
                    t.describe()
                ),
                restored_after_ms: Some(ms_since(start)),
                details: serde_json::json!({ "by": "revert" }),
            }),
            Ok(Outcome::Ran(code, _, stderr)) => Err(FaultError::System(format!(
                "`{}` on {} exited with {code}: {stderr}",
                self.revert,
                t.describe()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx_parts() -> (crate::rt::Runtime, tokio_util::sync::CancellationToken) {
        (
            crate::rt::Runtime::default(),
            tokio_util::sync::CancellationToken::new(),
        )
    }

    #[test]
    fn tags_are_safe_words() {
        assert_eq!(tag_part("a b/../c;d"), "a_b____c_d");
    }

    #[tokio::test]
    async fn local_apply_then_revert_cancels_the_deadman() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("flag");
        let f = CommandFault {
            apply: format!("touch '{}'", flag.display()),
            revert: format!("rm -f '{}'", flag.display()),
            check: Some(format!("test -e '{}'", flag.display())),
            timeout: default_timeout(),
            verify_timeout: default_verify(),
        };
        let (rt, cancel) = ctx_parts();
        let ctx = FaultCtx {
            run_id: "unit-cmd",
            step: "flag",
            target: &Target::Local,
            ttl: Duration::from_secs(60),
            started: Instant::now(),
            cancel,
            runtime: &rt,
        };
        let undo = f.prepare(&ctx).await.unwrap();
        let eff = f.apply(&ctx, &undo).await.unwrap();
        assert!(eff.as_declared && flag.exists(), "{eff:?}");
        assert_eq!(undo.deadman_state().await.as_deref(), Some("armed"));
        let r = undo
            .revert(&RevertCtx {
                runtime: None,
                hurry: false,
            })
            .await
            .unwrap();
        assert!(!flag.exists(), "{r:?}");
        assert_eq!(undo.deadman_state().await.as_deref(), Some("none"));
        // Idempotent.
        undo.revert(&RevertCtx {
            runtime: None,
            hurry: false,
        })
        .await
        .unwrap();
    }
}
