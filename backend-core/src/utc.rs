//! Times as results write them: RFC 3339 in UTC with microseconds
//! (`2026-12-02T13:04:05.123456Z`), from and to seconds since the Unix epoch (what the
//! journal keeps). One string per row of a results file, formatted by the `time` crate from
//! a description parsed at compile time.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::OffsetDateTime;

/// Seconds since the Unix epoch as RFC 3339 in UTC, to the microsecond (rounded to the
/// nearest); `None` for a time that is not finite or not within the years 0000 to 9999.
pub fn format_rfc3339(seconds: f64) -> Option<String> {
    /// 0000-01-01 and 10000-01-01, in seconds since the Unix epoch.
    const FIRST: f64 = -62_167_219_200.0;
    const END: f64 = 253_402_300_800.0;
    let micros = (seconds * 1e6).round();
    if !micros.is_finite() || !(FIRST * 1e6..END * 1e6).contains(&micros) {
        return None;
    }
    // Within the range above, |micros| < 2^63: the cast is exact.
    let nanos = i128::from(micros as i64) * 1000;
    let at = OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()?;
    at.format(format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z")).ok()
}

/// An RFC 3339 time (as [`format_rfc3339`] writes it, or with another offset or number of
/// fraction digits) in seconds since the Unix epoch; `None` for anything else.
pub fn parse_rfc3339(text: &str) -> Option<f64> {
    let at = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    Some(at.unix_timestamp() as f64 + f64::from(at.nanosecond()) / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_times_are_written_as_rfc3339_utc() {
        let cases = [
            (0.0, "1970-01-01T00:00:00.000000Z"),
            (1.5, "1970-01-01T00:00:01.500000Z"),
            (-1.0, "1969-12-31T23:59:59.000000Z"),
            // `date -u -d @951782400`: a leap day of a year divisible by 400.
            (951_782_400.0, "2000-02-29T00:00:00.000000Z"),
            (951_868_800.0, "2000-03-01T00:00:00.000000Z"),
            // 2100 is no leap year: February 28th is followed by March 1st.
            (4_107_456_000.0, "2100-02-28T00:00:00.000000Z"),
            (4_107_542_400.0, "2100-03-01T00:00:00.000000Z"),
            // A leap day of an ordinary leap year, and the last second of a year.
            (1_709_164_800.0, "2024-02-29T00:00:00.000000Z"),
            (1_735_689_599.0, "2024-12-31T23:59:59.000000Z"),
            (1_796_216_645.123_456, "2026-12-02T13:04:05.123456Z"),
            (-62_135_596_800.0, "0001-01-01T00:00:00.000000Z"),
            (253_402_300_799.0, "9999-12-31T23:59:59.000000Z"),
        ];
        for (seconds, text) in cases {
            assert_eq!(format_rfc3339(seconds).as_deref(), Some(text), "{seconds}");
            let back = parse_rfc3339(text).unwrap();
            assert!((back - seconds).abs() < 1e-6, "{text} read back as {back}, not {seconds}");
        }
    }

    #[test]
    fn microseconds_round_and_carry_into_the_second() {
        assert_eq!(format_rfc3339(59.999_999_7).as_deref(), Some("1970-01-01T00:01:00.000000Z"));
        assert_eq!(format_rfc3339(0.000_000_4).as_deref(), Some("1970-01-01T00:00:00.000000Z"));
        assert_eq!(format_rfc3339(-0.000_000_4).as_deref(), Some("1970-01-01T00:00:00.000000Z"));
    }

    #[test]
    fn times_outside_four_digit_years_are_none() {
        for seconds in [f64::NAN, f64::INFINITY, -f64::INFINITY, 253_402_300_800.0, -62_167_219_201.0, 1e300] {
            assert_eq!(format_rfc3339(seconds), None, "{seconds}");
        }
    }

    #[test]
    fn every_day_of_four_centuries_reads_back() {
        // 1900-03-01 to 2300-03-01, at noon: every kind of year boundary and leap rule.
        for days in -25_508i64..120_592 {
            let seconds = (days * 86_400 + 43_200) as f64;
            let text = format_rfc3339(seconds).unwrap();
            assert_eq!(parse_rfc3339(&text), Some(seconds), "{text}");
        }
    }

    #[test]
    fn other_text_is_not_a_time() {
        for text in ["", "2026-12-02", "2026-12-02T13:04:05", "2026-13-02T13:04:05Z", "2026-12-02T13:04:05.1xZ", "x"] {
            assert_eq!(parse_rfc3339(text), None, "{text}");
        }
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01+00:00"), Some(1.0));
        assert_eq!(parse_rfc3339("1970-01-01T01:00:01+01:00"), Some(1.0));
    }
}
