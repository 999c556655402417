//! Validation: the checks that span fields, run on whatever decoded.
//!
//! serde checks each field on its own (see [`super::decode`]); what needs more than
//! one field lives here: that every target a step names is defined, that step names
//! are unique within a section, that durations are positive, the probe and
//! expectation checks, and each fault's parameters against the target it acts on.
//! A step that did not decode was reported already and is skipped.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_yaml::{Mapping, Value};

use super::ResolvedFault;
use super::decode::{self, Parsed, to_json};
use super::diagnostics::{Diagnostic, Diags, declared_list, join, tidy};
use crate::fault::FaultSpec;
use crate::scenario::API_VERSION;
use crate::target::Target;

/// The targets a scenario may name.
pub(super) struct Targets {
    /// Every name that may be used: `local` and each one defined, even where its
    /// definition is broken (that is reported at the definition, not at each use).
    pub(super) names: BTreeSet<String>,
    /// The definitions that decoded, `local` included.
    pub(super) resolved: BTreeMap<String, Target>,
}

/// Every target the scenario defines, `local` included; a broken definition is
/// reported and its name still counts as defined.
pub(super) fn resolve_targets(
    parsed: &Parsed,
    diag: &Diags<'_>,
    errors: &mut Vec<Diagnostic>,
) -> Targets {
    let mut targets = Targets {
        names: BTreeSet::from(["local".to_string()]),
        resolved: BTreeMap::from([("local".to_string(), Target::Local)]),
    };
    for (name, spec) in &parsed.targets {
        if name == "local" {
            errors.push(diag.at(
                "targets.local",
                "found a definition of `local`, expected another name: `local` is built in".into(),
            ));
            continue;
        }
        targets.names.insert(name.clone());
        if let Some(spec) = spec {
            for (p, msg) in spec.validate() {
                errors.push(diag.value_at(&format!("targets.{name}.{p}"), msg));
            }
            targets
                .resolved
                .insert(name.clone(), Target::from_spec(spec));
        }
    }
    targets
}

/// A use of a target that is not defined, naming those that are.
fn undefined_target(diag: &Diags<'_>, path: &str, name: &str, targets: &Targets) -> Diagnostic {
    // Never empty: `local` is always defined.
    let known = declared_list(&targets.names);
    diag.value_at(
        path,
        format!("found target `{name}`, expected one of the defined targets ({known})"),
    )
}

/// Items of a section that decoded, with their position in the file's list.
fn decoded<T>(items: &[Option<T>]) -> impl Iterator<Item = (usize, &T)> {
    items
        .iter()
        .enumerate()
        .filter_map(|(i, t)| t.as_ref().map(|t| (i, t)))
}

/// Each fault step's parameters, decoded into the closed enum of kinds and checked
/// against the target the step names. A step that did not decode, or whose target
/// is undefined or broken, is left out: its problem was reported.
pub(super) fn resolve_faults(
    parsed: &Parsed,
    targets: &Targets,
    diag: &Diags<'_>,
    errors: &mut Vec<Diagnostic>,
) -> Vec<ResolvedFault> {
    let mut faults = Vec::new();
    for (i, step) in decoded(&parsed.faults) {
        let base = format!("faults[{i}]");
        let with = if step.with.is_null() {
            Value::Mapping(Mapping::new())
        } else {
            step.with.clone()
        };
        let m = serde_json::json!({ "kind": step.kind, "with": to_json(&with) });
        let spec = decode::Decoder { diag, errors }.one::<FaultSpec>(&m, &base);
        if !targets.names.contains(&step.target) {
            errors.push(undefined_target(
                diag,
                &format!("{base}.target"),
                &step.target,
                targets,
            ));
            continue;
        }
        // A target whose definition is broken was reported there.
        let (Some(spec), Some(target)) = (spec, targets.resolved.get(&step.target).cloned()) else {
            continue;
        };
        for (p, msg) in spec.validate(&target) {
            // The whole `with:` block (e.g. conflicting fields) is reported at
            // its key, a single parameter at its value.
            let path = join(&base, &p);
            errors.push(if p == "with" {
                diag.at(&path, tidy(&msg))
            } else {
                diag.value_at(&path, tidy(&msg))
            });
        }
        faults.push(ResolvedFault {
            index: i,
            step: step.clone(),
            spec,
            target,
        });
    }
    faults
}

/// Checks across fields, on whatever decoded (a step that did not decode was
/// reported already and is skipped here).
pub(super) fn validate(
    scenario: &Parsed,
    targets: &Targets,
    diag: &Diags<'_>,
    errors: &mut Vec<Diagnostic>,
) {
    if let Some(api_version) = &scenario.api_version
        && api_version != API_VERSION
    {
        errors.push(diag.value_at(
            "apiVersion",
            format!("found `{api_version}`, expected `{API_VERSION}`"),
        ));
    }
    if let Some(metadata) = &scenario.metadata {
        let name = &metadata.name;
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
    }
    if let Some(metadata) = &scenario.metadata {
        // The exercise record names people and roles: a blank one is a mistake.
        for (i, p) in metadata.participants.iter().enumerate() {
            for (field, v) in [("name", &p.name), ("role", &p.role)] {
                if v.trim().is_empty() {
                    errors.push(diag.value_at(
                        &format!("metadata.participants[{i}].{field}"),
                        format!("found an empty {field}, expected a non-empty {field}"),
                    ));
                }
            }
        }
        for (i, role) in metadata.sign_off.iter().enumerate() {
            if role.trim().is_empty() {
                errors.push(
                    diag.value_at(
                        &format!("metadata.sign_off[{i}]"),
                        "found an empty role, expected the role that signs (e.g. `system owner`)"
                            .into(),
                    ),
                );
            }
        }
    }
    if scenario.faults_written && scenario.faults.is_empty() {
        errors.push(diag.value_at(
            "faults",
            "found an empty fault list, expected at least one fault".into(),
        ));
    }
    if let Some(objectives) = &scenario.objectives {
        if let Some(rto) = objectives.rto {
            positive(rto.0, "objectives.rto", "duration", diag, errors);
        }
        positive(
            objectives.max_duration.0,
            "objectives.max_duration",
            "duration",
            diag,
            errors,
        );
    }

    for (section, names) in [
        (
            "prechecks",
            step_names(&scenario.prechecks, |c| c.name.as_str()),
        ),
        (
            "verifications",
            step_names(&scenario.verifications, |c| c.name.as_str()),
        ),
        ("guards", step_names(&scenario.guards, |g| g.name.as_str())),
        (
            "indicators",
            step_names(&scenario.indicators, |g| g.name.as_str()),
        ),
        (
            "traffic",
            step_names(&scenario.traffic, |t| t.name.as_str()),
        ),
        (
            "delivery",
            step_names(&scenario.delivery, |t| t.name.as_str()),
        ),
        ("faults", step_names(&scenario.faults, |f| f.name.as_str())),
        (
            "recovery",
            step_names(&scenario.recovery, |r| r.name.as_str()),
        ),
        (
            "steady_state",
            step_names(&scenario.steady_state, |c| c.name.as_str()),
        ),
        (
            "after_recovery",
            step_names(&scenario.after_recovery, |c| c.name.as_str()),
        ),
        ("notify", step_names(&scenario.notify, |n| n.name.as_str())),
    ] {
        unique_names(section, names.into_iter(), diag, errors);
    }

    for (section, checks) in [
        ("prechecks", &scenario.prechecks),
        ("verifications", &scenario.verifications),
        ("steady_state", &scenario.steady_state),
        ("after_recovery", &scenario.after_recovery),
    ] {
        for (i, c) in decoded(checks) {
            let base = format!("{section}[{i}]");
            if c.within.is_some() && c.hold_for.is_some() {
                errors.push(diag.at(
                    &format!("{base}.for"),
                    "found both `within` and `for`, expected one of them: `within` waits until it holds, `for` requires it to hold throughout".into(),
                ));
            }
            polled(
                &base,
                c.interval.0,
                &c.probe,
                &c.expect,
                targets,
                diag,
                errors,
            );
        }
    }
    for (i, n) in decoded(&scenario.notify) {
        for (p, msg) in n.validate() {
            errors.push(diag.value_at(&format!("notify[{i}].{p}"), msg));
        }
    }
    for (i, t) in decoded(&scenario.traffic) {
        if let Some(name) = t.probe.target.as_deref()
            && !targets.names.contains(name)
        {
            let path = format!("traffic[{i}].probe.target");
            errors.push(undefined_target(diag, &path, name, targets));
        } else if let Some(name) = t.probe.target.as_deref()
            && let Some(target) = targets.resolved.get(name)
            && !target.is_host()
        {
            errors.push(diag.value_at(
                &format!("traffic[{i}].probe.target"),
                format!(
                    "found target `{name}` ({}), expected a host target: a kubernetes target has no network here",
                    target.describe()
                ),
            ));
        }
        if let Some(target) = t
            .probe
            .target
            .as_deref()
            .and_then(|n| targets.resolved.get(n))
            && !target.sockets_here()
        {
            errors.push(diag.value_at(
                &format!("traffic[{i}].probe.target"),
                format!(
                    "found remote target {}, expected `local` or a netns target: traffic is sent from sockets of its target's network",
                    target.describe()
                ),
            ));
        }
        for (p, msg) in t.validate() {
            errors.push(diag.value_at(&format!("traffic[{i}].{p}"), msg));
        }
    }
    for (i, t) in decoded(&scenario.delivery) {
        if let Some(name) = t.target.as_deref()
            && !targets.names.contains(name)
        {
            let path = format!("delivery[{i}].target");
            errors.push(undefined_target(diag, &path, name, targets));
        }
        for (p, msg) in t.validate() {
            errors.push(diag.value_at(&format!("delivery[{i}].{p}"), msg));
        }
    }
    // Guards and indicators are both polled probes that act after a count of
    // observations in a row; a count of 0 could never be reached.
    let guards = decoded(&scenario.guards).map(|(i, g)| {
        (
            format!("guards[{i}]"),
            "breach_after",
            g.breach_after,
            g.interval.0,
            &g.probe,
            &g.expect,
        )
    });
    let indicators = decoded(&scenario.indicators).map(|(i, g)| {
        (
            format!("indicators[{i}]"),
            "restored_after",
            g.restored_after,
            g.interval.0,
            &g.probe,
            &g.expect,
        )
    });
    for (base, count_field, count, interval, probe, expect) in guards.chain(indicators) {
        if count == 0 {
            errors.push(diag.value_at(
                &format!("{base}.{count_field}"),
                "found 0, expected at least 1".into(),
            ));
        }
        polled(&base, interval, probe, expect, targets, diag, errors);
    }
    for (i, r) in decoded(&scenario.recovery) {
        if !targets.names.contains(&r.command.target) {
            errors.push(undefined_target(
                diag,
                &format!("recovery[{i}].command.target"),
                &r.command.target,
                targets,
            ));
        } else if let Some(t) = targets.resolved.get(&r.command.target)
            && !t.is_host()
        {
            errors.push(diag.value_at(
                &format!("recovery[{i}].command.target"),
                format!(
                    "found target `{}` ({}), expected a host target: a kubernetes target runs no shell command",
                    r.command.target,
                    t.describe()
                ),
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

/// A zero duration at `path`, where `what` (a duration, a poll interval) must be
/// positive.
fn positive(
    d: std::time::Duration,
    path: &str,
    what: &str,
    diag: &Diags<'_>,
    errors: &mut Vec<Diagnostic>,
) {
    if d.is_zero() {
        errors.push(diag.value_at(path, format!("found `0s`, expected a positive {what}")));
    }
}

/// (position in the section, name) of each step that decoded.
fn step_names<T>(items: &[Option<T>], name: fn(&T) -> &str) -> Vec<(usize, &str)> {
    decoded(items).map(|(i, t)| (i, name(t))).collect()
}

/// What checks and guards share: a positive poll interval and a valid probe.
fn polled(
    base: &str,
    interval: std::time::Duration,
    probe: &crate::probe::ProbeSpec,
    expect: &crate::probe::Expect,
    targets: &Targets,
    diag: &Diags<'_>,
    errors: &mut Vec<Diagnostic>,
) {
    positive(
        interval,
        &format!("{base}.interval"),
        "poll interval",
        diag,
        errors,
    );
    probe_checks(base, probe, expect, targets, diag, errors);
}

/// A probe's target defined, its own checks and those of its expectation.
fn probe_checks(
    base: &str,
    probe: &crate::probe::ProbeSpec,
    expect: &crate::probe::Expect,
    targets: &Targets,
    diag: &Diags<'_>,
    errors: &mut Vec<Diagnostic>,
) {
    let pbase = format!("{base}.probe.{}", probe.kind());
    if let Some(t) = probe.target()
        && !targets.names.contains(t)
    {
        errors.push(undefined_target(
            diag,
            &format!("{pbase}.target"),
            t,
            targets,
        ));
    }
    // A cluster is not a host: only the kubernetes probe observes one, and it
    // observes nothing else.
    if let Some(t) = probe.target()
        && let Some(target) = targets.resolved.get(t)
        && (probe.kind() == "kubernetes") != target.cluster().is_some()
    {
        let expected = if probe.kind() == "kubernetes" {
            "a kubernetes target"
        } else {
            "a host target: a kubernetes target runs no program and has no network here"
        };
        errors.push(diag.value_at(
            &format!("{pbase}.target"),
            format!(
                "found target `{t}` ({}) for a `{}` probe, expected {expected}",
                target.describe(),
                probe.kind()
            ),
        ));
    }
    if let Some(msg) = sockets_elsewhere(probe, targets) {
        errors.push(diag.value_at(&format!("{pbase}.target"), msg));
    }
    for (p, msg) in probe.validate() {
        errors.push(diag.value_at(&join(&pbase, &p), tidy(&msg)));
    }
    for (p, msg) in expect.validate() {
        errors.push(diag.value_at(&join(&format!("{base}.expect"), &p), tidy(&msg)));
    }
}

/// An `http` or `traffic` probe sends from sockets of its target's network, which
/// the engine cannot open on a remote host.
fn sockets_elsewhere(probe: &crate::probe::ProbeSpec, targets: &Targets) -> Option<String> {
    let name = probe.target()?;
    let t = targets.resolved.get(name)?;
    (matches!(probe.kind(), "http" | "traffic") && !t.sockets_here()).then(|| {
        format!(
            "found remote target {}, expected `local` or a netns target: an `{}` probe sends from sockets of its target's network; on a remote host use a `command` probe (e.g. curl) or a `tcp` probe",
            t.describe(),
            probe.kind()
        )
    })
}

/// `names` are (position in the section, name) of the steps that decoded.
fn unique_names<'a>(
    section: &str,
    names: impl Iterator<Item = (usize, &'a str)>,
    diag: &Diags<'_>,
    errors: &mut Vec<Diagnostic>,
) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, n) in names {
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
