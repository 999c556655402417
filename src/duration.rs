//! Human durations (`500ms`, `5s`, `2m`, `1h30m`) as they appear in scenario files.
//!
//! Scenario authors think in human units, and the journal must round-trip them, so
//! the type serialises back to the same human form instead of a struct of secs/nanos.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written like `500ms`, `5s`, `2m` or `1h30m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub fn from_millis(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }
    pub fn get(self) -> Duration {
        self.0
    }
}

impl From<Duration> for HumanDuration {
    fn from(d: Duration) -> Self {
        Self(d)
    }
}

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.is_empty() {
            return Err("an empty duration".into());
        }
        // A bare number is ambiguous (seconds? milliseconds?), so it is refused.
        if t.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return Err(format!(
                "`{t}` has no unit; expected e.g. `500ms`, `5s`, `2m`"
            ));
        }
        humantime::parse_duration(t)
            .map(HumanDuration)
            .map_err(|e| {
                format!("`{t}` is not a duration ({e}); expected e.g. `500ms`, `5s`, `2m`")
            })
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.is_zero() {
            return f.write_str("0s");
        }
        if !d.subsec_nanos().is_multiple_of(1_000_000) {
            return write!(f, "{}", humantime::format_duration(d));
        }
        let ms = d.as_millis();
        if ms < 1000 || !ms.is_multiple_of(1000) {
            write!(f, "{ms}ms")
        } else {
            write!(
                f,
                "{}",
                humantime::format_duration(Duration::from_secs(d.as_secs()))
            )
        }
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as `500ms`, `5s` or `2m`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Err(E::custom(format!(
                    "`{v}` has no unit; expected e.g. `500ms`, `5s`, `2m`"
                )))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                self.visit_u64(v.unsigned_abs())
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Err(E::custom(format!(
                    "`{v}` has no unit; expected e.g. `500ms`, `5s`, `2m`"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for HumanDuration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration with a unit: `500ms`, `5s`, `2m`, `1h30m`.",
            "pattern": "^\\s*([0-9]+(\\.[0-9]+)?\\s*[a-zµ]+\\s*)+$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    #[test_case("500ms", 500; "millis")]
    #[test_case("5s", 5000; "seconds")]
    #[test_case("2m", 120_000; "minutes")]
    #[test_case("1h30m", 5_400_000; "compound")]
    fn parses(s: &str, ms: u64) {
        assert_eq!(
            s.parse::<HumanDuration>().unwrap().0,
            Duration::from_millis(ms)
        );
    }

    #[test_case("5"; "no unit")]
    #[test_case("five seconds"; "words")]
    #[test_case(""; "empty")]
    fn rejects(s: &str) {
        assert!(s.parse::<HumanDuration>().is_err());
    }

    #[test]
    fn displays_round_trip() {
        for s in ["500ms", "5s", "2m", "1h 30m", "1500ms"] {
            let d: HumanDuration = s.parse().unwrap();
            let again: HumanDuration = d.to_string().parse().unwrap();
            assert_eq!(d, again, "{s} -> {d}");
        }
    }
}
