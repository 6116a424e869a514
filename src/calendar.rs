//! Civil dates and the embedded Taiwan government work calendar.
//!
//! Dates are proleptic Gregorian, counted as days since 1970-01-01 so that month ends, leap years and weekdays
//! come from integer arithmetic alone (no time-zone or date crate). The holiday table is the official calendar
//! for 2025-2026 as published by the Directorate-General of Personnel Administration, including the 2025
//! amendment to the commemoration-days act; outside those years callers fall back to Monday-Friday.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Taipei keeps UTC+8 all year (no daylight saving time).
const TAIPEI_OFFSET_SECS: i64 = 8 * 3600;

/// A valid calendar date.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    year: i32,
    month: u32,
    day: u32,
}

pub const WEEKDAY_NAMES: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

pub const MONTH_NAMES: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

pub fn is_leap_year(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

pub fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

impl Date {
    /// `None` unless the triple names a real day.
    pub fn new(year: i32, month: u32, day: u32) -> Option<Date> {
        if (1..=12).contains(&month) && day >= 1 && day <= days_in_month(year, month) {
            Some(Date { year, month, day })
        } else {
            None
        }
    }

    pub fn year(self) -> i32 {
        self.year
    }

    pub fn day(self) -> u32 {
        self.day
    }

    /// Days since 1970-01-01 (Howard Hinnant's days_from_civil).
    pub fn to_days(self) -> i64 {
        let y = i64::from(self.year) - i64::from(self.month <= 2);
        let m = i64::from(self.month);
        let d = i64::from(self.day);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12; // March = 0 so that the leap day ends the year
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// Inverse of [`Date::to_days`] (civil_from_days).
    pub fn from_days(days: i64) -> Date {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
        Date { year, month, day }
    }

    pub fn add_days(self, n: i64) -> Date {
        Date::from_days(self.to_days() + n)
    }

    /// 0 = Monday … 6 = Sunday; 1970-01-01 was a Thursday.
    pub fn weekday(self) -> usize {
        (self.to_days() + 3).rem_euclid(7) as usize
    }

    pub fn weekday_name(self) -> &'static str {
        WEEKDAY_NAMES[self.weekday()]
    }

    pub fn month_name(self) -> &'static str {
        MONTH_NAMES[self.month as usize - 1]
    }

    pub fn is_weekend(self) -> bool {
        self.weekday() >= 5
    }

    pub fn last_of_month(self) -> Date {
        Date {
            day: days_in_month(self.year, self.month),
            ..self
        }
    }

    /// Strict `YYYY-MM-DD`: four-digit year, two-digit month and day, and a day that exists.
    pub fn parse(s: &str) -> Result<Date, String> {
        let b = s.as_bytes();
        let shape_ok = b.len() == 10
            && b[4] == b'-'
            && b[7] == b'-'
            && b.iter()
                .enumerate()
                .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
        if !shape_ok {
            return Err(format!(
                "startDate must be a date in YYYY-MM-DD format, e.g. 2025-11-01 (got \"{s}\")"
            ));
        }
        let num = |r: std::ops::Range<usize>| s[r].parse::<u32>().unwrap_or(0);
        let (year, month, day) = (num(0..4) as i32, num(5..7), num(8..10));
        Date::new(year, month, day)
            .ok_or_else(|| format!("startDate {s} is not a real calendar date"))
    }

    /// Today's date in Asia/Taipei for the given instant.
    pub fn taipei_today(now: SystemTime) -> Date {
        let secs = match now.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => -(e.duration().as_secs() as i64) - 1,
        };
        Date::from_days((secs + TAIPEI_OFFSET_SECS).div_euclid(86_400))
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// What the official calendar says about a day that differs from the Monday-Friday default, or names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A day off (national holiday, observed holiday, bridge day); may also fall on a weekend.
    Holiday,
    /// A Saturday worked to make up for a bridge day.
    MakeUpWorkday,
}

#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub date: (i32, u32, u32),
    pub kind: Kind,
    pub name: &'static str,
}

const fn off(y: i32, m: u32, d: u32, name: &'static str) -> Entry {
    Entry {
        date: (y, m, d),
        kind: Kind::Holiday,
        name,
    }
}

/// Years for which [`ENTRIES`] is the complete official calendar.
pub const FIRST_COVERED_YEAR: i32 = 2025;
pub const LAST_COVERED_YEAR: i32 = 2026;

/// Sorted by date (a unit test checks it); looked up by binary search.
#[rustfmt::skip]
static ENTRIES: &[Entry] = &[
    off(2025, 1, 1, "Founding Day / New Year's Day (開國紀念日)"),
    off(2025, 1, 27, "Day before Lunar New Year's Eve (小年夜)"),
    off(2025, 1, 28, "Lunar New Year's Eve (農曆除夕)"),
    off(2025, 1, 29, "Lunar New Year (春節)"),
    off(2025, 1, 30, "Lunar New Year (春節)"),
    off(2025, 1, 31, "Lunar New Year (春節)"),
    Entry {
        date: (2025, 2, 8),
        kind: Kind::MakeUpWorkday,
        name: "Make-up working day (補行上班)",
    },
    off(2025, 2, 28, "Peace Memorial Day (和平紀念日)"),
    off(2025, 4, 3, "Children's Day, observed (補假)"),
    off(2025, 4, 4, "Children's Day and Tomb-Sweeping Day (兒童節及民族掃墓節)"),
    off(2025, 5, 30, "Dragon Boat Festival, observed (補假)"),
    off(2025, 5, 31, "Dragon Boat Festival (端午節)"),
    off(2025, 9, 29, "Teachers' Day, observed (補假)"),
    off(2025, 10, 6, "Mid-Autumn Festival (中秋節)"),
    off(2025, 10, 10, "National Day (國慶日)"),
    off(2025, 10, 24, "Taiwan Retrocession Day, observed (補假)"),
    off(2025, 12, 25, "Constitution Day (行憲紀念日)"),
    off(2026, 1, 1, "Founding Day / New Year's Day (開國紀念日)"),
    off(2026, 2, 15, "Day before Lunar New Year's Eve (小年夜)"),
    off(2026, 2, 16, "Lunar New Year's Eve (農曆除夕)"),
    off(2026, 2, 17, "Lunar New Year (春節)"),
    off(2026, 2, 18, "Lunar New Year (春節)"),
    off(2026, 2, 19, "Lunar New Year (春節)"),
    off(2026, 2, 20, "Lunar New Year, observed (補假)"),
    off(2026, 2, 27, "Peace Memorial Day, observed (補假)"),
    off(2026, 2, 28, "Peace Memorial Day (和平紀念日)"),
    off(2026, 4, 3, "Children's Day, observed (補假)"),
    off(2026, 4, 4, "Children's Day (兒童節)"),
    off(2026, 4, 5, "Tomb-Sweeping Day (清明節)"),
    off(2026, 4, 6, "Tomb-Sweeping Day, observed (補假)"),
    off(2026, 5, 1, "Labor Day (勞動節)"),
    off(2026, 6, 19, "Dragon Boat Festival (端午節)"),
    off(2026, 9, 25, "Mid-Autumn Festival (中秋節)"),
    off(2026, 9, 28, "Teachers' Day (教師節)"),
    off(2026, 10, 9, "National Day, observed (補假)"),
    off(2026, 10, 10, "National Day (國慶日)"),
    off(2026, 10, 25, "Taiwan Retrocession Day (臺灣光復節)"),
    off(2026, 10, 26, "Taiwan Retrocession Day, observed (補假)"),
    off(2026, 12, 25, "Constitution Day (行憲紀念日)"),
];

pub fn is_covered_year(year: i32) -> bool {
    (FIRST_COVERED_YEAR..=LAST_COVERED_YEAR).contains(&year)
}

/// The official calendar's entry for this day, if it has one.
pub fn entry(date: Date) -> Option<&'static Entry> {
    let key = (date.year, date.month, date.day);
    ENTRIES
        .binary_search_by(|e| e.date.cmp(&key))
        .ok()
        .map(|i| &ENTRIES[i])
}

/// The calendar entry decides when there is one; otherwise Monday-Friday work.
pub fn is_working_day(date: Date) -> bool {
    match entry(date) {
        Some(e) => e.kind == Kind::MakeUpWorkday,
        None => !date.is_weekend(),
    }
}

/// Working days in `from..=to`.
pub fn working_days(from: Date, to: Date) -> u32 {
    (from.to_days()..=to.to_days())
        .filter(|&d| is_working_day(Date::from_days(d)))
        .count() as u32
}

/// Named days off in `from..=to`, in date order (make-up workdays are not days off).
pub fn holidays_between(from: Date, to: Date) -> Vec<(Date, &'static Entry)> {
    (from.to_days()..=to.to_days())
        .map(Date::from_days)
        .filter_map(|d| entry(d).map(|e| (d, e)))
        .filter(|(_, e)| e.kind == Kind::Holiday)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn d(s: &str) -> Date {
        Date::parse(s).unwrap()
    }

    #[test]
    fn days_round_trip_and_known_anchors() {
        assert_eq!(d("1970-01-01").to_days(), 0);
        assert_eq!(d("2000-03-01").to_days(), 11_017);
        assert_eq!(d("2024-02-29").to_days(), 19_782);
        assert_eq!(Date::from_days(-1), d("1969-12-31"));
        for days in -800_000..800_000i64 {
            if days % 997 == 0 || (19_000..21_000).contains(&days) {
                assert_eq!(Date::from_days(days).to_days(), days);
            }
        }
    }

    #[test]
    fn weekdays() {
        let cases = [
            ("1970-01-01", "Thursday"),
            ("2024-10-31", "Thursday"),
            ("2025-02-08", "Saturday"),
            ("2025-10-06", "Monday"),
            ("2025-10-10", "Friday"),
            ("2026-02-15", "Sunday"),
        ];
        for (date, name) in cases {
            assert_eq!(d(date).weekday_name(), name, "{date}");
        }
    }

    #[test]
    fn month_lengths_and_leap_years() {
        let cases = [
            (2024, 2, 29),
            (2025, 2, 28),
            (2000, 2, 29),
            (1900, 2, 28),
            (2025, 4, 30),
            (2025, 12, 31),
        ];
        for (y, m, n) in cases {
            assert_eq!(days_in_month(y, m), n, "{y}-{m}");
        }
        assert_eq!(d("2024-10-31").add_days(29), d("2024-11-29"));
        assert_eq!(d("2024-12-31").add_days(1), d("2025-01-01"));
    }

    #[test]
    fn parse_rejects_bad_shapes_and_impossible_days() {
        let bad = [
            "",
            "2025-1-01",
            "2025/10/01",
            "20251001",
            "2025-10-1",
            "2025-10-01T00:00",
            "２０２５-10-01",
            "2025-13-01",
            "2025-00-10",
            "2025-02-29",
            "2025-04-31",
            "2025-10-00",
        ];
        for s in bad {
            assert!(Date::parse(s).is_err(), "{s:?} should be rejected");
        }
        assert_eq!(d("2024-02-29").to_string(), "2024-02-29");
        assert!(Date::parse("2025-1x-01")
            .unwrap_err()
            .contains("YYYY-MM-DD"));
        assert!(Date::parse("2025-02-30")
            .unwrap_err()
            .contains("not a real calendar date"));
    }

    #[test]
    fn taipei_today_is_utc_plus_8() {
        let at = |secs: u64| Date::taipei_today(UNIX_EPOCH + Duration::from_secs(secs));
        // 2025-09-30T15:59:59Z is 23:59:59 in Taipei; one second later it is 1 October there.
        let base = d("2025-09-30").to_days() as u64 * 86_400;
        assert_eq!(at(base + 15 * 3600 + 3599), d("2025-09-30"));
        assert_eq!(at(base + 16 * 3600), d("2025-10-01"));
        assert_eq!(at(0), d("1970-01-01"));
    }

    #[test]
    fn table_is_sorted_valid_and_only_covered_years() {
        for w in ENTRIES.windows(2) {
            assert!(
                w[0].date < w[1].date,
                "{:?} before {:?}",
                w[0].date,
                w[1].date
            );
        }
        for e in ENTRIES {
            let (y, m, day) = e.date;
            assert!(Date::new(y, m, day).is_some(), "{:?}", e.date);
            assert!(is_covered_year(y));
        }
    }

    #[test]
    fn working_day_rules() {
        let cases = [
            ("2025-01-01", false), // New Year's Day, Wednesday
            ("2025-01-27", false),
            ("2025-01-31", false),
            ("2025-02-03", true),
            ("2025-02-08", true), // make-up working Saturday
            ("2025-02-09", false),
            ("2025-02-28", false),
            ("2025-04-03", false),
            ("2025-05-01", true), // not a day off for the 2025 government calendar
            ("2025-09-29", false), // 2025 amendment
            ("2025-10-06", false),
            ("2025-10-10", false),
            ("2025-10-24", false), // 2025 amendment
            ("2025-12-25", false), // 2025 amendment
            ("2026-02-20", false),
            ("2026-02-27", false),
            ("2026-04-06", false),
            ("2026-05-01", false),
            ("2026-10-26", false),
            ("2026-10-27", true),
            ("2027-01-01", true), // outside the table: Monday-Friday only
            ("2024-10-10", true),
            ("2024-10-12", false),
        ];
        for (date, working) in cases {
            assert_eq!(is_working_day(d(date)), working, "{date}");
        }
    }

    #[test]
    fn october_2025_window_lists_holidays_and_adds_up_to_30() {
        let (from, to) = (d("2025-10-01"), d("2025-10-30"));
        let holidays = holidays_between(from, to);
        let dates: Vec<String> = holidays.iter().map(|(d, _)| d.to_string()).collect();
        assert_eq!(dates, ["2025-10-06", "2025-10-10", "2025-10-24"]);
        assert!(holidays[0].1.name.contains("Mid-Autumn"));
        assert!(holidays[1].1.name.contains("National Day"));
        let weekday_holidays = holidays.iter().filter(|(d, _)| !d.is_weekend()).count() as u32;
        let weekend_days = (from.to_days()..=to.to_days())
            .filter(|&n| Date::from_days(n).is_weekend())
            .count() as u32;
        let working = working_days(from, to);
        assert_eq!(working, 19);
        assert_eq!(working + weekday_holidays + weekend_days, 30);
    }

    #[test]
    fn make_up_workday_counts_and_is_not_listed_as_holiday() {
        let (from, to) = (d("2025-02-03"), d("2025-02-09"));
        assert_eq!(working_days(from, to), 6);
        assert!(holidays_between(from, to).is_empty());
    }
}
