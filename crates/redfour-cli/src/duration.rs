//! Durations as typed on a command line: `500ms`, `10s`, `2m`, `1h`, or a bare integer of
//! milliseconds.

use std::time::Duration;

/// Parses a duration: an unsigned decimal integer followed by `ms`, `s`, `m` or `h`, or by
/// nothing (milliseconds, Node redfour's unit).
///
/// Zero is accepted here; whether it makes sense is up to the flag (a ttl of zero does not).
/// Signs, fractions, spaces and overflowing values are rejected with a reason meant to follow
/// "invalid --flag `text`: ".
pub fn parse(text: &str) -> Result<Duration, String> {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(if text.starts_with('-') {
            "durations cannot be negative".to_owned()
        } else {
            "expected a number with an optional unit: 500ms, 10s, 2m, 1h, or milliseconds"
                .to_owned()
        });
    }
    let millis_per_unit: u64 = match unit {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        other => {
            return Err(format!(
                "unknown unit `{other}` (use ms, s, m or h; a bare number means milliseconds)"
            ))
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(millis_per_unit))
        .map(Duration::from_millis)
        .ok_or_else(|| "the duration is too large".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever is typed, the parser answers; it never panics.
        #[test]
        fn never_panics(text in any::<String>()) {
            let _ = parse(&text);
        }

        #[test]
        fn reads_every_unit(
            n in 0u64..10_000_000,
            (unit, factor) in prop::sample::select(vec![
                ("", 1u64), ("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000),
            ]),
        ) {
            prop_assert_eq!(parse(&format!("{n}{unit}")), Ok(Duration::from_millis(n * factor)));
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn accepts_every_unit() {
        assert_eq!(parse("500ms"), Ok(ms(500)));
        assert_eq!(parse("10s"), Ok(ms(10_000)));
        assert_eq!(parse("2m"), Ok(ms(120_000)));
        assert_eq!(parse("1h"), Ok(ms(3_600_000)));
        assert_eq!(parse("250"), Ok(ms(250)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        assert_eq!(parse("007s"), Ok(ms(7_000)));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "", "ms", "s", "abc", "10x", "10 s", " 10s", "10s ", "1.5s", "1e3", "+5", "10S",
            "10sec", "5ms5", "0x10", "١٠", "10µs",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn rejects_negative_with_a_clear_reason() {
        let err = parse("-5s").unwrap_err();
        assert!(err.contains("negative"), "{err}");
        assert!(parse("-1").is_err());
    }

    #[test]
    fn rejects_overflow() {
        assert!(parse("18446744073709551615").is_ok());
        assert!(parse("18446744073709551616").is_err());
        let err = parse("18446744073709551615h").unwrap_err();
        assert!(err.contains("too large"), "{err}");
        assert!(parse("99999999999999999999999999ms").is_err());
    }
}
