//! Civil dates and the embedded Taiwan government work calendar.
//!
//! Dates are proleptic Gregorian, counted as days since 1970-01-01 so that month ends, leap years and weekdays
//! come from integer arithmetic alone (no time-zone or date crate). The official calendars of the Directorate-General
//! of Personnel Administration are data: one text file per year under `src/calendar/`, embedded at compile time and
//! parsed once; outside the embedded years callers fall back to Monday-Friday.

use std::fmt;
use std::sync::OnceLock;
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub date: Date,
    pub kind: Kind,
    pub name: &'static str,
}

/// The official calendars, one file per year (`src/calendar/<year>.txt`), embedded at compile time. Adding a year
/// is one file here and its line in the `year_files_match_the_official_counts` test.
const YEAR_FILES: &[(i32, &str, &str)] = &[
    (2025, "calendar/2025.txt", include_str!("calendar/2025.txt")),
    (2026, "calendar/2026.txt", include_str!("calendar/2026.txt")),
    (2027, "calendar/2027.txt", include_str!("calendar/2027.txt")),
];

const WEEKDAY_ABBREVIATIONS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// Parses one year's file: `date weekday kind name` lines, `#` comments and blank lines. Every date must be a real
/// day of `year`, carry its true weekday, come after the line before it, and a make-up working day must fall on a
/// weekend (a weekday is a working day already).
pub fn parse_year(year: i32, file: &str, text: &'static str) -> Result<Vec<Entry>, String> {
    let mut out: Vec<Entry> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |why: String| format!("{file} line {}: {why}", index + 1);
        let mut rest = line;
        let mut field = || {
            let (token, tail) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            rest = tail.trim_start();
            token
        };
        let (date, weekday, kind) = (field(), field(), field());
        let name = rest.trim_end();
        let date = Date::parse(date)
            .map_err(|_| at(format!("{date:?} is not a real date written YYYY-MM-DD")))?;
        if date.year() != year {
            return Err(at(format!("{date} is not in {year}")));
        }
        let actual = WEEKDAY_ABBREVIATIONS[date.weekday()];
        if weekday != actual {
            return Err(at(format!(
                "{date} is a {actual}, not {weekday:?} (write the weekday as Mon..Sun)"
            )));
        }
        let kind = match kind {
            "off" => Kind::Holiday,
            "work" if date.is_weekend() => Kind::MakeUpWorkday,
            "work" => {
                return Err(at(format!(
                    "{date} is a {actual}: a make-up working day falls on a weekend"
                )))
            }
            other => {
                return Err(at(format!(
                    "unknown kind {other:?}: use off (day off) or work (make-up working day)"
                )))
            }
        };
        if name.is_empty() {
            return Err(at(format!("{date} has no name")));
        }
        if let Some(last) = out.last() {
            if last.date >= date {
                return Err(at(format!(
                    "{date} comes after {}: keep the dates in order, each once",
                    last.date
                )));
            }
        }
        out.push(Entry { date, kind, name });
    }
    if out.is_empty() {
        return Err(format!("{file}: no entries"));
    }
    Ok(out)
}

struct Calendar {
    years: Vec<i32>,
    /// Sorted by date; looked up by binary search.
    entries: Vec<Entry>,
}

fn parse_all() -> Result<Calendar, String> {
    let mut years = Vec::new();
    let mut entries = Vec::new();
    for &(year, file, text) in YEAR_FILES {
        if years.last().is_some_and(|&last| last >= year) {
            return Err(format!("{file}: list the year files in order, each once"));
        }
        years.push(year);
        entries.extend(parse_year(year, file, text)?);
    }
    Ok(Calendar { years, entries })
}

static CALENDAR: OnceLock<Calendar> = OnceLock::new();

fn calendar() -> &'static Calendar {
    CALENDAR.get_or_init(|| parse_all().unwrap_or_else(|e| panic!("embedded calendar: {e}")))
}

/// Parses the embedded calendars now, so that a broken file stops the server at start rather than mid-request.
pub fn load() -> Result<(), String> {
    if CALENDAR.get().is_none() {
        let parsed = parse_all().map_err(|e| format!("embedded calendar: {e}"))?;
        let _ = CALENDAR.set(parsed);
    }
    Ok(())
}

/// The years whose official calendar is embedded, ascending.
pub fn covered_years() -> &'static [i32] {
    &calendar().years
}

/// "2025-2027" for consecutive years, else "2025, 2027".
pub fn covered_years_text() -> String {
    let years = covered_years();
    match (years.first(), years.last()) {
        (Some(first), Some(last))
            if (last - first) as usize + 1 == years.len() && first != last =>
        {
            format!("{first}-{last}")
        }
        _ => years
            .iter()
            .map(i32::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

pub fn is_covered_year(year: i32) -> bool {
    covered_years().binary_search(&year).is_ok()
}

/// The official calendar's entry for this day, if it has one.
pub fn entry(date: Date) -> Option<&'static Entry> {
    let entries = &calendar().entries;
    entries
        .binary_search_by(|e| e.date.cmp(&date))
        .ok()
        .map(|i| &entries[i])
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
pub fn holidays_between(from: Date, to: Date) -> Vec<&'static Entry> {
    let entries = &calendar().entries;
    let start = entries.partition_point(|e| e.date < from);
    entries[start..]
        .iter()
        .take_while(|e| e.date <= to)
        .filter(|e| e.kind == Kind::Holiday)
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

    /// Per year: named entries, days off on a weekday, days off on a weekend, make-up working days, and the
    /// working days of the whole year. A new year's file gets one line here, with the counts of its announcement.
    #[test]
    fn year_files_match_the_official_counts() {
        let expected = [
            (2025, 17, 15, 1, 1, 247),
            (2026, 22, 16, 6, 0, 245),
            (2027, 24, 17, 7, 0, 244),
        ];
        assert_eq!(
            covered_years(),
            expected.iter().map(|e| e.0).collect::<Vec<_>>(),
            "every year file needs its line here"
        );
        for (year, named, weekday_off, weekend_off, make_up, working) in expected {
            let (first, last) = (
                Date::new(year, 1, 1).unwrap(),
                Date::new(year, 12, 31).unwrap(),
            );
            let entries: Vec<&Entry> = calendar()
                .entries
                .iter()
                .filter(|e| e.date.year() == year)
                .collect();
            let count = |f: &dyn Fn(&Entry) -> bool| entries.iter().filter(|e| f(e)).count();
            assert_eq!(entries.len(), named, "{year}: entries");
            assert_eq!(
                count(&|e| e.kind == Kind::Holiday && !e.date.is_weekend()),
                weekday_off,
                "{year}: days off on a weekday"
            );
            assert_eq!(
                count(&|e| e.kind == Kind::Holiday && e.date.is_weekend()),
                weekend_off,
                "{year}: holidays on a weekend"
            );
            assert_eq!(
                count(&|e| e.kind == Kind::MakeUpWorkday),
                make_up,
                "{year}: make-up days"
            );
            // Working days = weekdays - weekday days off + make-up Saturdays, counted day by day.
            let weekdays = (first.to_days()..=last.to_days())
                .filter(|&n| !Date::from_days(n).is_weekend())
                .count();
            assert_eq!(
                weekdays - weekday_off + make_up,
                working,
                "{year}: arithmetic"
            );
            assert_eq!(
                working_days(first, last) as usize,
                working,
                "{year}: working days"
            );
        }
    }

    #[test]
    fn entries_are_sorted_valid_and_only_in_covered_years() {
        let entries = &calendar().entries;
        for w in entries.windows(2) {
            assert!(w[0].date < w[1].date, "{} before {}", w[0].date, w[1].date);
        }
        for e in entries {
            assert!(is_covered_year(e.date.year()), "{}", e.date);
            assert!(!e.name.is_empty());
        }
        assert!(load().is_ok());
        assert!(!is_covered_year(2024) && !is_covered_year(2028));
        assert_eq!(covered_years_text(), "2025-2027");
    }

    /// Every 2027 date of the DGPA announcement (issue text), with its weekday worked out here rather than taken
    /// from the file: the file's weekday column is checked by the parser against the same arithmetic.
    #[test]
    fn calendar_2027_is_the_announced_one() {
        let weekday_off = [
            ("2027-01-01", "Friday", "Founding Day"),
            ("2027-02-04", "Thursday", "Day before Lunar New Year's Eve"),
            ("2027-02-05", "Friday", "Lunar New Year's Eve"),
            ("2027-02-08", "Monday", "Lunar New Year"),
            ("2027-02-09", "Tuesday", "Lunar New Year, observed"),
            ("2027-02-10", "Wednesday", "Lunar New Year, observed"),
            ("2027-03-01", "Monday", "Peace Memorial Day, observed"),
            ("2027-04-05", "Monday", "Tomb-Sweeping Day"),
            ("2027-04-06", "Tuesday", "Children's Day, observed"),
            ("2027-04-30", "Friday", "Labor Day, observed"),
            ("2027-06-09", "Wednesday", "Dragon Boat Festival"),
            ("2027-09-15", "Wednesday", "Mid-Autumn Festival"),
            ("2027-09-28", "Tuesday", "Teachers' Day"),
            ("2027-10-11", "Monday", "National Day, observed"),
            ("2027-10-25", "Monday", "Taiwan Retrocession Day"),
            ("2027-12-24", "Friday", "Constitution Day, observed"),
            ("2027-12-31", "Friday", "Founding Day, observed"),
        ];
        let weekend_holidays = [
            ("2027-02-06", "Saturday", "Lunar New Year"),
            ("2027-02-07", "Sunday", "Lunar New Year"),
            ("2027-02-28", "Sunday", "Peace Memorial Day"),
            ("2027-04-04", "Sunday", "Children's Day"),
            ("2027-05-01", "Saturday", "Labor Day"),
            ("2027-10-10", "Sunday", "National Day"),
            ("2027-12-25", "Saturday", "Constitution Day"),
        ];
        for (date, weekday, name) in weekday_off.iter().chain(&weekend_holidays) {
            let day = d(date);
            assert_eq!(day.weekday_name(), *weekday, "{date}");
            let e = entry(day).unwrap_or_else(|| panic!("{date} is missing"));
            assert_eq!(e.kind, Kind::Holiday, "{date}");
            assert!(e.name.starts_with(name), "{date}: {}", e.name);
            assert!(!is_working_day(day), "{date}");
        }
        // Nothing else in 2027 is named, and no Saturday is worked.
        let listed: Vec<Date> = holidays_between(d("2027-01-01"), d("2027-12-31"))
            .iter()
            .map(|e| e.date)
            .collect();
        let mut announced: Vec<Date> = weekday_off
            .iter()
            .chain(&weekend_holidays)
            .map(|(date, _, _)| d(date))
            .collect();
        announced.sort();
        assert_eq!(listed, announced);
        let saturdays_worked = (d("2027-01-01").to_days()..=d("2027-12-31").to_days())
            .map(Date::from_days)
            .filter(|day| day.is_weekend() && is_working_day(*day))
            .count();
        assert_eq!(saturdays_worked, 0);
        // The weekdays around the Lunar New Year block are ordinary working days.
        for date in [
            "2027-02-03",
            "2027-02-11",
            "2027-03-02",
            "2027-04-07",
            "2027-04-29",
        ] {
            assert!(is_working_day(d(date)), "{date}");
        }
    }

    #[test]
    fn year_file_parser_rejects_each_mistake() {
        let cases = [
            (
                "2027-02-30  Tue  off  X",
                "line 1: \"2027-02-30\" is not a real date",
            ),
            (
                "2027-01-01  Thu  off  X",
                "line 1: 2027-01-01 is a Fri, not \"Thu\"",
            ),
            (
                "2026-12-31  Thu  off  X",
                "line 1: 2026-12-31 is not in 2027",
            ),
            (
                "2027-01-01  Fri  holiday  X",
                "line 1: unknown kind \"holiday\"",
            ),
            (
                "2027-01-04  Mon  work  X",
                "a make-up working day falls on a weekend",
            ),
            ("2027-01-01  Fri  off", "line 1: 2027-01-01 has no name"),
            (
                "# c\n2027-01-02  Sat  off  A\n2027-01-01  Fri  off  B",
                "line 3: 2027-01-01 comes after 2027-01-02",
            ),
            (
                "2027-01-01  Fri  off  A\n2027-01-01  Fri  off  B",
                "line 2: 2027-01-01 comes after 2027-01-01",
            ),
            ("# only a comment\n", "test.txt: no entries"),
        ];
        for (text, message) in cases {
            let text: &'static str = Box::leak(text.to_string().into_boxed_str());
            let err = parse_year(2027, "test.txt", text).unwrap_err();
            assert!(err.contains(message), "{text:?}: {err}");
        }
        let ok = parse_year(
            2027,
            "t",
            "\n# x\n2027-01-02  Sat  work   Make-up day (補行上班)  \n",
        )
        .unwrap();
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].kind, Kind::MakeUpWorkday);
        assert_eq!(ok[0].name, "Make-up day (補行上班)");
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
            ("2027-01-01", false), // 2027 calendar
            ("2028-01-03", true),  // outside the embedded years: Monday-Friday only
            ("2028-01-01", false),
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
        let dates: Vec<String> = holidays.iter().map(|e| e.date.to_string()).collect();
        assert_eq!(dates, ["2025-10-06", "2025-10-10", "2025-10-24"]);
        assert!(holidays[0].name.contains("Mid-Autumn"));
        assert!(holidays[1].name.contains("National Day"));
        let weekday_holidays = holidays.iter().filter(|e| !e.date.is_weekend()).count() as u32;
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
