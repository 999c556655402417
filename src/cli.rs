//! Command-line definitions (clap only; behaviour lives in `app`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::report::Format;
use crate::scenario::Level;

/// Disaster-recovery drills: graded faults, guaranteed recovery, auditable reports.
#[derive(Debug, Parser)]
#[command(name = "firedrill", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// More log output (-v: info, -vv: debug). `RUST_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a drill and write its reports.
    Run(RunArgs),
    /// Check scenario files without running anything.
    Validate(ValidateArgs),
    /// Print the ordered, fully resolved steps of a drill (no side effects).
    Plan(PlanArgs),
    /// Revert faults left behind by runs that did not finish (replays the ledger).
    Recover(RecoverArgs),
    /// Re-render a report from a journal.json.
    Report(ReportArgs),
    /// Preflight a drill here and now, injecting nothing: targets reachable and free,
    /// nftables and CAP_NET_ADMIN where needed, processes matching, proxy ports free.
    Doctor(DoctorArgs),
    /// Check a report directory against its manifest (and signature): names every file
    /// altered, missing or added.
    Verify(VerifyArgs),
    /// The runs under a reports directory, per scenario: verdict, RTO, downtime,
    /// success rate, loss, open findings (and, with --write, index.html/index.md).
    History(HistoryArgs),
    /// Write a new ed25519 key pair for signing report manifests (`run --sign-key`).
    Keygen(KeygenArgs),
    /// Print the JSON Schema of scenario files (or the reference document made from it).
    Schema(SchemaArgs),
    /// Internal: the dead-man watcher started by reversible faults.
    #[command(name = "__deadman", hide = true)]
    Deadman(DeadmanArgs),
}

#[derive(Debug, Args)]
pub struct ScenarioArgs {
    /// Scenario file (YAML).
    pub scenario: PathBuf,
    /// Override a variable declared under `vars:` (repeatable; wins over `--var-file`).
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
    /// Values for declared vars from a file (repeatable, later files win): YAML
    /// (`.yaml`, `.yml`, `.json`: a map of name to value) or `.env` lines (`NAME=value`).
    #[arg(long = "var-file", value_name = "FILE")]
    pub var_files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub scenario: ScenarioArgs,
    /// Highest fault level to inject.
    #[arg(long, default_value = "full", value_parser = parse_level)]
    pub level: Level,
    /// Where report directories are created (`<dir>/<scenario>-<UTC timestamp>/`);
    /// checked writable before anything is injected.
    #[arg(long, default_value = "reports")]
    pub report_dir: PathBuf,
    /// Ledger directory [default: /var/lib/firedrill as root, else $XDG_STATE_HOME/firedrill].
    #[arg(long, env = "FIREDRILL_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Per-target lock directory, shared by every engine on the machine whatever its
    /// state dir [default: /run/lock/firedrill]. Change it only for tests and
    /// containers: drills with different lock dirs do not see each other.
    #[arg(long, env = "FIREDRILL_LOCK_DIR")]
    pub lock_dir: Option<PathBuf>,
    /// Directory with report templates overriding the built-in ones (report.html.hbs, report.md.hbs, junit.xml.hbs).
    #[arg(long)]
    pub template_dir: Option<PathBuf>,
    /// Print the plan and exit (same as `plan`).
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub junit: JunitArgs,
    /// Run everything except the faults (prechecks, guards, verifications, service
    /// indicators, traffic, recovery steps), to try a new scenario's probes safely.
    /// The reports say it was a rehearsal; nothing is injected and no target is locked.
    #[arg(long, conflicts_with = "dry_run")]
    pub rehearse: bool,
    /// Use this run id instead of a generated one.
    #[arg(long, hide = true)]
    pub run_id: Option<String>,
    /// A participant of the exercise and their role, for the exercise record
    /// (repeatable; added to the scenario's `metadata.participants`).
    #[arg(long = "participant", value_name = "NAME:ROLE", value_parser = parse_participant)]
    pub participants: Vec<(String, String)>,
    /// Sign the report directory's manifest with this ed25519 private key (64 hex
    /// digits from `firedrill keygen`, or an OpenSSL PEM private key); read before
    /// anything is injected.
    #[arg(long, value_name = "FILE")]
    pub sign_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A report directory written by `firedrill run`.
    pub dir: PathBuf,
    /// Also require a valid signature by this ed25519 public key (`FILE.pub` from
    /// `firedrill keygen`, or an OpenSSL PEM public key).
    #[arg(long, value_name = "FILE")]
    pub pubkey: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The reports root (each run's directory holds its journal.json).
    #[arg(long, default_value = "reports")]
    pub report_dir: PathBuf,
    /// Also rebuild `index.html` and `index.md` in the reports root (`run` does it
    /// after every drill).
    #[arg(long)]
    pub write: bool,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the private key (mode 0600); the public key goes to `FILE.pub`.
    /// Existing files are never overwritten.
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub scenario: ScenarioArgs,
    /// Highest fault level to check (as `run --level`).
    #[arg(long, default_value = "full", value_parser = parse_level)]
    pub level: Level,
    /// Report directory to check (as `run --report-dir`).
    #[arg(long, default_value = "reports")]
    pub report_dir: PathBuf,
    /// Ledger directory to check [default: as for `run`].
    #[arg(long, env = "FIREDRILL_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Lock directory to check [default: as for `run`].
    #[arg(long, env = "FIREDRILL_LOCK_DIR")]
    pub lock_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Scenario files.
    #[arg(required = true)]
    pub scenarios: Vec<PathBuf>,
    /// Override a variable declared under `vars:` (repeatable; wins over `--var-file`).
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
    /// Values for declared vars from a file (repeatable, later files win): YAML
    /// (`.yaml`, `.yml`, `.json`: a map of name to value) or `.env` lines (`NAME=value`).
    #[arg(long = "var-file", value_name = "FILE")]
    pub var_files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub scenario: ScenarioArgs,
    /// Highest fault level to include.
    #[arg(long, default_value = "full", value_parser = parse_level)]
    pub level: Level,
    /// Output format.
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum PlanFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// `json`: the JSON Schema, for editors; `markdown`: the scenario reference
    /// (docs/scenario-reference.md).
    #[arg(long, value_enum, default_value_t = SchemaFormat::Json)]
    pub format: SchemaFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum SchemaFormat {
    Json,
    Markdown,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct RecoverWhich {
    /// Recover this run.
    #[arg(long)]
    pub run: Option<String>,
    /// Recover every run with faults not reverted.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct RecoverArgs {
    #[command(flatten)]
    pub which: RecoverWhich,
    /// Also revert runs whose engine still seems alive.
    #[arg(long)]
    pub force: bool,
    /// Ledger directory [default: as for `run`].
    #[arg(long, env = "FIREDRILL_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Where the record of an interrupted run goes when its ledger names no report
    /// directory (ledgers written by older versions).
    #[arg(long, default_value = "reports")]
    pub report_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A journal.json written by `firedrill run`.
    pub journal: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Html)]
    pub format: Format,
    /// Write to this file instead of standard output.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Directory with templates overriding the built-in ones.
    #[arg(long)]
    pub template_dir: Option<PathBuf>,
    #[command(flatten)]
    pub junit: JunitArgs,
}

#[derive(Debug, Args)]
pub struct JunitArgs {
    /// How junit.xml shows a failed non-critical check: `passed` (a passing case whose
    /// output starts `NON-CRITICAL FAILURE`) or `failure` (a `<failure>` whose message
    /// starts `NON-CRITICAL:`, for CI test views that show failures without failing
    /// the job). The exit code is the same either way.
    #[arg(long, value_enum, default_value_t = JunitNonCritical::Passed, env = "FIREDRILL_JUNIT_NON_CRITICAL")]
    pub junit_non_critical: JunitNonCritical,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum JunitNonCritical {
    Passed,
    Failure,
}

#[derive(Debug, Args)]
pub struct DeadmanArgs {
    #[arg(long)]
    pub tag: String,
    #[arg(long)]
    pub ttl_ms: u64,
    /// `pid:start_time` of a frozen process (repeatable).
    #[arg(long = "proc")]
    pub procs: Vec<String>,
    /// Directory of a frozen cgroup2 cgroup to thaw (repeatable).
    #[arg(long = "thaw-cgroup")]
    pub thaw_cgroups: Vec<PathBuf>,
    /// The undo record (JSON) of a `scale` fault to revert when the ttl runs out.
    #[arg(long = "scale-undo")]
    pub scale_undo: Option<String>,
}

fn parse_var(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("found `{s}`, expected NAME=VALUE")),
    }
}

fn parse_participant(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((n, r)) if !n.trim().is_empty() && !r.trim().is_empty() => {
            Ok((n.trim().to_string(), r.trim().to_string()))
        }
        _ => Err(format!(
            "found `{s}`, expected NAME:ROLE (e.g. `Alice Wang:exercise lead`)"
        )),
    }
}

fn parse_level(s: &str) -> Result<Level, String> {
    s.parse()
}
