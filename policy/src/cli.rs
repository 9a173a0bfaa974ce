//! The duration syntax of the operator's and the sidecar's command-line flags.
//!
//! Flags take `250ms`, `10s`, `2m`, `1h`, or a bare number of seconds. Manifests use the
//! stricter whole-unit format of `palisade_crds::duration` (no milliseconds), which CEL can
//! compare; flags need sub-second values (timeouts, report intervals) and are never seen by
//! the API server.

use std::time::Duration;

/// Parses `250ms`, `10s`, `2m`, `1h` (a bare number is seconds). The error names the value
/// and says what is accepted; clap prints it after the flag's name.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 10s or 500ms"))?;
    let secs = |mul: u64| {
        n.checked_mul(mul)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("`{s}` is too long"))
    };
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        _ => Err(format!("`{s}`: unknown unit `{unit}`; use ms, s, m or h")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_unit_and_bare_seconds() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration(" 10s "), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(
            parse_duration("8760h"),
            Ok(Duration::from_secs(8760 * 3600))
        );
    }

    #[test]
    fn rejects_with_a_message_that_says_what_to_write() {
        let err = |s| parse_duration(s).expect_err(s);
        assert!(
            err("2 weeks").contains("unknown unit ` weeks`"),
            "{}",
            err("2 weeks")
        );
        assert!(err("1d").contains("use ms, s, m or h"));
        assert!(err("s").contains("not a duration like 10s"));
        assert!(err("").contains("not a duration like 10s"));
        assert!(err("-1s").contains("not a duration like 10s"));
        assert!(err("99999999999999999h").contains("too long"));
    }
}
