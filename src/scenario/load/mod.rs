//! Loading a scenario: read, parse, substitute `{{vars}}`, deserialize, validate.
//!
//! Every problem is reported as a [`Diagnostic`] with `file:line:column`, the dotted
//! field path, what was found and what was expected. Validation collects all the
//! problems it can find in one pass, so an author fixes a file in one go.
//!
//! This file holds the entry points and the flow, step by step; each step lives in
//! its own module:
//! - [`limits`]: what is refused before any parser runs (size, type, nesting);
//! - [`substitute`]: vars, their values and their substitution;
//! - [`decode`]: typed decoding, one section and one step at a time;
//! - [`validate`]: the checks across fields, targets and fault parameters;
//! - [`diagnostics`]: where a problem is placed and how it is worded.

mod decode;
mod diagnostics;
mod limits;
mod substitute;
mod validate;
pub mod var_file;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_yaml::Value;
use sha2::{Digest, Sha256};

use super::span::{Pos, SpanIndex};
use super::vars::{self, Resolved};
use super::{FaultStep, Scenario};
use crate::fault::FaultSpec;
use crate::target::Target;
pub use diagnostics::Diagnostic;
use diagnostics::Diags;

/// Why a scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{file}: cannot read scenario: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    /// Not a regular file of a sane size: refused before it is read.
    #[error("{file}: cannot read scenario: {reason}")]
    Refused {
        file: String,
        reason: limits::Refusal,
    },
    #[error("{}", .0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Diagnostic>),
}

impl LoadError {
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            LoadError::Invalid(d) => d,
            LoadError::Io { .. } | LoadError::Refused { .. } => &[],
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
    /// The scenario file's text, as read (embedded in the journal).
    pub text: String,
    pub scenario: Scenario,
    pub faults: Vec<ResolvedFault>,
    /// Resolved targets by name, `local` included.
    pub targets: BTreeMap<String, Target>,
    pub vars: Resolved,
}

/// Reads and loads a scenario file. `overrides` are the `--var-file` values, then the
/// `--var name=value` pairs (see [`var_file::overrides`]); a later one wins.
///
/// Only a regular file of at most 1 MiB is read (see [`limits`]): a FIFO, a device
/// or a directory is refused by name before anything blocks or grows.
pub fn load_file(path: &Path, overrides: &[var_file::Override]) -> Result<Drill, LoadError> {
    let file = path.display().to_string();
    let text = limits::read(path).map_err(|e| match e {
        limits::ReadError::Refused(reason) => LoadError::Refused { file, reason },
        limits::ReadError::Io(source) => LoadError::Io { file, source },
    })?;
    load_str(&text, path, overrides)
}

/// Loads a scenario from text; `path` is used for messages and the journal.
///
/// Every problem is reported in one go, sorted by position: each section and each
/// step is decoded on its own (see [`decode`]) and the semantic checks run on what
/// decoded. Only a YAML syntax error, or input beyond the [`limits`], stops early.
pub fn load_str(
    text: &str,
    path: &Path,
    overrides: &[var_file::Override],
) -> Result<Drill, LoadError> {
    let file = path.display().to_string();
    if text.len() > limits::MAX_BYTES {
        return Err(LoadError::Refused {
            file,
            reason: limits::Refusal::TooLarge(text.len() as u64),
        });
    }
    // Before any YAML parser: both are slow on deep nesting.
    if let Some(deep) = limits::too_deep(text) {
        return Err(refused_at(
            file,
            deep.pos,
            deep.section,
            format!(
                "found collections nested {} levels deep, expected at most {}",
                deep.depth,
                limits::MAX_DEPTH
            ),
        ));
    }
    let index = SpanIndex::build(text);
    // Before serde_yaml and substitution, which would each copy the key into the
    // path of every node under it.
    if let Some(long) = index.long_key() {
        return Err(refused_at(
            file,
            long.pos,
            long.parent.clone(),
            format!(
                "found a key of {} characters, expected at most {}",
                long.chars,
                super::span::MAX_KEY_CHARS
            ),
        ));
    }
    let diag = Diags {
        file: &file,
        index: &index,
        text,
        secrets: None,
    };

    let mut doc: Value =
        serde_yaml::from_str(text).map_err(|e| LoadError::Invalid(vec![diag.yaml(&e)]))?;
    if !matches!(doc, Value::Mapping(_)) {
        return Err(LoadError::Invalid(vec![diag.at(
            "",
            format!(
                "found {}, expected a scenario (a map with apiVersion, kind, metadata, faults)",
                vars::kind_of(&doc)
            ),
        )]));
    }

    // 1. Variables, before anything else: every other field may use them. Each var
    // on its own, so one bad definition does not hide the others.
    let mut errors = Vec::new();
    let (declared, var_names) = substitute::decode_vars(doc.get("vars"), &diag, &mut errors);
    let resolved = substitute::resolve_vars(&declared, &var_names, overrides, &diag, &mut errors);
    // From here on every message is masked with the secret values; the few made
    // while resolving them are masked now.
    let redactor = crate::secrets::Redactor::new(resolved.secret_values());
    for e in &mut errors {
        e.message = redactor.redact(&e.message).into_owned();
    }
    let diag = Diags {
        secrets: Some(&redactor),
        ..diag
    };
    if let Some(d) = substitute::expansion_beyond_limit(text, &resolved, &diag) {
        // Substituting would build the oversized text: stop here.
        errors.push(d);
        return Err(invalid(errors));
    }

    // 2. Substitute everywhere except in `vars:` itself.
    let tainted = substitute::substitute(&mut doc, &resolved, &var_names, &diag, &mut errors);

    // 3. Typed deserialization; unknown keys are errors. It goes through JSON because
    // serde_yaml 0.9 decodes enums only from YAML tags (`!http`), not from the
    // one-key maps scenarios are written in (`probe: { http: ... }`).
    let json_doc = decode::to_json(&doc);
    let mut checks = Vec::new();
    let parsed = decode::scenario(&json_doc, &diag, &mut checks);

    // 4. Fault parameters, into the closed enum of kinds, against their targets.
    let targets = validate::resolve_targets(&parsed, &diag, &mut checks);
    let faults = validate::resolve_faults(&parsed, &targets, &diag, &mut checks);

    // 5. Cross-field validation, on whatever decoded.
    validate::validate(&parsed, &targets, &diag, &mut checks);
    checks.retain(|d| !tainted.contains(&d.path));
    errors.extend(checks);
    if !errors.is_empty() {
        return Err(invalid(errors));
    }
    let Some(scenario) = parsed.into_scenario(declared) else {
        // Every part that did not decode pushed a problem above.
        return Err(LoadError::Invalid(vec![diag.at(
            "",
            "found a part of the scenario that did not decode yet reported no problem (a firedrill bug), expected a scenario".into(),
        )]));
    };

    Ok(Drill {
        file: path.to_path_buf(),
        sha256: hex(&Sha256::digest(text.as_bytes())),
        text: text.to_string(),
        scenario,
        faults,
        targets: targets.resolved,
        vars: resolved,
    })
}

/// Every problem, in file order, each once.
fn invalid(errors: Vec<Diagnostic>) -> LoadError {
    LoadError::Invalid(diagnostics::in_file_order(errors))
}

/// Input refused at `pos` before serde_yaml ran (there is no [`Diags`] yet).
fn refused_at(file: String, pos: Pos, path: String, message: String) -> LoadError {
    LoadError::Invalid(vec![Diagnostic {
        file,
        line: pos.line,
        column: pos.column,
        path,
        message,
    }])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
apiVersion: firedrill/v1
kind: Scenario
metadata: { name: t }
vars:
  port: 8080
targets:
  appns: { netns: app }
prechecks:
  - name: up
    probe: { http: { url: \"http://127.0.0.1:{{port}}/health\" } }
  - name: tcp
    probe:
      tcp: { address: \"127.0.0.1:{{port}}\", target: appns }
faults:
  - name: kill
    kind: process_kill
    with: { name: relay }
";

    fn errors(text: &str, vars: &[(&str, &str)]) -> Vec<Diagnostic> {
        let vars: Vec<var_file::Override> = vars
            .iter()
            .map(|(k, v)| var_file::Override::command_line(*k, *v))
            .collect();
        match load_str(text, Path::new("s.yaml"), &vars) {
            Ok(_) => vec![],
            Err(e) => e.diagnostics().to_vec(),
        }
    }

    fn one(text: &str) -> String {
        let e = errors(text, &[]);
        assert_eq!(e.len(), 1, "{e:#?}");
        format!(
            "{}:{}: {}: {}",
            e[0].line, e[0].column, e[0].path, e[0].message
        )
    }

    #[test]
    fn probes_and_targets_written_as_one_key_maps_load() {
        // serde_yaml 0.9 cannot decode these enums from a Value; the loader must.
        let d = load_str(GOOD, Path::new("s.yaml"), &[]).unwrap();
        assert_eq!(d.scenario.prechecks[0].probe.kind(), "http");
        assert_eq!(d.scenario.prechecks[1].probe.target(), Some("appns"));
        assert_eq!(d.targets.len(), 2);
    }

    #[test]
    fn yaml_tags_are_accepted_for_enums_too() {
        let text = GOOD
            .replace("probe: { http: { url:", "probe: !http { url:")
            .replace("/health\" } }", "/health\" }");
        let d = load_str(&text, Path::new("s.yaml"), &[]).unwrap();
        assert_eq!(d.scenario.prechecks[0].probe.kind(), "http");
    }

    #[test]
    fn unknown_fields_are_reported_once_at_their_key() {
        let text = GOOD.replace("{ name: relay }", "{ name: relay, sigal: KILL }");
        assert_eq!(
            one(&text),
            "17:26: faults[0].with.sigal: found unknown field `sigal`, expected one of `pid`, `pidfile`, `name`, `pattern`, `cgroup`, `tree`, `count`, `all`, `signal`, `verify_timeout`"
        );
        let text = GOOD.replace("target: appns }", "target: appns, tries: 3 }");
        assert!(
            one(&text)
                .starts_with("13:60: prechecks[1].probe.tcp.tries: found unknown field `tries`")
        );
    }

    #[test]
    fn missing_fields_name_the_field_and_point_at_its_map() {
        let text = GOOD.replace("metadata: { name: t }", "metadata: { owner: me }");
        assert_eq!(
            one(&text),
            "3:1: metadata.name: found no `name`, expected this required field"
        );
    }

    #[test]
    fn an_unknown_probe_kind_points_at_the_kind_key() {
        let text = GOOD.replace("      tcp: {", "      tpc: {");
        assert_eq!(
            one(&text),
            "13:7: prechecks[1].probe.tpc: found `tpc`, expected one of `http`, `tcp`, `command`, `traffic`, `kubernetes`"
        );
    }

    #[test]
    fn wrong_types_are_said_in_plain_words() {
        let text = GOOD.replace("{ name: relay }", "{ name: relay, count: -2 }");
        assert_eq!(
            one(&text),
            "17:33: faults[0].with.count: found the number `-2`, expected a whole number, 0 or more"
        );
        let text = GOOD.replace("{ name: relay }", "{ name: relay, all: [1] }");
        assert!(one(&text).contains("found a list, expected a boolean"));
    }

    #[test]
    fn an_undefined_placeholder_points_inside_the_string() {
        let text = GOOD.replace("127.0.0.1:{{port}}/health", "127.0.0.1:{{ prot }}/health");
        assert_eq!(
            one(&text),
            "10:45: prechecks[0].probe.http.url: found `{{prot}}`, expected one of the declared vars (port)"
        );
    }

    #[test]
    fn an_override_of_an_undeclared_var_points_at_vars_and_hides_the_value() {
        let e = errors(GOOD, &[("prot", "s3cret")]);
        assert_eq!(e.len(), 1);
        assert_eq!(
            (e[0].file.as_str(), e[0].line, e[0].column),
            ("s.yaml", 4, 1)
        );
        assert!(!e[0].message.contains("s3cret"), "{}", e[0].message);
        // A declared one is fine and wins.
        let d = load_str(
            GOOD,
            Path::new("s.yaml"),
            &[var_file::Override::command_line("port", "9")],
        )
        .unwrap();
        assert_eq!(d.vars.values["port"], "9");
    }

    #[test]
    fn an_unset_env_var_points_at_its_name() {
        let text = GOOD.replace(
            "  port: 8080\n",
            "  port: 8080\n  token: { env: FIREDRILL_UNIT_TEST_SURELY_UNSET }\n",
        );
        assert_eq!(
            one(&text),
            "6:17: vars.token.env: found environment variable `FIREDRILL_UNIT_TEST_SURELY_UNSET` unset and no `default`, expected it to be set (or a `default:` for `token`)"
        );
    }

    #[test]
    fn duplicate_keys_point_at_the_second_one() {
        let text = GOOD.replace(
            "kind: process_kill\n",
            "kind: process_kill\n    kind: process_kill\n",
        );
        assert_eq!(
            one(&text),
            "17:5: faults[0].kind: found `kind` a second time in the same map (first at line 16 column 5), expected each key once"
        );
    }

    #[test]
    fn an_unclosed_quote_points_at_the_opening_quote() {
        let text = GOOD.replace(
            "address: \"127.0.0.1:{{port}}\"",
            "address: \"127.0.0.1:{{port}}",
        );
        let msg = one(&text);
        assert!(
            msg.starts_with("13:23: prechecks[1].probe.tcp.address: found a string opened with \" that is not closed on its line"),
            "{msg}"
        );
    }

    #[test]
    fn bad_indentation_names_the_mapping() {
        let text = GOOD.replace("    with: { name: relay }", "      with: { name: relay }");
        let msg = one(&text);
        // `with` indented under `kind` continues its value: the parser stops at the `:`.
        assert!(
            msg.starts_with(
                "17:11: faults[0].kind: found invalid YAML (mapping values are not allowed"
            ),
            "{msg}"
        );
    }

    #[test]
    fn regex_errors_fit_on_one_line() {
        let text = GOOD.replace("{ name: relay }", "{ pattern: \"a(b\" }");
        assert_eq!(
            one(&text),
            "17:22: faults[0].with.pattern: found `a(b`, expected a regular expression (unclosed group at character 2)"
        );
    }

    #[test]
    fn an_unknown_key_in_a_json_check_is_found_through_the_untagged_enum() {
        let text = GOOD.replace(
            "/health\" } }\n",
            "/health\" } }\n    expect: { json: [{ path: $.a, eq: 1 }, { path: $.b, gtt: 1 }] }\n",
        );
        assert_eq!(
            one(&text),
            "11:57: prechecks[0].expect.json[1].gtt: found unknown field `gtt`, expected one of `path`, `eq`, `ne`, `lt`, `le`, `gt`, `ge`, `exists`"
        );
    }

    #[test]
    fn a_target_with_two_kinds_is_one_error() {
        let text = GOOD.replace("{ netns: app }", "{ netns: app, ssh: x }");
        assert_eq!(
            one(&text),
            "7:10: targets.appns: found a map without exactly one key, expected a map with a single key (the kind)"
        );
    }

    #[test]
    fn go_templates_are_not_vars_but_bad_var_names_are_errors() {
        let text = GOOD.replace(
            "tcp: { address",
            "command: { run: \"docker inspect -f '{{.State.Running}}' relay\" }\n      x: { address",
        );
        // (the probe now has two keys; only the template matters here)
        let e = errors(&text, &[]);
        assert!(e.iter().all(|d| !d.message.contains("State")), "{e:#?}");
        let text = GOOD.replace("  port: 8080\n", "  port: 8080\n  relay.url: x\n");
        assert!(one(&text).starts_with("6:3: vars.relay.url: found var name `relay.url`"));
    }

    #[test]
    fn tabs_and_second_documents_are_named() {
        let text = GOOD.replace("    kind: process_kill", "\tkind: process_kill");
        assert!(one(&text).contains("expected spaces for indentation (YAML does not allow tabs)"));
        let text = format!("{GOOD}---\n{GOOD}");
        assert_eq!(
            one(&text),
            "18:1: : found a second YAML document (`---`), expected one scenario per file"
        );
    }

    fn located(text: &str, vars: &[(&str, &str)]) -> Vec<String> {
        errors(text, vars)
            .iter()
            .map(|d| format!("{}:{}: {}", d.line, d.column, d.path))
            .collect()
    }

    #[test]
    fn every_bad_field_of_one_step_is_reported() {
        // An unknown key, a type error and a bad duration in one step, and an
        // undefined target in another: serde alone stops at the first.
        let text = GOOD
            .replace(
                "    probe: { http:",
                "    retries: lots
    within: 1,5s
    probe: { http:",
            )
            .replace("target: appns }", "target: appns, tries: 3 }")
            .replace(
                "with: { name: relay }",
                "with: { name: relay }
    target: gw9",
            );
        assert_eq!(
            located(&text, &[]),
            [
                "10:14: prechecks[0].retries",
                "11:13: prechecks[0].within",
                "15:60: prechecks[1].probe.tcp.tries",
                "20:13: faults[0].target",
            ]
        );
    }

    #[test]
    fn a_missing_field_is_reported_once_even_after_its_value_was_cut_out() {
        // `name` has the wrong type; decoding again without it must not also say
        // that `name` is missing.
        let text = GOOD.replace("  - name: kill\n", "  - name: [kill]\n");
        assert_eq!(
            one(&text),
            "15:11: faults[0].name: found a list, expected a string"
        );
    }

    #[test]
    fn every_missing_required_section_is_reported() {
        let e = located("targets: {}\n", &[]);
        assert_eq!(
            e,
            [
                "1:1: apiVersion",
                "1:1: faults",
                "1:1: kind",
                "1:1: metadata"
            ]
        );
    }

    #[test]
    fn a_broken_var_hides_neither_other_problems_nor_adds_noise_where_it_is_used() {
        // `port` is broken: its uses are not reported again as undefined, and the
        // URL holding `{{port}}` is not judged; the bad fault field still is.
        let text = GOOD
            .replace("  port: 8080\n", "  port: [8080]\n")
            .replace("{ name: relay }", "{ name: relay, count: x }");
        assert_eq!(
            located(&text, &[]),
            ["5:9: vars.port", "17:33: faults[0].with.count"]
        );
        // An undefined placeholder is reported once, not also as a bad duration.
        let text = GOOD.replace(
            "with: { name: relay }",
            "with: { name: relay }\n    ttl: \"{{ttl}}\"",
        );
        assert_eq!(
            one(&text),
            "18:11: faults[0].ttl: found `{{ttl}}`, expected one of the declared vars (port)"
        );
    }

    /// The exercise record's people and roles: blanks are named by their path, all at once.
    #[test]
    fn blank_participants_and_sign_off_roles_are_errors() {
        let text = GOOD.replace(
            "metadata: { name: t }",
            "metadata: { name: t, participants: [ { name: Al, role: lead }, { name: \" \", role: \"\" } ], sign_off: [ \"\" ] }",
        );
        let e = errors(&text, &[]);
        let paths: Vec<&str> = e.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "metadata.participants[1].name",
                "metadata.participants[1].role",
                "metadata.sign_off[0]"
            ],
            "{e:#?}"
        );
        assert!(e[0].message.contains("found an empty name"), "{e:#?}");
    }
}
