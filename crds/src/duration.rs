//! Durations in manifests: `90s`, `10m`, `24h`, `1h30m`.
//!
//! The format is the whole-unit subset of Go's `time.ParseDuration` (hours, minutes, seconds),
//! so the API server's CEL `duration()` can compare values in validation rules and users who
//! know Kubernetes recognise it. There are no days: write `168h` for a week.

use std::{fmt, time};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// The regular expression every [`Duration`] matches (CEL and Rust agree on it).
pub const DURATION_PATTERN: &str = "^([0-9]{1,9}(h|m|s)){1,3}$";

/// A duration written as whole hours, minutes and seconds: `90s`, `10m`, `24h`, `1h30m`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Duration(String);

/// Why a string is not a [`Duration`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError {
    input: String,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a duration; write whole hours, minutes and seconds like 90s, 10m, 24h \
             or 1h30m",
            self.input
        )
    }
}

impl std::error::Error for DurationError {}

/// Parses `90s`, `10m`, `24h`, `1h30m` (units `h`, `m`, `s`; at most three groups).
pub fn parse_duration(input: &str) -> Result<time::Duration, DurationError> {
    let err = || DurationError {
        input: input.to_string(),
    };
    let (mut total, mut digits, mut groups) = (0u64, 0usize, 0usize);
    let mut value = 0u64;
    for c in input.chars() {
        if let Some(d) = c.to_digit(10) {
            digits += 1;
            value = value * 10 + u64::from(d);
            if digits > 9 {
                return Err(err());
            }
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(err()),
        };
        if digits == 0 {
            return Err(err());
        }
        total += value * unit;
        (value, digits, groups) = (0, 0, groups + 1);
    }
    if digits != 0 || groups == 0 || groups > 3 {
        return Err(err());
    }
    Ok(time::Duration::from_secs(total))
}

/// Writes a duration in the canonical form of this module (`1h30m`, `45s`, `0s`), rounding
/// down to whole seconds.
pub fn format_duration(d: time::Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    for (v, unit) in [(h, 'h'), (m, 'm'), (s, 's')] {
        if v > 0 {
            out.push_str(&format!("{v}{unit}"));
        }
    }
    if out.is_empty() {
        "0s".to_string()
    } else {
        out
    }
}

impl Duration {
    /// A duration from a literal known to be valid (for defaults); checked in debug builds.
    /// Use `str::parse` for anything else.
    pub fn from_static(s: &'static str) -> Self {
        debug_assert!(parse_duration(s).is_ok(), "{s} is not a duration");
        Self(s.to_string())
    }

    /// The duration as written in the manifest.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The parsed duration. Fails only for values the API server would have rejected.
    pub fn to_std(&self) -> Result<time::Duration, DurationError> {
        parse_duration(&self.0)
    }

    /// The parsed duration, or `fallback` if the value is invalid (which the schema prevents).
    pub fn to_std_or(&self, fallback: time::Duration) -> time::Duration {
        self.to_std().unwrap_or(fallback)
    }
}

impl From<time::Duration> for Duration {
    fn from(d: time::Duration) -> Self {
        Self(format_duration(d))
    }
}

impl std::str::FromStr for Duration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration(s).map(|_| Self(s.to_string()))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "maxLength": 32,
            "x-kubernetes-validations": [{
                "rule": format!("self.matches('{DURATION_PATTERN}')"),
                "message": "must be a duration of whole hours, minutes and seconds, like 90s, \
                            10m, 24h or 1h30m (no days: a week is 168h)",
            }],
        })
    }
}

/// A CEL rule (for `#[x_kube(validation = ...)]`) that bounds a [`Duration`] field. `field` is
/// the field's name as users write it; `min` and `max` are durations in this module's format.
pub fn duration_bounds(field: &str, min: &str, max: &str) -> kube::core::Rule {
    kube::core::Rule::new(format!(
        "!self.matches('{DURATION_PATTERN}') || \
         (duration(self) >= duration('{min}') && duration(self) <= duration('{max}'))"
    ))
    .message(kube::core::Message::Message(format!(
        "{field} must be between {min} and {max}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        let secs = |s: &str| parse_duration(s).map(|d| d.as_secs());
        assert_eq!(secs("5s"), Ok(5));
        assert_eq!(secs("10m"), Ok(600));
        assert_eq!(secs("24h"), Ok(86_400));
        assert_eq!(secs("1h30m"), Ok(5_400));
        assert_eq!(secs("1h1m1s"), Ok(3_661));
        assert_eq!(secs("0s"), Ok(0));
    }

    #[test]
    fn rejects_what_the_schema_rejects() {
        for bad in [
            "",
            "5",
            "m",
            "1d",
            "1.5h",
            "-1s",
            "1h 30m",
            "1h1m1s1s",
            "1234567890s",
        ] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.to_string().contains("like 90s, 10m, 24h"), "{err}");
        }
    }

    #[test]
    fn formats_canonically_and_round_trips() {
        for (secs, text) in [
            (0, "0s"),
            (45, "45s"),
            (5_400, "1h30m"),
            (90_061, "25h1m1s"),
        ] {
            let d = time::Duration::from_secs(secs);
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text), Ok(d));
        }
    }
}
