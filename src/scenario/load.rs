//! Loading a scenario: read, parse, substitute `{{vars}}`, deserialize, validate.
//!
//! Every problem is reported as a [`Diagnostic`] with `file:line:column`, the dotted
//! field path, what was found and what was expected. Validation collects all the
//! problems it can find in one pass, so an author fixes a file in one go.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde_yaml::{Mapping, Value};
use sha2::{Digest, Sha256};

use super::span::SpanIndex;
use super::vars::{self, Resolved, VarValue};
use super::{API_VERSION, FaultStep, Scenario};
use crate::fault::FaultSpec;
use crate::target::Target;

/// One problem in a scenario file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Dotted path of the field (`faults[0].with.signal`); empty for the whole document.
    pub path: String,
    /// What was found and what was expected.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "(document)"
        } else {
            &self.path
        };
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, path, self.message
        )
    }
}

/// Why a scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{file}: cannot read scenario: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    #[error("{}", .0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Diagnostic>),
}

impl LoadError {
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            LoadError::Invalid(d) => d,
            LoadError::Io { .. } => &[],
        }
    }
}

/// A fault step with its parameters decoded into the closed enum of kinds.
#[derive(Clone, Debug)]
pub struct ResolvedFault {
    /// Position in `faults:`.
    pub index: usize,
    pub step: FaultStep,
    pub spec: FaultSpec,
    pub target: Target,
}

/// A loaded, substituted and validated scenario: everything the engine needs.
#[derive(Clone, Debug)]
pub struct Drill {
    pub file: PathBuf,
    /// SHA-256 of the file bytes, hex.
    pub sha256: String,
    pub scenario: Scenario,
    pub faults: Vec<ResolvedFault>,
    /// Resolved targets by name, `local` included.
    pub targets: BTreeMap<String, Target>,
    pub vars: Resolved,
}

/// Reads and loads a scenario file. `overrides` are `--var name=value` pairs.
pub fn load_file(path: &Path, overrides: &[(String, String)]) -> Result<Drill, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        file: path.display().to_string(),
        source,
    })?;
    load_str(&text, path, overrides)
}

/// Loads a scenario from text; `path` is used for messages and the journal.
pub fn load_str(
    text: &str,
    path: &Path,
    overrides: &[(String, String)],
) -> Result<Drill, LoadError> {
    let file = path.display().to_string();
    let index = SpanIndex::build(text);
    let diag = Diags {
        file: &file,
        index: &index,
    };

    let mut doc: Value = serde_yaml::from_str(text).map_err(|e| {
        let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
        LoadError::Invalid(vec![Diagnostic {
            file: file.clone(),
            line,
            column,
            path: String::new(),
            message: format!("not valid YAML: {}", strip_location(&e.to_string())),
        }])
    })?;
    if !matches!(doc, Value::Mapping(_)) {
        return Err(LoadError::Invalid(vec![diag.at(
            "",
            format!(
                "found {}, expected a scenario (a map with apiVersion, kind, metadata, faults)",
                vars::kind_of(&doc)
            ),
        )]));
    }

    // 1. Variables, before anything else: every other field may use them.
    let declared: BTreeMap<String, VarValue> = match doc.get("vars") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(v) => serde_path_to_error::deserialize(to_json(v))
            .map_err(|e| LoadError::Invalid(vec![diag.serde("vars", &e)]))?,
    };
    let resolved = resolve_vars(&declared, overrides, &diag)?;

    // 2. Substitute everywhere except in `vars:` itself.
    let mut unresolved = Vec::new();
    if let Value::Mapping(m) = &mut doc {
        for (k, v) in m.iter_mut() {
            let key = k.as_str().unwrap_or_default().to_string();
            if key != "vars" {
                vars::substitute(v, &resolved, &key, &mut unresolved);
            }
        }
    }
    if !unresolved.is_empty() {
        return Err(LoadError::Invalid(
            unresolved
                .iter()
                .map(|u| {
                    let known = resolved
                        .values
                        .keys()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(", ");
                    diag.value_at(
                        &u.path,
                        format!(
                            "found `{{{{{}}}}}`, expected one of the declared vars ({})",
                            u.name,
                            if known.is_empty() {
                                "none declared"
                            } else {
                                &known
                            }
                        ),
                    )
                })
                .collect(),
        ));
    }

    // 3. Typed deserialization; unknown keys are errors.
    let scenario: Scenario = serde_path_to_error::deserialize(to_json(&doc))
        .map_err(|e| LoadError::Invalid(vec![diag.serde("", &e)]))?;

    // 4. Fault parameters, into the closed enum of kinds.
    let mut errors = Vec::new();
    let mut faults = Vec::new();
    let targets = resolve_targets(&scenario, &diag, &mut errors);
    for (i, step) in scenario.faults.iter().enumerate() {
        let base = format!("faults[{i}]");
        let mut m = Mapping::new();
        m.insert("kind".into(), Value::String(step.kind.clone()));
        let with = if step.with.is_null() {
            Value::Mapping(Mapping::new())
        } else {
            step.with.clone()
        };
        m.insert("with".into(), with);
        match serde_path_to_error::deserialize::<_, FaultSpec>(to_json(&Value::Mapping(m))) {
            Ok(spec) => {
                let Some(target) = targets.get(&step.target).cloned() else {
                    errors.push(undefined_target(
                        &diag,
                        &format!("{base}.target"),
                        &step.target,
                        &targets,
                    ));
                    continue;
                };
                for (p, msg) in spec.validate(&target) {
                    errors.push(diag.at(&join(&base, &p), msg));
                }
                faults.push(ResolvedFault {
                    index: i,
                    step: step.clone(),
                    spec,
                    target,
                });
            }
            Err(e) => errors.push(diag.serde(&base, &e)),
        }
    }

    // 5. Cross-field validation.
    validate(&scenario, &targets, &diag, &mut errors);
    if !errors.is_empty() {
        errors.sort_by_key(|d| (d.line, d.column));
        errors.dedup();
        return Err(LoadError::Invalid(errors));
    }

    Ok(Drill {
        file: path.to_path_buf(),
        sha256: hex(&Sha256::digest(text.as_bytes())),
        scenario,
        faults,
        targets,
        vars: resolved,
    })
}

/// serde_yaml's `Value` only deserializes enums written as YAML tags (`!http`), not as
/// the single-key maps scenarios use (`{ http: … }`); serde_json's `Value` takes both
/// maps and strings, so typed deserialization goes through it. Non-string keys become
/// their YAML text.
fn to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                J::from(i)
            } else if let Some(u) = n.as_u64() {
                J::from(u)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(J::Null, J::Number)
            }
        }
        Value::String(s) => J::String(s.clone()),
        Value::Sequence(seq) => J::Array(seq.iter().map(to_json).collect()),
        Value::Mapping(m) => J::Object(
            m.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Value::String(s) => s.clone(),
                        other => serde_yaml::to_string(other)
                            .unwrap_or_default()
                            .trim()
                            .to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Value::Tagged(t) => to_json(&t.value),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn join(base: &str, rel: &str) -> String {
    match (base.is_empty(), rel.is_empty()) {
        (_, true) => base.to_string(),
        (true, false) => rel.to_string(),
        (false, false) if rel.starts_with('[') => format!("{base}{rel}"),
        _ => format!("{base}.{rel}"),
    }
}

/// serde_yaml appends " at line L column C" to some messages; we print positions ourselves.
fn strip_location(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

struct Diags<'a> {
    file: &'a str,
    index: &'a SpanIndex,
}

impl Diags<'_> {
    fn make(&self, path: &str, pos: Option<super::span::Pos>, message: String) -> Diagnostic {
        let pos = pos.unwrap_or(super::span::Pos { line: 1, column: 1 });
        Diagnostic {
            file: self.file.to_string(),
            line: pos.line,
            column: pos.column,
            path: path.to_string(),
            message,
        }
    }
    /// At the key of `path` (where "this field" starts).
    fn at(&self, path: &str, message: String) -> Diagnostic {
        self.make(path, self.index.locate(path), message)
    }
    /// At the value of `path` (where "this value" starts).
    fn value_at(&self, path: &str, message: String) -> Diagnostic {
        self.make(path, self.index.locate_value(path), message)
    }
    /// A serde error with its path, prefixed by `base`.
    fn serde(&self, base: &str, e: &serde_path_to_error::Error<serde_json::Error>) -> Diagnostic {
        let inner = strip_location(&e.inner().to_string());
        let rel = e.path().to_string();
        let mut path = if rel == "." {
            base.to_string()
        } else {
            join(base, &rel)
        };
        let mut message = inner.clone();
        // serde reports an unknown field at its parent's path; point at the key itself.
        if let Some(rest) = inner.strip_prefix("unknown field `") {
            if let Some(end) = rest.find('`') {
                path = join(&path, &rest[..end]);
                message = format!(
                    "found unknown field `{}`, expected {}",
                    &rest[..end],
                    expected_fields(rest)
                );
                return self.at(&path, message);
            }
        }
        if let Some(rest) = inner.strip_prefix("missing field `") {
            if let Some(end) = rest.find('`') {
                message = format!("missing required field `{}`", &rest[..end]);
                return self.at(&path, message);
            }
        }
        if let Some(rest) = inner.strip_prefix("unknown variant `") {
            if let Some(end) = rest.find('`') {
                // The enum tag of a fault is `kind`; for other enums the value itself.
                message = format!(
                    "found `{}`, {}",
                    &rest[..end],
                    rest[end + 1..].trim_start_matches(", ")
                );
            }
        }
        if message.starts_with("invalid type: ") {
            message = format!("found {}", &message["invalid type: ".len()..]);
        }
        if message.starts_with("invalid value: ") {
            message = format!("found {}", &message["invalid value: ".len()..]);
        }
        let _ = &mut path;
        self.value_at(&path, message)
    }
}

fn expected_fields(rest: &str) -> String {
    match rest.find("expected ") {
        Some(i) => rest[i + "expected ".len()..].to_string(),
        None => "no other fields".into(),
    }
}

fn resolve_vars(
    declared: &BTreeMap<String, VarValue>,
    overrides: &[(String, String)],
    diag: &Diags<'_>,
) -> Result<Resolved, LoadError> {
    let mut r = Resolved::default();
    let mut errors = Vec::new();
    for (name, v) in declared {
        match v {
            VarValue::Literal(s) => {
                r.values.insert(name.clone(), s.clone());
            }
            VarValue::Env(e) => {
                match std::env::var(&e.env).ok().or_else(|| e.default.clone()) {
                    Some(val) => {
                        r.values.insert(name.clone(), val);
                    }
                    None => errors.push(diag.value_at(
                        &format!("vars.{name}"),
                        format!("environment variable `{}` is not set and no `default` is given; expected it to be set", e.env),
                    )),
                }
                r.secret.insert(name.clone(), e.secret);
            }
        }
    }
    for (k, v) in overrides {
        if !declared.contains_key(k) {
            let known = declared
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            errors.push(Diagnostic {
                file: "--var".into(),
                line: 0,
                column: 0,
                path: k.clone(),
                message: format!(
                    "found `--var {k}=…` but `{k}` is not declared under `vars:`; expected one of: {}",
                    if known.is_empty() { "(none declared)" } else { &known }
                ),
            });
            continue;
        }
        r.values.insert(k.clone(), v.clone());
    }
    if errors.is_empty() {
        Ok(r)
    } else {
        Err(LoadError::Invalid(errors))
    }
}

fn resolve_targets(
    scenario: &Scenario,
    diag: &Diags<'_>,
    errors: &mut Vec<Diagnostic>,
) -> BTreeMap<String, Target> {
    let mut targets = BTreeMap::new();
    targets.insert("local".to_string(), Target::Local);
    for (name, spec) in &scenario.targets {
        if name == "local" {
            errors.push(diag.at(
                "targets.local",
                "found a definition of `local`, expected another name: `local` is built in".into(),
            ));
            continue;
        }
        targets.insert(name.clone(), Target::from_spec(spec));
    }
    targets
}

fn undefined_target(
    diag: &Diags<'_>,
    path: &str,
    name: &str,
    targets: &BTreeMap<String, Target>,
) -> Diagnostic {
    let known = targets
        .keys()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    diag.value_at(
        path,
        format!("found target `{name}`, expected one of the defined targets ({known})"),
    )
}

fn validate(
    scenario: &Scenario,
    targets: &BTreeMap<String, Target>,
    diag: &Diags<'_>,
    errors: &mut Vec<Diagnostic>,
) {
    if scenario.api_version != API_VERSION {
        errors.push(diag.value_at(
            "apiVersion",
            format!("found `{}`, expected `{API_VERSION}`", scenario.api_version),
        ));
    }
    let name = &scenario.metadata.name;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        errors.push(diag.value_at(
            "metadata.name",
            format!("found `{name}`, expected a non-empty name of letters, digits, `-`, `_` or `.` (it names report directories)"),
        ));
    }
    if scenario.faults.is_empty() {
        errors.push(diag.value_at(
            "faults",
            "found an empty fault list, expected at least one fault".into(),
        ));
    }
    if let Some(rto) = scenario.objectives.rto {
        if rto.0.is_zero() {
            errors.push(diag.value_at(
                "objectives.rto",
                "found `0s`, expected a positive duration".into(),
            ));
        }
    }
    if scenario.objectives.max_duration.0.is_zero() {
        errors.push(diag.value_at(
            "objectives.max_duration",
            "found `0s`, expected a positive duration".into(),
        ));
    }

    unique_names(
        "prechecks",
        scenario.prechecks.iter().map(|c| c.name.as_str()),
        diag,
        errors,
    );
    unique_names(
        "verifications",
        scenario.verifications.iter().map(|c| c.name.as_str()),
        diag,
        errors,
    );
    unique_names(
        "guards",
        scenario.guards.iter().map(|c| c.name.as_str()),
        diag,
        errors,
    );
    unique_names(
        "faults",
        scenario.faults.iter().map(|c| c.name.as_str()),
        diag,
        errors,
    );
    unique_names(
        "recovery",
        scenario.recovery.iter().map(|c| c.name.as_str()),
        diag,
        errors,
    );

    for (section, checks) in [
        ("prechecks", &scenario.prechecks),
        ("verifications", &scenario.verifications),
    ] {
        for (i, c) in checks.iter().enumerate() {
            let base = format!("{section}[{i}]");
            if c.within.is_some() && c.hold_for.is_some() {
                errors.push(diag.at(
                    &format!("{base}.for"),
                    "found both `within` and `for`, expected one of them: `within` waits until it holds, `for` requires it to hold throughout".into(),
                ));
            }
            if c.interval.0.is_zero() {
                errors.push(diag.value_at(
                    &format!("{base}.interval"),
                    "found `0s`, expected a positive poll interval".into(),
                ));
            }
            probe_checks(&base, &c.probe, &c.expect, targets, diag, errors);
        }
    }
    unique_names(
        "traffic",
        scenario.traffic.iter().map(|t| t.name.as_str()),
        diag,
        errors,
    );
    for (i, t) in scenario.traffic.iter().enumerate() {
        for (p, msg) in t.validate() {
            errors.push(diag.value_at(&format!("traffic[{i}].{p}"), msg));
        }
    }
    for (i, g) in scenario.guards.iter().enumerate() {
        let base = format!("guards[{i}]");
        if g.breach_after == 0 {
            errors.push(diag.value_at(
                &format!("{base}.breach_after"),
                "found 0, expected at least 1".into(),
            ));
        }
        if g.interval.0.is_zero() {
            errors.push(diag.value_at(
                &format!("{base}.interval"),
                "found `0s`, expected a positive poll interval".into(),
            ));
        }
        probe_checks(&base, &g.probe, &g.expect, targets, diag, errors);
    }
    for (i, r) in scenario.recovery.iter().enumerate() {
        if !targets.contains_key(&r.command.target) {
            errors.push(undefined_target(
                diag,
                &format!("recovery[{i}].command.target"),
                &r.command.target,
                targets,
            ));
        }
        if r.command.run.trim().is_empty() {
            errors.push(diag.value_at(
                &format!("recovery[{i}].command.run"),
                "found an empty command, expected a shell command line".into(),
            ));
        }
    }
}

fn probe_checks(
    base: &str,
    probe: &crate::probe::ProbeSpec,
    expect: &crate::probe::Expect,
    targets: &BTreeMap<String, Target>,
    diag: &Diags<'_>,
    errors: &mut Vec<Diagnostic>,
) {
    let pbase = format!("{base}.probe.{}", probe.kind());
    if let Some(t) = probe.target() {
        if !targets.contains_key(t) {
            errors.push(undefined_target(
                diag,
                &format!("{pbase}.target"),
                t,
                targets,
            ));
        }
    }
    for (p, msg) in probe.validate() {
        errors.push(diag.value_at(&join(&pbase, &p), msg));
    }
    for (p, msg) in expect.validate() {
        errors.push(diag.value_at(&join(&format!("{base}.expect"), &p), msg));
    }
}

fn unique_names<'a>(
    section: &str,
    names: impl Iterator<Item = &'a str>,
    diag: &Diags<'_>,
    errors: &mut Vec<Diagnostic>,
) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, n) in names.enumerate() {
        if let Some(first) = seen.get(n) {
            let first_pos = diag.index.locate_value(&format!("{section}[{first}].name"));
            errors.push(diag.value_at(
                &format!("{section}[{i}].name"),
                format!(
                    "found duplicate name `{n}` (first used at line {}), expected step names to be unique within `{section}`",
                    first_pos.map_or(0, |p| p.line)
                ),
            ));
        } else {
            seen.insert(n, i);
        }
    }
}
