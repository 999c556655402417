//! Typed decoding of a scenario, one section and one step at a time.
//!
//! serde stops at the first problem of whatever it decodes, so decoding the whole
//! `Scenario` at once showed one problem per run, in no useful order. Here each
//! top-level section, each step and each target is decoded on its own, and a step
//! that fails is decoded again without the field that failed, until it decodes or
//! the failure cannot be cut out (a missing required field). Every problem found on
//! the way is reported; what did decode goes on to the semantic checks.
//!
//! Decoding goes through JSON (see [`to_json`]), so the YAML-to-JSON bridge lives
//! here too, with the second look at an untagged enum that failed as a whole.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde_json::Value as J;
use serde_yaml::Value;

use super::diagnostics::{Diagnostic, Diags, backticked, join, strip_location};
use crate::probe::delivery::DeliveryStep;
use crate::probe::traffic::TrafficStep;
use crate::scenario::{
    Check, FaultStep, Guard, Indicator, Metadata, Objectives, RecoveryStep, Scenario, ScenarioKind,
};
use crate::target::TargetSpec;

/// Fields of [`Scenario`] without a default: missing ones are reported.
const REQUIRED: [&str; 4] = ["apiVersion", "kind", "metadata", "faults"];

/// A bad step is decoded again at most this many times (one field cut out each
/// time); a step with more problems than this is unusual enough to be fixed in two
/// goes.
const MAX_PROBLEMS_PER_ITEM: usize = 32;

/// What decoded of each section. `None` for a step means "it had problems, which
/// were reported"; its position in the list is kept so paths stay `faults[3]`.
pub(super) struct Parsed {
    pub api_version: Option<String>,
    pub kind: Option<ScenarioKind>,
    pub metadata: Option<Metadata>,
    /// Every declared target name, with its definition when it decoded.
    pub targets: BTreeMap<String, Option<TargetSpec>>,
    pub objectives: Option<Objectives>,
    pub guards: Vec<Option<Guard>>,
    pub indicators: Vec<Option<Indicator>>,
    pub prechecks: Vec<Option<Check>>,
    /// Whether `faults:` is in the file (an absent one is reported as missing, not
    /// as empty).
    pub faults_written: bool,
    pub faults: Vec<Option<FaultStep>>,
    pub verifications: Vec<Option<Check>>,
    pub traffic: Vec<Option<TrafficStep>>,
    pub delivery: Vec<Option<DeliveryStep>>,
    pub recovery: Vec<Option<RecoveryStep>>,
    pub steady_state: Vec<Option<Check>>,
    pub after_recovery: Vec<Option<Check>>,
    pub notify: Vec<Option<crate::notify::NotifyChannel>>,
}

impl Parsed {
    /// The scenario, when every part of it decoded.
    pub fn into_scenario(
        self,
        vars: BTreeMap<String, crate::scenario::VarValue>,
    ) -> Option<Scenario> {
        fn all<T>(v: Vec<Option<T>>) -> Option<Vec<T>> {
            v.into_iter().collect()
        }
        Some(Scenario {
            api_version: self.api_version?,
            kind: self.kind?,
            metadata: self.metadata?,
            vars,
            targets: self
                .targets
                .into_iter()
                .map(|(k, v)| v.map(|v| (k, v)))
                .collect::<Option<_>>()?,
            objectives: self.objectives?,
            guards: all(self.guards)?,
            indicators: all(self.indicators)?,
            prechecks: all(self.prechecks)?,
            faults: all(self.faults)?,
            verifications: all(self.verifications)?,
            traffic: all(self.traffic)?,
            delivery: all(self.delivery)?,
            recovery: all(self.recovery)?,
            steady_state: all(self.steady_state)?,
            after_recovery: all(self.after_recovery)?,
            notify: all(self.notify)?,
        })
    }
}

/// Decodes every section of `doc` (a JSON object) except `vars`, which the loader
/// decodes first because every other section may use them.
pub(super) fn scenario(doc: &J, diag: &Diags<'_>, errors: &mut Vec<Diagnostic>) -> Parsed {
    let mut p = Parsed {
        api_version: None,
        kind: None,
        metadata: None,
        targets: BTreeMap::new(),
        objectives: Some(Objectives::default()),
        guards: vec![],
        indicators: vec![],
        prechecks: vec![],
        faults_written: false,
        faults: vec![],
        verifications: vec![],
        traffic: vec![],
        delivery: vec![],
        recovery: vec![],
        steady_state: vec![],
        after_recovery: vec![],
        notify: vec![],
    };
    let Some(obj) = doc.as_object() else {
        return p;
    };
    for field in REQUIRED {
        if !obj.contains_key(field) {
            // The field is not in the file: point at the document.
            errors.push(diag.make(
                field,
                diag.index.locate(""),
                format!("found no `{field}`, expected this required field"),
            ));
        }
    }
    let mut d = Decoder { diag, errors };
    for (key, v) in obj {
        match key.as_str() {
            "apiVersion" => p.api_version = d.one(v, key),
            "kind" => p.kind = d.one(v, key),
            "metadata" => p.metadata = d.one(v, key),
            "vars" => {}
            "targets" => p.targets = d.map(v, key),
            "objectives" => p.objectives = d.one(v, key),
            "guards" => p.guards = d.list(v, key),
            "indicators" => p.indicators = d.list(v, key),
            "prechecks" => p.prechecks = d.list(v, key),
            "faults" => {
                p.faults_written = true;
                p.faults = d.list(v, key);
            }
            "verifications" => p.verifications = d.list(v, key),
            "traffic" => p.traffic = d.list(v, key),
            "delivery" => p.delivery = d.list(v, key),
            "recovery" => p.recovery = d.list(v, key),
            "steady_state" => p.steady_state = d.list(v, key),
            "after_recovery" => p.after_recovery = d.list(v, key),
            "notify" => p.notify = d.list(v, key),
            _ => {
                let fields = struct_fields::<Scenario>();
                let e = <serde_json::Error as serde::de::Error>::unknown_field(key, fields);
                let msg = strip_location(&e.to_string());
                let expected = msg
                    .split_once("expected ")
                    .map_or("no fields here", |(_, x)| x);
                d.errors.push(diag.at(
                    key,
                    format!("found unknown field `{key}`, expected {expected}"),
                ));
            }
        }
    }
    p
}

pub(super) struct Decoder<'d, 'a> {
    pub diag: &'d Diags<'a>,
    pub errors: &'d mut Vec<Diagnostic>,
}

impl Decoder<'_, '_> {
    /// A list section: each item on its own, so one bad step hides no other.
    fn list<T: DeserializeOwned>(&mut self, v: &J, section: &str) -> Vec<Option<T>> {
        match v {
            J::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| self.one(item, &format!("{section}[{i}]")))
                .collect(),
            // Not a list: serde says what it found instead.
            other => self
                .one::<Vec<T>>(other, section)
                .map(|v| v.into_iter().map(Some).collect())
                .unwrap_or_default(),
        }
    }

    /// A map section (`targets`): each entry on its own.
    fn map<T: DeserializeOwned>(&mut self, v: &J, section: &str) -> BTreeMap<String, Option<T>> {
        match v {
            J::Object(entries) => entries
                .iter()
                .map(|(k, item)| (k.clone(), self.one(item, &format!("{section}.{k}"))))
                .collect(),
            other => self
                .one::<BTreeMap<String, T>>(other, section)
                .map(|m| m.into_iter().map(|(k, v)| (k, Some(v))).collect())
                .unwrap_or_default(),
        }
    }

    /// Decodes `value` (at dotted path `base`) as `T`, reporting every problem it
    /// can: after a failure the field at fault is cut out and the rest decoded again.
    /// Returns the value decoded without its bad fields (so the semantic checks still
    /// see its other fields; the load fails anyway on the reported problems), or
    /// `None` when a required field is missing or the failure cannot be cut out.
    pub fn one<T: DeserializeOwned>(&mut self, value: &J, base: &str) -> Option<T> {
        let mut current = Cow::Borrowed(value);
        let mut removed: Vec<String> = Vec::new();
        for _ in 0..MAX_PROBLEMS_PER_ITEM {
            let e = match serde_path_to_error::deserialize::<_, T>(current.as_ref()) {
                Ok(t) => return Some(t),
                Err(e) => e,
            };
            let rel = match e.path().to_string() {
                p if p == "." => String::new(),
                p => p,
            };
            let inner = strip_location(&e.inner().to_string());
            if let Some((field, _)) = backticked(&inner, "missing field `") {
                // Missing because we cut it out: that problem is already reported.
                if !removed.contains(&join(&rel, field)) {
                    self.errors
                        .push(refine_untagged(current.as_ref(), base, &e, self.diag));
                }
                return None;
            }
            self.errors
                .push(refine_untagged(current.as_ref(), base, &e, self.diag));
            let cut = match backticked(&inner, "unknown field `") {
                Some((field, _)) if !(rel == field || rel.ends_with(&format!(".{field}"))) => {
                    join(&rel, field)
                }
                _ => rel,
            };
            if cut.is_empty() || removed.contains(&cut) || !remove_at(current.to_mut(), &cut) {
                return None;
            }
            removed.push(cut);
        }
        None
    }
}

/// Removes the map entry at dotted path `path` (`probe.http.timout`); false when
/// the path does not end in a map key or does not exist. A list item is not removed:
/// that would shift the indexes of the items after it.
fn remove_at(v: &mut J, path: &str) -> bool {
    let mut segments = Vec::new();
    for part in path.split('.') {
        let (key, indexes) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            segments.push(Err(key));
        }
        for idx in indexes.split('[').filter(|s| !s.is_empty()) {
            match idx.trim_end_matches(']').parse::<usize>() {
                Ok(i) => segments.push(Ok(i)),
                Err(_) => return false,
            }
        }
    }
    let Some((Err(last), parents)) = segments.split_last() else {
        return false;
    };
    let mut v = v;
    for s in parents {
        let next = match s {
            Ok(i) => v.get_mut(*i),
            Err(k) => v.get_mut(*k),
        };
        match next {
            Some(n) => v = n,
            None => return false,
        }
    }
    v.as_object_mut().is_some_and(|o| o.remove(*last).is_some())
}

/// The field names serde knows for struct `T` (as written in files, renames
/// applied): what `deserialize_struct` is told, captured by a deserializer that
/// does nothing else.
fn struct_fields<T: DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{Deserializer, Visitor};

    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("field names captured")
        }
    }
    impl std::error::Error for Stop {}
    impl serde::de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    struct Capture<'c>(&'c mut &'static [&'static str]);
    impl<'de> Deserializer<'de> for Capture<'_> {
        type Error = Stop;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            *self.0 = fields;
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
            enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Capture(&mut fields));
    fields
}

/// The JSON equivalent of a YAML value, for deserializing the typed scenario.
///
/// One-key maps stay one-key maps, which is how serde's externally tagged enums read
/// from JSON; a YAML tag (`!http { ... }`) becomes the same one-key map, so both
/// spellings work. Non-string keys become their text; numbers that JSON cannot hold
/// (`.nan`, `.inf`) become strings, so the type error names what was written.
pub(super) fn to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                J::from(u)
            } else if let Some(i) = n.as_i64() {
                J::from(i)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map_or_else(|| J::String(n.to_string()), J::Number)
            }
        }
        Value::String(s) => J::String(s.clone()),
        Value::Sequence(seq) => J::Array(seq.iter().map(to_json).collect()),
        Value::Mapping(m) => J::Object(m.iter().map(|(k, v)| (key_text(k), to_json(v))).collect()),
        Value::Tagged(t) => {
            let tag = t.tag.to_string();
            let mut o = serde_json::Map::new();
            o.insert(tag.trim_start_matches('!').to_string(), to_json(&t.value));
            J::Object(o)
        }
    }
}

/// The text of a map key, whatever its YAML type.
pub(super) fn key_text(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

/// `json: { path: …, eqq: 1 }` fails as "did not match any variant" of the untagged
/// one-or-many; decode it again as what it was meant to be, to report the real
/// problem (here: the unknown field `eqq`) at its place.
///
/// `item` is what was decoded, found at dotted path `base`.
fn refine_untagged(
    item: &serde_json::Value,
    base: &str,
    e: &serde_path_to_error::Error<serde_json::Error>,
    diag: &Diags<'_>,
) -> Diagnostic {
    use crate::probe::expect::JsonCheck;
    let general = diag.serde(base, e);
    let rel = e.path().to_string();
    let path = if rel == "." {
        base.to_string()
    } else {
        join(base, &rel)
    };
    if !e.inner().to_string().contains("untagged enum OneOrMany") || !path.ends_with(".json") {
        return general;
    }
    let again = match json_at(item, &rel) {
        Some(v @ serde_json::Value::Array(_)) => {
            serde_path_to_error::deserialize::<_, Vec<JsonCheck>>(v.clone()).err()
        }
        Some(v) => serde_path_to_error::deserialize::<_, JsonCheck>(v.clone()).err(),
        None => None,
    };
    match again {
        Some(inner) => diag.serde(&path, &inner),
        None => general,
    }
}

/// The value at a dotted path (`prechecks[0].expect.json`) of a JSON document.
fn json_at<'v>(doc: &'v serde_json::Value, path: &str) -> Option<&'v serde_json::Value> {
    let mut v = doc;
    for part in path.split('.') {
        let (key, indexes) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            v = v.get(key)?;
        }
        for idx in indexes.split('[').filter(|s| !s.is_empty()) {
            v = v.get(idx.trim_end_matches(']').parse::<usize>().ok()?)?;
        }
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_come_from_serde() {
        let f = struct_fields::<Scenario>();
        assert_eq!(f.first(), Some(&"apiVersion"));
        assert!(f.contains(&"recovery") && f.contains(&"faults"));
        for r in REQUIRED {
            assert!(f.contains(&r), "{r}");
        }
    }

    #[test]
    fn only_map_entries_are_cut_out() {
        let mut v = serde_json::json!({ "a": { "b": [1, { "c": 2, "d": 3 }] } });
        assert!(remove_at(&mut v, "a.b[1].c"));
        assert_eq!(v, serde_json::json!({ "a": { "b": [1, { "d": 3 }] } }));
        assert!(!remove_at(&mut v, "a.b[0]"));
        assert!(!remove_at(&mut v, "a.nope.c"));
        assert!(!remove_at(&mut v, "a.b[1].c"));
    }

    #[test]
    fn json_bridge_keeps_numbers_and_stringifies_keys() {
        let v: Value = serde_yaml::from_str(
            "{1: a, true: b, n: -3, f: 0.5, big: 18446744073709551615, nan: .nan}",
        )
        .unwrap();
        let j = to_json(&v);
        assert_eq!(j["1"], "a");
        assert_eq!(j["true"], "b");
        assert_eq!(j["n"], -3);
        assert_eq!(j["f"], 0.5);
        assert_eq!(j["big"], u64::MAX);
        assert_eq!(j["nan"], ".nan");
    }
}
