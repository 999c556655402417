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
    /// Override a variable declared under `vars:` (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
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
    /// Use this run id instead of a generated one.
    #[arg(long, hide = true)]
    pub run_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Scenario files.
    #[arg(required = true)]
    pub scenarios: Vec<PathBuf>,
    /// Override a variable declared under `vars:` (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
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

fn parse_level(s: &str) -> Result<Level, String> {
    s.parse()
}
