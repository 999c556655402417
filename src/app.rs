//! The commands behind the CLI. `main.rs` only parses arguments and exits with the
//! code returned here.
//!
//! Exit codes: 0 passed · 1 drill failed · 2 invalid scenario or usage · 3 a fault
//! could not be injected (or its target is locked by another drill) · 4 recovery
//! incomplete: something may be left behind · 5 the drill ran but its reports could
//! not be written (4 wins over 5; 5 wins over 0, 1 and 3).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cli::{Cli, Command, LogFormat, PlanFormat, SchemaFormat};
use crate::engine::{Control, Engine, RunOptions};
use crate::report::{self, Format};
use crate::scenario::{self, Drill, LoadError};

/// `println!` that never panics: a closed pipe (`firedrill plan x | head`) must not
/// crash the engine, least of all in the middle of a recovery.
macro_rules! outln {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `eprintln!` that never panics.
macro_rules! errln {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_INVALID: i32 = 2;
pub const EXIT_INJECTION: i32 = 3;
pub const EXIT_RECOVERY_INCOMPLETE: i32 = 4;
/// The drill ran but its reports could not be written: the evidence is missing.
pub const EXIT_REPORTS_MISSING: i32 = 5;

/// Runs a parsed command line; returns the process exit code.
pub fn main(cli: Cli) -> i32 {
    init_logging(cli.log_format, cli.verbose);
    match cli.command {
        Command::Schema(a) => {
            let text = match a.format {
                SchemaFormat::Json => schema_json() + "\n",
                SchemaFormat::Markdown => crate::scenario::reference_markdown(),
            };
            // `firedrill schema | head` closes the pipe early; that is not an error
            // (println! would panic on it).
            match std::io::stdout().lock().write_all(text.as_bytes()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    errln!("error: cannot write the schema: {e}");
                    EXIT_INVALID
                }
                _ => EXIT_OK,
            }
        }
        Command::Validate(a) => validate(&a.scenarios, &a.var_files, &a.vars),
        Command::Plan(a) => match load(&a.scenario) {
            Ok(d) => print_plan(&d, a.level, a.format),
            Err(code) => code,
        },
        Command::Run(a) => {
            set_junit(&a.junit);
            let drill = match load(&a.scenario) {
                Ok(d) => d,
                Err(code) => return code,
            };
            if a.dry_run {
                return print_plan(&drill, a.level, PlanFormat::Text);
            }
            let opts = RunOptions {
                level: a.level,
                state_dir: a.state_dir.unwrap_or_else(crate::engine::default_state_dir),
                lock_dir: a.lock_dir.unwrap_or_else(crate::engine::default_lock_dir),
                run_id: a.run_id,
                progress: cli.log_format == LogFormat::Text,
                report_dir: None,
                rehearse: a.rehearse,
            };
            // A signing key that cannot be read is a usage error, found before anything
            // is injected (not after the drill, when its evidence could not be signed).
            let key = a.sign_key.as_deref();
            let sign_key = match key.map(report::integrity::keys::read_signing_key) {
                None => None,
                Some(Ok(k)) => Some(k),
                Some(Err(e)) => {
                    errln!("error: --sign-key {e}; nothing was injected");
                    return EXIT_INVALID;
                }
            };
            runtime().block_on(run_drill(
                drill,
                opts,
                &a.report_dir,
                a.template_dir.as_deref(),
                &a.participants,
                sign_key.as_ref(),
            ))
        }
        Command::Doctor(a) => {
            let drill = match load(&a.scenario) {
                Ok(d) => d,
                Err(code) => return code,
            };
            let state = a.state_dir.unwrap_or_else(crate::engine::default_state_dir);
            let locks = a.lock_dir.unwrap_or_else(crate::engine::default_lock_dir);
            let findings = runtime().block_on(crate::engine::doctor::examine(
                &drill,
                a.level,
                &state,
                &locks,
                &a.report_dir,
            ));
            print_doctor(&drill, &findings)
        }
        Command::Recover(a) => {
            let state = a.state_dir.unwrap_or_else(crate::engine::default_state_dir);
            runtime().block_on(recover(
                &state,
                a.which.run.as_deref(),
                a.force,
                &a.report_dir,
            ))
        }
        Command::Report(a) => {
            set_junit(&a.junit);
            rerender(
                &a.journal,
                a.format,
                a.output.as_deref(),
                a.template_dir.as_deref(),
            )
        }
        Command::Verify(a) => verify(&a.dir, a.pubkey.as_deref()),
        Command::History(a) => match report::history::collect(&a.report_dir) {
            Ok(h) => {
                let _ = std::io::stdout()
                    .lock()
                    .write_all(report::history::text(&h).as_bytes());
                if a.write {
                    match report::history::write_index(&a.report_dir) {
                        Ok(files) => {
                            for f in files {
                                outln!("wrote {}", f.display());
                            }
                        }
                        Err(e) => {
                            errln!("error: cannot write the history index: {e}");
                            return EXIT_INVALID;
                        }
                    }
                }
                EXIT_OK
            }
            Err(e) => {
                errln!("error: {e}");
                EXIT_INVALID
            }
        },
        Command::Keygen(a) => match report::integrity::keys::keygen(&a.file) {
            Ok((pub_path, _)) => {
                outln!(
                    "private key: {} (mode 0600; keep it secret)",
                    a.file.display()
                );
                outln!("public key:  {}", pub_path.display());
                EXIT_OK
            }
            Err(e) => {
                errln!("error: {e}");
                EXIT_INVALID
            }
        },
        Command::Deadman(a) => {
            let procs: Vec<(u32, u64)> = a
                .procs
                .iter()
                .filter_map(|p| {
                    let (pid, start) = p.split_once(':')?;
                    Some((pid.parse().ok()?, start.parse().ok()?))
                })
                .collect();
            let _ = &a.tag; // only there so a revert can find this process by its command line
            if let Some(undo) = &a.scale_undo {
                return crate::fault::scale::deadman_main(
                    std::time::Duration::from_millis(a.ttl_ms),
                    undo,
                );
            }
            crate::fault::process_kill::deadman_main(
                std::time::Duration::from_millis(a.ttl_ms),
                &procs,
                &a.thaw_cgroups,
            );
            EXIT_OK
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The JSON Schema of scenario files (see `scenario::schema`).
pub fn schema_json() -> String {
    crate::scenario::schema_json()
}

fn load(args: &crate::cli::ScenarioArgs) -> Result<Drill, i32> {
    let (overrides, file_problems) = overrides(&args.var_files, &args.vars)?;
    match with_var_file_problems(
        scenario::load_file(&args.scenario, &overrides),
        file_problems,
    ) {
        Ok(d) => {
            crate::secrets::register(d.vars.secret_values());
            Ok(d)
        }
        Err(e) => {
            print_load_error(&e);
            Err(EXIT_INVALID)
        }
    }
}

/// `--var-file`s then `--var`s, as the loader takes them, with the var files'
/// problems (reported with the scenario's, in one run).
fn overrides(
    files: &[PathBuf],
    vars: &[(String, String)],
) -> Result<(Vec<scenario::Override>, Vec<scenario::Diagnostic>), i32> {
    scenario::var_file::overrides(files, vars).map_err(|e| {
        print_load_error(&e);
        EXIT_INVALID
    })
}

/// A scenario that loaded is still refused when a var file had problems; a scenario
/// that did not gets the var files' problems listed first.
fn with_var_file_problems(
    loaded: Result<Drill, LoadError>,
    mut problems: Vec<scenario::Diagnostic>,
) -> Result<Drill, LoadError> {
    if problems.is_empty() {
        return loaded;
    }
    match loaded {
        Ok(_) => Err(LoadError::Invalid(problems)),
        Err(LoadError::Invalid(more)) => {
            problems.extend(more);
            Err(LoadError::Invalid(problems))
        }
        Err(other) => Err(other),
    }
}

fn print_load_error(e: &LoadError) {
    let mut err = std::io::stderr().lock();
    match e {
        LoadError::Io { .. } | LoadError::Refused { .. } => {
            let _ = writeln!(err, "error: {e}");
        }
        LoadError::Invalid(diags) => {
            for d in diags {
                let _ = writeln!(err, "error: {d}");
            }
            let _ = writeln!(err, "{} problem(s); nothing was run", diags.len());
        }
    }
}

fn validate(paths: &[PathBuf], files: &[PathBuf], vars: &[(String, String)]) -> i32 {
    let (overrides, file_problems) = match overrides(files, vars) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let mut code = EXIT_OK;
    for p in paths {
        match with_var_file_problems(scenario::load_file(p, &overrides), file_problems.clone()) {
            Ok(d) => outln!(
                "{}: ok ({} fault(s), {} verification(s))",
                p.display(),
                d.faults.len(),
                d.scenario.verifications.len()
            ),
            Err(e) => {
                print_load_error(&e);
                code = EXIT_INVALID;
            }
        }
    }
    code
}

fn print_plan(drill: &Drill, level: scenario::Level, format: PlanFormat) -> i32 {
    let steps = crate::engine::plan::plan(drill, level);
    match format {
        PlanFormat::Json => {
            // Each step as serialised, and under a cluster fault the pods it would
            // act on now (`matching_pods`) or why they cannot be listed
            // (`matching_pods_error`), as the text plan shows them.
            let steps: Vec<serde_json::Value> = steps
                .iter()
                .map(|s| {
                    let mut v = serde_json::to_value(s).expect("plan serialises");
                    if s.phase == "fault" {
                        match matching(drill, &s.name) {
                            Some(Ok(pods)) => {
                                let pods: Vec<String> = pods
                                    .iter()
                                    .map(|p| crate::secrets::redact(p).into_owned())
                                    .collect();
                                v["matching_pods"] = serde_json::json!(pods);
                            }
                            Some(Err(e)) => {
                                v["matching_pods_error"] =
                                    serde_json::json!(crate::secrets::redact(&e));
                            }
                            None => {}
                        }
                    }
                    v
                })
                .collect();
            outln!(
                "{}",
                serde_json::to_string_pretty(&steps).expect("plan serialises")
            )
        }
        PlanFormat::Text => {
            outln!(
                "plan for `{}` at level {level} (nothing is run):",
                crate::secrets::redact(&drill.scenario.metadata.name)
            );
            for (i, s) in steps.iter().enumerate() {
                let mark = if s.runs { " " } else { "-" };
                outln!(
                    "{mark}{:>3}. {:<13} {}: {}",
                    i + 1,
                    s.phase,
                    s.name,
                    s.description
                );
                if s.phase == "fault" {
                    print_matching(drill, &s.name);
                }
            }
        }
    }
    EXIT_OK
}

/// The pods fault step `step` would act on right now, when it acts on a cluster (a
/// read of the cluster; nothing is changed).
fn matching(drill: &Drill, step: &str) -> Option<Result<Vec<String>, String>> {
    let f = drill.faults.iter().find(|f| f.step.name == step)?;
    if !f.spec.acts_on_cluster() {
        return None;
    }
    runtime().block_on(f.spec.matching_now(&f.target))
}

/// Under a `pod_kill` step of the text plan: the pods its selector matches right now.
fn print_matching(drill: &Drill, step: &str) {
    match matching(drill, step) {
        None => {}
        Some(Ok(pods)) if pods.is_empty() => outln!("        matches no pod right now"),
        Some(Ok(pods)) => {
            outln!("        matches {} pod(s) right now:", pods.len());
            for p in pods {
                outln!("          - {}", crate::secrets::redact(&p));
            }
        }
        Some(Err(e)) => outln!(
            "        cannot list the matching pods: {}",
            crate::secrets::redact(&e)
        ),
    }
}

async fn run_drill(
    drill: Drill,
    mut opts: RunOptions,
    report_dir: &Path,
    template_dir: Option<&Path>,
    participants: &[(String, String)],
    sign_key: Option<&ed25519_dalek::SigningKey>,
) -> i32 {
    // The evidence must have somewhere to go before anything is injected: templates
    // parse, and the run's report directory exists and takes a fsync'd write.
    if let Err(e) = report::check_templates(template_dir) {
        errln!("error: {e}; nothing was injected");
        return EXIT_INVALID;
    }
    let dir = match report::create_run_dir(
        report_dir,
        &drill.scenario.metadata.name,
        &crate::engine::ledger::now_rfc3339(),
    ) {
        Ok(d) => d,
        Err(e) => {
            errln!("error: cannot write reports: {e}; nothing was injected");
            return EXIT_INVALID;
        }
    };
    // Recorded in the ledger: a killed run's record is written here by `recover`.
    // Absolute, as `recover` may run from another directory.
    opts.report_dir = Some(std::path::absolute(&dir.path).unwrap_or_else(|_| dir.path.clone()));
    let drill = Arc::new(drill);
    let engine = match Engine::prepare(drill.clone(), opts) {
        Ok(e) => e,
        Err(e) => {
            // Refused before it started: no report directory left behind.
            dir.discard();
            errln!("error: {e}; nothing was injected");
            // A reused or malformed run id is a usage error; a locked target or a
            // ledger that cannot be written is the target's or the machine's.
            return if e.is_usage() {
                EXIT_INVALID
            } else {
                EXIT_INJECTION
            };
        }
    };
    let control = Control::default();
    let signals = tokio::spawn(watch_signals(control.clone()));
    let run_id = engine.run_id().to_string();
    let ledger = engine.ledger_path();
    let runtime = engine.runtime();
    let result = tokio::spawn(engine.run(control.clone())).await;
    signals.abort();
    let mut record = match result {
        Ok(r) => r,
        Err(e) => {
            // No record, so no reports: no empty report directory either.
            dir.discard();
            // A bug in the engine must not leave a fault behind: replay the ledger.
            errln!(
                "error: the engine failed ({e}); reverting every fault of run {run_id} from its ledger"
            );
            let r = crate::engine::recover::recover_ledger(&run_id, &ledger, true, Some(&runtime))
                .await;
            for line in &r.reverted {
                errln!("reverted: {line}");
            }
            for line in &r.failed {
                errln!("REVERT FAILED: {line}");
            }
            for line in &r.unreadable {
                errln!("UNREADABLE: {line}");
            }
            return if r.complete() {
                EXIT_FAILED
            } else {
                EXIT_RECOVERY_INCOMPLETE
            };
        }
    };
    // The people named on the command line join the scenario's participants.
    record
        .exercise
        .participants
        .extend(
            participants
                .iter()
                .map(|(n, r)| crate::model::ParticipantRecord {
                    name: crate::secrets::redact(n).into_owned(),
                    role: crate::secrets::redact(r).into_owned(),
                    source: "command line".into(),
                }),
        );
    let written = report::write_reports(&record, &dir.path, template_dir).and_then(|mut files| {
        if let Some(key) = sign_key {
            files.push(report::integrity::sign(&dir.path, key)?);
        }
        Ok(files)
    });
    match written {
        Ok(files) => {
            print_summary(&record, record.outcome.exit_code);
            outln!("reports:");
            for f in files {
                outln!("  {}", f.display());
            }
            // The history across runs is derived from the journals: failing to
            // rebuild it is reported, never the drill's result.
            match report::history::write_index(report_dir) {
                Ok(files) => outln!("history: {}", files[0].display()),
                Err(e) => errln!("warning: cannot rebuild the history index: {e}"),
            }
            record.outcome.exit_code
        }
        Err(e) => {
            // Never 0 without the evidence; a recovery that is incomplete stays the
            // loudest code.
            let code = if record.outcome.exit_code == EXIT_RECOVERY_INCOMPLETE {
                EXIT_RECOVERY_INCOMPLETE
            } else {
                EXIT_REPORTS_MISSING
            };
            print_summary(&record, code);
            errln!(
                "error: cannot write reports: {e}; the evidence of run {run_id} is missing (its ledger: {})",
                record.ledger
            );
            code
        }
    }
}

fn set_junit(a: &crate::cli::JunitArgs) {
    report::render::set_non_critical_as_failure(
        a.junit_non_critical == crate::cli::JunitNonCritical::Failure,
    );
}

/// One line per check, then the count; exit 1 when a check failed.
fn print_doctor(drill: &Drill, findings: &[crate::engine::doctor::Finding]) -> i32 {
    use crate::engine::doctor::Verdict;
    outln!(
        "doctor for `{}` (nothing is injected):",
        crate::secrets::redact(&drill.scenario.metadata.name)
    );
    for f in findings {
        outln!(
            "{:<4} {}: {}",
            f.verdict.as_str(),
            f.subject,
            crate::secrets::redact(&f.message)
        );
    }
    let count = |v| findings.iter().filter(|f| f.verdict == v).count();
    let failed = count(Verdict::Fail);
    outln!(
        "{} check(s): {} ok, {} warning(s), {failed} failed",
        findings.len(),
        count(Verdict::Ok),
        count(Verdict::Warn)
    );
    if failed > 0 { EXIT_FAILED } else { EXIT_OK }
}

/// The end of a run on stdout: the outcome (printed here only, not as a progress line
/// too), then every identified improvement by name.
fn print_summary(record: &crate::model::RunRecord, exit_code: i32) {
    outln!(
        "{} (exit code {exit_code}): {}",
        record.outcome.status.label(),
        record.outcome.reason
    );
    if !record.improvements.is_empty() {
        outln!("{} improvement(s) identified:", record.improvements.len());
        for i in &record.improvements {
            outln!("  [{}] {} ({})", i.severity.as_str(), i.title, i.rule);
        }
    }
}

/// First SIGINT/SIGTERM: abort and recover. Second: skip recovery's waits.
async fn watch_signals(control: Control) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    let mut count = 0;
    loop {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        count += 1;
        if count == 1 {
            errln!(
                "\nsignal received: stopping the drill and reverting every fault (signal again to skip waits)"
            );
            control.abort.cancel();
        } else {
            errln!("\nsecond signal: skipping waits; faults are still being reverted");
            control.hurry.cancel();
        }
    }
}

async fn recover(state: &Path, run: Option<&str>, force: bool, report_dir: &Path) -> i32 {
    let results = crate::engine::recover::recover(state, run, force, None).await;
    // The record of each run whose engine died: written whatever the reverts did,
    // and never changing the exit code (that says whether anything is left behind).
    for r in &results {
        match crate::engine::record::write_interrupted(state, r, report_dir) {
            Ok(Some(files)) => {
                outln!("run {}: interrupted; its record:", r.run_id);
                for f in &files {
                    outln!("  {}", f.display());
                }
                // The interrupted run joins the history of its reports root.
                if let Some(root) = files.first().and_then(|f| f.parent()?.parent())
                    && let Err(e) = report::history::write_index(root)
                {
                    errln!("warning: cannot rebuild the history index: {e}");
                }
            }
            Ok(None) => {}
            Err(e) => errln!("error: run {}: cannot write its record: {e}", r.run_id),
        }
    }
    if let Some(r) = run
        && results.is_empty()
    {
        errln!("error: no ledger for run `{r}` under {}", state.display());
        return EXIT_INVALID;
    }
    let mut anything = false;
    let (mut skipped, mut failed, mut unreadable) = (0, 0, 0);
    for r in &results {
        if let Some(why) = &r.skipped {
            outln!("run {}: skipped: {why}", r.run_id);
            skipped += 1;
            anything = true;
        }
        for l in &r.reverted {
            outln!("run {}: reverted {l}", r.run_id);
            anything = true;
        }
        for l in &r.failed {
            outln!("run {}: FAILED {l}", r.run_id);
            failed += 1;
            anything = true;
        }
        for l in &r.unreadable {
            outln!("run {}: UNREADABLE {l}", r.run_id);
            unreadable += 1;
            anything = true;
        }
    }
    if !anything {
        outln!("nothing to recover under {}", state.display());
    }
    if skipped + failed + unreadable == 0 {
        return EXIT_OK;
    }
    let mut why = Vec::new();
    if failed > 0 {
        why.push(format!("{failed} fault(s) could not be reverted"));
    }
    if unreadable > 0 {
        why.push(format!(
            "{unreadable} ledger record(s) could not be read (each may be a fault still in effect: check it by hand)"
        ));
    }
    if skipped > 0 {
        why.push(format!("{skipped} run(s) skipped"));
    }
    errln!("error: recovery incomplete: {}", why.join(", "));
    EXIT_RECOVERY_INCOMPLETE
}

/// `firedrill verify`: 0 when the directory is exactly as sealed (and signed by
/// `pubkey`, if given); 1 naming each file altered, missing or added, or a bad or
/// missing signature; 2 when it cannot be checked (no directory, unreadable key).
fn verify(dir: &Path, pubkey: Option<&Path>) -> i32 {
    use report::integrity::{self, MANIFEST, SIGNATURE, SignatureCheck};
    if !dir.is_dir() {
        errln!(
            "error: {}: not a directory, expected a report directory",
            dir.display()
        );
        return EXIT_INVALID;
    }
    let key = match pubkey.map(integrity::keys::read_verifying_key) {
        None => None,
        Some(Ok(k)) => Some(k),
        Some(Err(e)) => {
            errln!("error: --pubkey {e}");
            return EXIT_INVALID;
        }
    };
    let v = match integrity::verify(dir, key.as_ref()) {
        Ok(v) => v,
        Err(e) => {
            errln!("error: {e}");
            return EXIT_FAILED;
        }
    };
    for (name, expected, found) in &v.altered {
        outln!("ALTERED: {name} (sha256 {found}, {MANIFEST} says {expected})");
    }
    for name in &v.missing {
        outln!("MISSING: {name} (listed in {MANIFEST})");
    }
    for name in &v.extra {
        outln!("EXTRA: {name} (not in {MANIFEST})");
    }
    match &v.signature {
        SignatureCheck::Valid => outln!("signature: valid ({SIGNATURE}, by the given public key)"),
        SignatureCheck::Unsigned => {
            outln!("signature: none ({SIGNATURE} absent; no --pubkey given)")
        }
        SignatureCheck::NotChecked => {
            outln!("signature: present but not checked (give --pubkey FILE to check it)")
        }
        SignatureCheck::Missing => {
            outln!("SIGNATURE MISSING: no {SIGNATURE}, but --pubkey was given")
        }
        SignatureCheck::Invalid(why) => outln!("SIGNATURE INVALID: {why}"),
    }
    if v.ok() {
        outln!(
            "ok: {} file(s) of {} match {MANIFEST}",
            v.intact,
            dir.display()
        );
        EXIT_OK
    } else {
        outln!(
            "FAILED: {} altered, {} missing, {} extra file(s); {} intact",
            v.altered.len(),
            v.missing.len(),
            v.extra.len(),
            v.intact
        );
        EXIT_FAILED
    }
}

fn rerender(
    journal: &Path,
    format: Format,
    output: Option<&Path>,
    template_dir: Option<&Path>,
) -> i32 {
    let text = match std::fs::read_to_string(journal) {
        Ok(t) => t,
        Err(e) => {
            errln!("error: {}: {e}", journal.display());
            return EXIT_INVALID;
        }
    };
    let record: crate::model::RunRecord = match serde_json::from_str(&text) {
        Ok(r) => r,
        Err(e) => {
            errln!(
                "error: {}:{}:{}: not a firedrill journal: {e}",
                journal.display(),
                e.line(),
                e.column()
            );
            return EXIT_INVALID;
        }
    };
    match report::render(&record, format, template_dir) {
        Ok(s) => match output {
            Some(p) => match report::write_atomic(p, s.as_bytes()) {
                Ok(()) => EXIT_OK,
                Err(e) => {
                    errln!("error: {e}");
                    EXIT_INVALID
                }
            },
            None => {
                let _ = std::io::stdout().lock().write_all(s.as_bytes());
                EXIT_OK
            }
        },
        Err(e) => {
            errln!("error: {e}");
            EXIT_INVALID
        }
    }
}

// ── logging, with secrets redacted ────────────────────────────────────────────

/// Writes log lines to stderr with every secret value replaced by `***`.
struct RedactingStderr;

impl Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr()
            .write_all(crate::secrets::redact(&text).as_bytes())
            .map(|_| buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

fn init_logging(format: LogFormat, verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| RedactingStderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
}
