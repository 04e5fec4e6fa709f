//! Times as results write them: RFC 3339 in UTC with microseconds
//! (`2026-12-02T13:04:05.123456Z`), from and to seconds since the Unix epoch (what the
//! journal keeps). Written into a buffer on the stack, one per row of a results file, so a
//! consolidation of millions of rows pays no formatting machinery for it.

/// The length of a time as [`format_rfc3339`] writes it.
pub const RFC3339_LEN: usize = 27;

/// Seconds since the Unix epoch as RFC 3339 in UTC, to the microsecond (rounded to the
/// nearest); `None` for a time that is not finite or not within the years 0000 to 9999.
pub fn format_rfc3339(seconds: f64) -> Option<String> {
    let mut buffer = [0u8; RFC3339_LEN];
    let text = write_rfc3339(seconds, &mut buffer)?;
    Some(text.to_owned())
}

/// [`format_rfc3339`] into `buffer`, returning the text written.
pub fn write_rfc3339(seconds: f64, buffer: &mut [u8; RFC3339_LEN]) -> Option<&str> {
    /// 0000-01-01 and 10000-01-01, in seconds since the Unix epoch.
    const FIRST: f64 = -62_167_219_200.0;
    const END: f64 = 253_402_300_800.0;
    if !seconds.is_finite() || !(FIRST..END).contains(&seconds) {
        return None;
    }
    let micros = (seconds * 1e6).round();
    // Within the range above, |micros| < 2^63: the cast is exact.
    let micros = micros as i64;
    let (secs, micro) = (micros.div_euclid(1_000_000), micros.rem_euclid(1_000_000));
    let (days, of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        return None;
    }
    let fields: [(usize, i64, usize); 7] = [
        (0, year, 4),
        (5, i64::from(month), 2),
        (8, i64::from(day), 2),
        (11, of_day / 3600, 2),
        (14, of_day / 60 % 60, 2),
        (17, of_day % 60, 2),
        (20, micro, 6),
    ];
    buffer.copy_from_slice(b"0000-00-00T00:00:00.000000Z");
    for (at, mut value, width) in fields {
        for place in buffer[at..at + width].iter_mut().rev() {
            // A digit: `value % 10` is within 0..10.
            *place = b'0' + u8::try_from(value % 10).unwrap_or(0);
            value /= 10;
        }
    }
    std::str::from_utf8(buffer).ok()
}

/// A time as [`format_rfc3339`] writes it (`Z` or `+00:00`, any number of fraction digits)
/// back in seconds since the Unix epoch; `None` for anything else.
pub fn parse_rfc3339(text: &str) -> Option<f64> {
    let text = text.strip_suffix('Z').or_else(|| text.strip_suffix("+00:00"))?;
    let (date, time) = text.split_once('T')?;
    let mut date = date.splitn(3, '-').map(|n| n.parse::<i64>().ok());
    let (year, month, day) = (date.next()??, date.next()??, date.next()??);
    let (time, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut time = time.splitn(3, ':').map(|n| n.parse::<i64>().ok());
    let (hour, minute, second) = (time.next()??, time.next()??, time.next()??);
    let valid = (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && (0..24).contains(&hour)
        && (0..60).contains(&minute)
        && (0..=60).contains(&second)
        && fraction.bytes().all(|b| b.is_ascii_digit());
    if !valid {
        return None;
    }
    let fraction: f64 = if fraction.is_empty() { 0.0 } else { format!("0.{fraction}").parse().ok()? };
    let month = u32::try_from(month).ok()?;
    let day = u32::try_from(day).ok()?;
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    Some(seconds as f64 + fraction)
}

/// The proleptic Gregorian date of `days` since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`: eras of 400 years starting on March 1st, so the leap day ends a year).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March first
    let day = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, u32::try_from(month).unwrap_or(1), u32::try_from(day).unwrap_or(1))
}

/// The days since 1970-01-01 of a proleptic Gregorian date (the inverse of
/// [`civil_from_days`]).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400); // [0, 399]
    let mp = i64::from(if month > 2 { month - 3 } else { month + 9 }); // [0, 11]
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
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
        // 1900-03-01 to 2300-03-01: every kind of year boundary and leap rule.
        for days in -25_508..120_592 {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
            let text = format_rfc3339(days as f64 * 86_400.0).unwrap();
            assert_eq!(text[..10], format!("{y:04}-{m:02}-{d:02}"));
        }
    }

    #[test]
    fn other_text_is_not_a_time() {
        for text in ["", "2026-12-02", "2026-12-02T13:04:05", "2026-13-02T13:04:05Z", "2026-12-02T13:04:05.1xZ", "x"] {
            assert_eq!(parse_rfc3339(text), None, "{text}");
        }
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01+00:00"), Some(1.0));
    }
}
