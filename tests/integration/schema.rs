//! `firedrill schema`: the JSON Schema of scenario files and the reference document
//! rendered from it.
//!
//! The schema is what editors validate against, so it must describe every field
//! and agree with the loader: the fault kinds, probe kinds and top-level keys it
//! lists are compared with the ones the loader names in its own error messages.
//! `docs/scenario-reference.md` must equal `firedrill schema --format markdown`, the
//! shipped `firedrill.schema.json` must equal `firedrill schema`, and every shipped
//! scenario's `$schema` comment must point at that file.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_firedrill");
const REFERENCE: &str = "docs/scenario-reference.md";
const SHIPPED_SCHEMA: &str = "firedrill.schema.json";

fn firedrill(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run firedrill");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).expect("utf-8 stdout"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn schema() -> Value {
    let (code, out, err) = firedrill(&["schema"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).expect("`firedrill schema` prints valid JSON")
}

fn def<'a>(schema: &'a Value, name: &str) -> &'a Value {
    schema["$defs"]
        .get(name)
        .unwrap_or_else(|| panic!("no $defs/{name} in the schema"))
}

fn resolve<'a>(schema: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => def(schema, r.strip_prefix("#/$defs/").expect("local $ref")),
        None => v,
    }
}

#[test]
fn schema_is_json_schema_2020_12_of_a_scenario() {
    let s = schema();
    assert_eq!(
        s["$schema"], "https://json-schema.org/draft/2020-12/schema",
        "editors need to know the draft"
    );
    assert_eq!(s["title"], "Scenario");
    assert_eq!(s["type"], "object");
    assert_eq!(s["additionalProperties"], false, "unknown keys are errors");
    let required: BTreeSet<&str> = s["required"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for r in ["apiVersion", "kind", "metadata", "faults"] {
        assert!(required.contains(r), "{r} is not required");
    }
    // Every $ref resolves.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                if let Some(Value::String(r)) = o.get("$ref") {
                    out.push(r.clone());
                }
                o.values().for_each(|c| refs(c, out));
            }
            Value::Array(a) => a.iter().for_each(|c| refs(c, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&s, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let name = r.strip_prefix("#/$defs/").expect("local $ref");
        def(&s, name);
    }
}

#[test]
fn default_format_is_json() {
    let (_, default, _) = firedrill(&["schema"]);
    let (code, json, err) = firedrill(&["schema", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(default, json);
    let (code, _, err) = firedrill(&["schema", "--format", "yaml"]);
    assert_eq!(code, 2, "an unknown format is a usage error: {err}");
}

/// Every property of every object schema, `$defs` included, has a non-empty
/// description: they are the hover docs in an editor.
#[test]
fn every_property_is_described() {
    fn walk(v: &Value, at: &str, missing: &mut Vec<String>, count: &mut usize) {
        match v {
            Value::Object(o) => {
                if let Some(Value::Object(props)) = o.get("properties") {
                    for (k, p) in props {
                        *count += 1;
                        let d = p.get("description").and_then(Value::as_str).unwrap_or("");
                        if d.trim().is_empty() {
                            missing.push(format!("{at}/properties/{k}"));
                        }
                    }
                }
                for (k, c) in o {
                    walk(c, &format!("{at}/{k}"), missing, count);
                }
            }
            Value::Array(a) => {
                for (i, c) in a.iter().enumerate() {
                    walk(c, &format!("{at}/{i}"), missing, count);
                }
            }
            _ => {}
        }
    }
    let mut missing = Vec::new();
    let mut count = 0;
    walk(&schema(), "#", &mut missing, &mut count);
    assert!(count > 50, "only {count} properties: the walk is broken");
    assert!(
        missing.is_empty(),
        "properties without a description:\n{}",
        missing.join("\n")
    );
}

/// The kinds a `oneOf`/`anyOf` offers on the property `tag` (`kind: { const: X }`).
fn tagged_kinds(schema: &Value, union: &Value, tag: &str) -> BTreeSet<String> {
    let items = union
        .get("oneOf")
        .or_else(|| union.get("anyOf"))
        .and_then(Value::as_array)
        .expect("a oneOf/anyOf");
    items
        .iter()
        .map(|i| {
            let i = resolve(schema, i);
            i["properties"][tag]["const"]
                .as_str()
                .unwrap_or_else(|| panic!("variant without a `{tag}` const: {i}"))
                .to_string()
        })
        .collect()
}

/// The names the loader lists as expected after "expected one of" (or "expected").
fn expected_names(message: &str) -> BTreeSet<String> {
    let line = message
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no diagnostic in {message}"));
    let list = line
        .split_once(", expected ")
        .map(|(_, rest)| rest.trim_start_matches("one of "))
        .unwrap_or_else(|| panic!("no `expected` in {line}"));
    list.split(", ")
        .map(|n| n.trim_matches('`').to_string())
        .collect()
}

fn loader_says(yaml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.yaml");
    std::fs::write(&file, yaml).unwrap();
    let (code, _, err) = firedrill(&["validate", file.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    err
}

const MINIMAL: &str = "\
apiVersion: firedrill/v1
kind: Scenario
metadata: { name: schema-test }
prechecks:
  - name: up
    probe: { PROBE: { run: 'true' } }
faults:
  - name: f
    kind: KIND
    with: { name: relay }
";

/// Fault kinds are a `oneOf`/`anyOf` on `kind`, and it lists exactly the kinds the
/// loader accepts.
#[test]
fn fault_kinds_are_a_union_on_kind_matching_the_loader() {
    let s = schema();
    let step = def(&s, "FaultStep");
    let parts = step["allOf"].as_array().expect("FaultStep is an allOf");
    let union = parts
        .iter()
        .map(|p| resolve(&s, p))
        .find(|p| p.get("oneOf").or_else(|| p.get("anyOf")).is_some())
        .expect("one part of FaultStep is the union of fault kinds");
    let kinds = tagged_kinds(&s, union, "kind");
    assert!(kinds.contains("process_kill"), "{kinds:?}");
    // Each kind's parameters are a described, closed object.
    for item in union["oneOf"].as_array().into_iter().flatten() {
        let with = resolve(&s, &item["properties"]["with"]);
        assert_eq!(with["additionalProperties"], false, "{item}");
    }
    let err = loader_says(
        &MINIMAL
            .replace("PROBE", "command")
            .replace("KIND", "no_such_fault"),
    );
    assert_eq!(kinds, expected_names(&err), "schema and loader disagree");
}

#[test]
fn probe_kinds_match_the_loader() {
    let s = schema();
    let union = def(&s, "ProbeSpec");
    let kinds: BTreeSet<String> = union["oneOf"]
        .as_array()
        .expect("ProbeSpec is a oneOf")
        .iter()
        .map(|i| {
            let props = i["properties"].as_object().unwrap();
            assert_eq!(props.len(), 1, "a probe is a one-key map: {i}");
            props.keys().next().unwrap().clone()
        })
        .collect();
    let err = loader_says(
        &MINIMAL
            .replace("PROBE", "no_such_probe")
            .replace("KIND", "process_kill"),
    );
    assert_eq!(kinds, expected_names(&err), "schema and loader disagree");
}

#[test]
fn top_level_keys_match_the_loader() {
    let s = schema();
    let keys: BTreeSet<String> = s["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let err = loader_says(&format!(
        "{}no_such_section: 1\n",
        MINIMAL
            .replace("PROBE", "command")
            .replace("KIND", "process_kill")
    ));
    assert_eq!(keys, expected_names(&err), "schema and loader disagree");
}

/// docs/scenario-reference.md is exactly what the generator prints today.
#[test]
fn committed_reference_is_current() {
    let (code, generated, err) = firedrill(&["schema", "--format", "markdown"]);
    assert_eq!(code, 0, "{err}");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(REFERENCE);
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{REFERENCE} is out of date; regenerate it with\n  cargo run -q -- schema --format markdown > {REFERENCE}"
    );
}

/// The schema shipped at the repository's root (what the scenarios' `$schema`
/// comments point editors at) is exactly what the generator prints today.
#[test]
fn shipped_schema_is_current() {
    let (code, generated, err) = firedrill(&["schema"]);
    assert_eq!(code, 0, "{err}");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(SHIPPED_SCHEMA);
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{SHIPPED_SCHEMA} is missing or out of date; regenerate it with\n  cargo run -q -- schema > {SHIPPED_SCHEMA}"
    );
}

/// Every YAML file under `dir`, recursively.
fn yaml_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
}

/// Each shipped scenario names the schema in a `yaml-language-server: $schema=`
/// comment, and that path (relative to the scenario) is the shipped schema: it used to
/// point at a file that did not exist.
#[test]
fn shipped_scenarios_point_at_the_shipped_schema() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = root.join(SHIPPED_SCHEMA);
    let mut files = Vec::new();
    yaml_files(&root.join("scenarios"), &mut files);
    assert!(!files.is_empty());
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let reference = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("# yaml-language-server: $schema="))
            .unwrap_or_else(|| panic!("{} has no `$schema` comment", f.display()));
        let target = f.parent().unwrap().join(reference.trim());
        assert!(
            target.is_file(),
            "{}: $schema={reference} does not exist",
            f.display()
        );
        assert_eq!(
            target.canonicalize().unwrap(),
            shipped.canonicalize().unwrap(),
            "{}: $schema={reference} is not {SHIPPED_SCHEMA}",
            f.display()
        );
    }
}

/// The reference documents every type and every field of the schema, and tells
/// how to get editor support.
#[test]
fn reference_covers_every_field() {
    let (_, md, _) = firedrill(&["schema", "--format", "markdown"]);
    let s = schema();
    let mut objects: Vec<(&str, &Value)> = vec![("Scenario", &s)];
    for (name, d) in s["$defs"].as_object().unwrap() {
        objects.push((name, d));
    }
    for (name, d) in objects {
        if let Some(props) = d.get("properties").and_then(Value::as_object) {
            for (field, p) in props {
                let row = format!("| `{field}` |");
                assert!(md.contains(&row), "{name}.{field} is not in the reference");
                let desc = p["description"].as_str().unwrap_or_default();
                let first_words: String = desc
                    .split_whitespace()
                    .take(4)
                    .collect::<Vec<_>>()
                    .join(" ");
                assert!(
                    md.contains(&first_words),
                    "the description of {name}.{field} is not in the reference"
                );
            }
        } else if !md.contains(&format!("## {name}")) {
            panic!("{name} has no section in the reference");
        }
    }
    for needle in [
        "firedrill schema > firedrill.schema.json",
        "# yaml-language-server: $schema=./firedrill.schema.json",
        "\"yaml.schemas\"",
    ] {
        assert!(md.contains(needle), "editor support: missing {needle}");
    }
}
