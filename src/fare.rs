//! The TPASS month-price calculation: is the NT$1200 30-day pass cheaper than paying per ride with the Taipei
//! Metro frequent-rider discount?
//!
//! Pure: callers pass "today" in, nothing here reads the clock or the environment. Money is kept in hundredths
//! of a New Taiwan dollar so that discounted costs (e.g. 498.75) are exact and money strings can round half up
//! instead of following `{:.0}`'s round-half-to-even.

use crate::calendar::{self, Date};
use serde_json::{json, Map, Value};

pub const TPASS_PRICE: i64 = 1200;
/// The pass runs 30 consecutive days: end = start + 29 days.
pub const TPASS_DAYS: u32 = 30;
pub const DEFAULT_ONE_WAY_FARE: u32 = 40;
pub const DEFAULT_TRIPS_PER_DAY: u32 = 2;
/// How far ahead the default start date looks for a working day.
const DEFAULT_START_SEARCH_DAYS: i64 = 14;

pub const FARE_RANGE: (u32, u32) = (1, 1000);
pub const TRIPS_PER_DAY_RANGE: (u32, u32) = (1, 10);
pub const CUSTOM_WORKING_DAYS_RANGE: (u32, u32) = (0, 30);

/// A frequent-rider tier; trip bounds are inclusive and counted per calendar month.
#[derive(Debug, PartialEq, Eq)]
pub struct Tier {
    pub min_trips: u32,
    pub max_trips: Option<u32>,
    pub percent: u32,
}

pub static TIERS: [Tier; 4] = [
    Tier {
        min_trips: 0,
        max_trips: Some(10),
        percent: 0,
    },
    Tier {
        min_trips: 11,
        max_trips: Some(20),
        percent: 5,
    },
    Tier {
        min_trips: 21,
        max_trips: Some(40),
        percent: 10,
    },
    Tier {
        min_trips: 41,
        max_trips: None,
        percent: 15,
    },
];

impl Tier {
    pub fn trip_range(&self) -> String {
        match self.max_trips {
            Some(max) => format!("{}-{} trips", self.min_trips, max),
            None => format!("{}+ trips", self.min_trips),
        }
    }

    pub fn description(&self) -> String {
        format!("{}: {}% off", self.trip_range(), self.percent)
    }

    pub fn rate(&self) -> f64 {
        f64::from(self.percent) / 100.0
    }
}

pub fn tier_for(trips: u32) -> &'static Tier {
    TIERS
        .iter()
        .rev()
        .find(|t| trips >= t.min_trips)
        .unwrap_or(&TIERS[0])
}

/// Cost in hundredths of NT$ of `trips` rides whose undiscounted total is `base` NT$.
pub fn discounted_cost_cents(base: i64, trips: u32) -> i64 {
    base * (100 - i64::from(tier_for(trips).percent))
}

/// Hundredths of NT$ to whole NT$, ties away from zero (half up for the non-negative amounts shown to users).
pub fn round_cents(cents: i64) -> i64 {
    if cents >= 0 {
        (cents + 50) / 100
    } else {
        -((-cents + 50) / 100)
    }
}

/// "NT$599" for 598.5; negative amounts keep their sign in front ("-NT$67").
pub fn money(cents: i64) -> String {
    let whole = round_cents(cents);
    if whole < 0 {
        format!("-NT${}", -whole)
    } else {
        format!("NT${whole}")
    }
}

/// Exact JSON number for an amount in hundredths: an integer when whole, else the decimal value.
pub fn money_number(cents: i64) -> Value {
    if cents % 100 == 0 {
        json!(cents / 100)
    } else {
        json!(cents as f64 / 100.0)
    }
}

/// round_half_up(segment_days / 30 * custom) in integers.
pub fn share_of_custom_days(segment_days: u32, custom: u32) -> u32 {
    (2 * segment_days * custom + TPASS_DAYS) / (2 * TPASS_DAYS)
}

/// The pass window split at month ends: 1 to 3 `(first, last)` pairs.
pub fn month_segments(start: Date, end: Date) -> Vec<(Date, Date)> {
    let mut out = Vec::new();
    let mut cur = start;
    while cur <= end {
        let last = cur.last_of_month().min(end);
        out.push((cur, last));
        cur = last.add_days(1);
    }
    out
}

/// First working day from tomorrow within two weeks, else tomorrow.
pub fn default_start(today: Date) -> Date {
    (1..=DEFAULT_START_SEARCH_DAYS)
        .map(|i| today.add_days(i))
        .find(|&d| calendar::is_working_day(d))
        .unwrap_or_else(|| today.add_days(1))
}

/// Validated `calculate_fare` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub start_date: Option<Date>,
    pub one_way_fare: u32,
    pub trips_per_day: u32,
    pub custom_working_days: Option<u32>,
}

impl Default for Request {
    fn default() -> Self {
        Request {
            start_date: None,
            one_way_fare: DEFAULT_ONE_WAY_FARE,
            trips_per_day: DEFAULT_TRIPS_PER_DAY,
            custom_working_days: None,
        }
    }
}

/// A whole number in `range`; absent and `null` mean "not given".
fn int_arg(
    args: &Map<String, Value>,
    name: &str,
    range: (u32, u32),
) -> Result<Option<u32>, String> {
    let (min, max) = range;
    let n = match args.get(name) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n,
        Some(other) => {
            return Err(format!(
                "{name} must be a number from {min} to {max} (got {other})"
            ))
        }
    };
    let v = n.as_f64().unwrap_or(f64::NAN);
    if v.fract() != 0.0 {
        return Err(format!(
            "{name} must be a whole number from {min} to {max} (got {n})"
        ));
    }
    if v < f64::from(min) || v > f64::from(max) {
        return Err(format!("{name} must be between {min} and {max} (got {n})"));
    }
    Ok(Some(v as u32))
}

impl Request {
    /// Reads the tool arguments; every rejection names the field, the allowed range and the value given.
    pub fn from_args(args: Option<&Value>) -> Result<Request, String> {
        let empty = Map::new();
        let args = match args {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(m)) => m,
            Some(other) => return Err(format!("arguments must be a JSON object (got {other})")),
        };
        let start_date = match args.get("startDate") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(Date::parse(s.trim())?),
            Some(other) => {
                return Err(format!(
                    "startDate must be a string in YYYY-MM-DD format (got {other})"
                ))
            }
        };
        Ok(Request {
            start_date,
            one_way_fare: int_arg(args, "oneWayFare", FARE_RANGE)?.unwrap_or(DEFAULT_ONE_WAY_FARE),
            trips_per_day: int_arg(args, "tripsPerDay", TRIPS_PER_DAY_RANGE)?
                .unwrap_or(DEFAULT_TRIPS_PER_DAY),
            custom_working_days: int_arg(args, "customWorkingDays", CUSTOM_WORKING_DAYS_RANGE)?,
        })
    }
}

/// One calendar month's share of the pass window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub first: Date,
    pub last: Date,
    pub days: u32,
    pub working_days: u32,
    pub trips: u32,
    pub percent: u32,
    pub original_cents: i64,
    pub final_cents: i64,
}

impl Segment {
    pub fn discount_cents(&self) -> i64 {
        self.original_cents - self.final_cents
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recommendation {
    BuyTpass,
    UseRegular,
}

impl Recommendation {
    pub fn as_str(self) -> &'static str {
        match self {
            Recommendation::BuyTpass => "BUY_TPASS",
            Recommendation::UseRegular => "USE_REGULAR",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Holiday {
    pub date: Date,
    pub name: &'static str,
}

/// Everything `calculate_fare` reports.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub start: Date,
    pub end: Date,
    pub one_way_fare: u32,
    pub trips_per_day: u32,
    pub custom_working_days: Option<u32>,
    pub working_days: u32,
    pub total_trips: u32,
    pub segments: Vec<Segment>,
    pub regular_cents: i64,
    pub before_discount_cents: i64,
    pub holidays: Vec<Holiday>,
    pub warnings: Vec<String>,
}

/// The comparison for `req` as seen on `today` (Asia/Taipei).
pub fn calculate(req: &Request, today: Date) -> Comparison {
    let start = req.start_date.unwrap_or_else(|| default_start(today));
    let end = start.add_days(i64::from(TPASS_DAYS) - 1);
    let fare = i64::from(req.one_way_fare);

    let segments: Vec<Segment> = month_segments(start, end)
        .into_iter()
        .map(|(first, last)| {
            let days = (last.to_days() - first.to_days() + 1) as u32;
            let working_days = match req.custom_working_days {
                Some(custom) => share_of_custom_days(days, custom),
                None => calendar::working_days(first, last),
            };
            let trips = working_days * req.trips_per_day;
            let base = fare * i64::from(trips);
            Segment {
                first,
                last,
                days,
                working_days,
                trips,
                percent: tier_for(trips).percent,
                original_cents: base * 100,
                final_cents: discounted_cost_cents(base, trips),
            }
        })
        .collect();

    let working_days = req
        .custom_working_days
        .unwrap_or_else(|| segments.iter().map(|s| s.working_days).sum());
    let total_trips = working_days * req.trips_per_day;

    let mut warnings = Vec::new();
    if start < today {
        warnings.push(format!(
            "startDate {start} is in the past (today is {today} in Asia/Taipei); the pass cannot be bought for it any more"
        ));
    }
    let uncovered: Vec<i32> = (start.year()..=end.year())
        .filter(|&y| !calendar::is_covered_year(y))
        .collect();
    for year in uncovered {
        warnings.push(if req.custom_working_days.is_some() {
            format!("No official holiday calendar is embedded for {year}; its public holidays are not listed")
        } else {
            format!(
                "No official holiday calendar is embedded for {year}; its working days are counted as Monday-Friday and public holidays are not taken into account"
            )
        });
    }

    Comparison {
        start,
        end,
        one_way_fare: req.one_way_fare,
        trips_per_day: req.trips_per_day,
        custom_working_days: req.custom_working_days,
        working_days,
        total_trips,
        regular_cents: segments.iter().map(|s| s.final_cents).sum(),
        before_discount_cents: fare * i64::from(total_trips) * 100,
        segments,
        holidays: calendar::holidays_between(start, end)
            .into_iter()
            .map(|e| Holiday {
                date: e.date,
                name: e.name,
            })
            .collect(),
        warnings,
    }
}

impl Comparison {
    pub fn tpass_cents(&self) -> i64 {
        TPASS_PRICE * 100
    }

    pub fn savings_cents(&self) -> i64 {
        self.tpass_cents() - self.regular_cents
    }

    pub fn recommendation(&self) -> Recommendation {
        if self.tpass_cents() < self.regular_cents {
            Recommendation::BuyTpass
        } else {
            Recommendation::UseRegular
        }
    }

    pub fn crosses_month_boundary(&self) -> bool {
        self.segments.len() > 1
    }

    fn recommendation_reason(&self) -> String {
        let regular = money(self.regular_cents);
        let tpass = money(self.tpass_cents());
        let savings = self.savings_cents();
        match self.recommendation() {
            Recommendation::BuyTpass => format!(
                "Buy TPASS: it saves {} over paying per ride, which would cost {regular} after the frequent-rider discount",
                money(-savings)
            ),
            Recommendation::UseRegular if savings == 0 => format!(
                "Pay per ride: it costs the same {tpass} as TPASS after the frequent-rider discount"
            ),
            Recommendation::UseRegular => format!(
                "Pay per ride: {regular} after the frequent-rider discount saves {} compared with the {tpass} TPASS",
                money(savings)
            ),
        }
    }

    fn discount_note(&self) -> String {
        let per_month: Vec<String> = self
            .segments
            .iter()
            .map(|s| {
                format!(
                    "{} {}: {} trips, {}% off",
                    s.first.month_name(),
                    s.first.year(),
                    s.trips,
                    s.percent
                )
            })
            .collect();
        if self.crosses_month_boundary() {
            format!(
                "The frequent-rider discount resets on the 1st of each month, so each month's trips earn their own tier ({}); discountTier describes all {} trips together",
                per_month.join("; "),
                self.total_trips
            )
        } else {
            format!(
                "The whole period falls in one calendar month ({})",
                per_month.join("")
            )
        }
    }

    pub fn to_json(&self) -> Value {
        let regular = self.regular_cents;
        let savings = self.savings_cents();
        let tier = tier_for(self.total_trips);
        let mut out = json!({
            "tpassCost": TPASS_PRICE,
            "regularCost": money_number(regular),
            "regularCostBeforeDiscount": money_number(self.before_discount_cents),
            "savingsAmount": money_number(savings),
            "savingsPercentage": if regular == 0 {
                Value::Null
            } else {
                json!(savings as f64 / regular as f64)
            },
            "recommendation": self.recommendation().as_str(),
            "recommendationReason": self.recommendation_reason(),
            "details": {
                "workingDays": self.working_days,
                "workingDaysSource": if self.custom_working_days.is_some() { "customWorkingDays" } else { "calendar" },
                "totalTrips": self.total_trips,
                "oneWayFare": self.one_way_fare,
                "tripsPerDay": self.trips_per_day,
                "discountRate": tier.rate(),
                "discountTier": tier.description(),
                "discountNote": self.discount_note(),
                "periodStart": self.start.to_string(),
                "periodEnd": self.end.to_string(),
                "crossesMonthBoundary": self.crosses_month_boundary(),
            },
        });
        if self.crosses_month_boundary() {
            let months: Vec<Value> = self
                .segments
                .iter()
                .map(|s| {
                    json!({
                        "month": s.first.month_name(),
                        "year": s.first.year(),
                        "startDate": s.first.to_string(),
                        "endDate": s.last.to_string(),
                        "dateRange": format!(
                            "{} {} - {} {}",
                            &s.first.month_name()[..3],
                            s.first.day(),
                            &s.last.month_name()[..3],
                            s.last.day()
                        ),
                        "days": s.days,
                        "workingDays": s.working_days,
                        "trips": s.trips,
                        "baseFare": money(i64::from(self.one_way_fare) * 100),
                        "originalCost": money(s.original_cents),
                        "discountTier": format!("{}%", s.percent),
                        "discountAmount": money(s.discount_cents()),
                        "finalCost": money(s.final_cents),
                    })
                })
                .collect();
            out["monthlyBreakdown"] = Value::Array(months);
        }
        let list: Vec<Value> = self
            .holidays
            .iter()
            .map(|h| {
                json!({
                    "date": h.date.to_string(),
                    "name": h.name,
                    "dayOfWeek": h.date.weekday_name(),
                    "isWeekend": h.date.is_weekend(),
                })
            })
            .collect();
        out["holidays"] = json!({ "totalHolidays": list.len(), "list": list });
        out["warnings"] = json!(self.warnings);
        out
    }
}

/// The `get_discount_info` answer: the tiers and the TPASS facts.
pub fn discount_info() -> Value {
    let tiers: Vec<Value> = TIERS
        .iter()
        .map(|t| {
            json!({
                "tripRange": t.trip_range(),
                "minTrips": t.min_trips,
                "maxTrips": t.max_trips,
                "discount": format!("{}%", t.percent),
                "discountRate": t.rate(),
            })
        })
        .collect();
    json!({
        "discountTiers": tiers,
        "validityPeriod": "Calendar month",
        "resetCycle": "Monthly on the 1st: trips are counted per calendar month and the count starts again on the 1st",
        "tpassInfo": {
            "price": money(TPASS_PRICE * 100),
            "priceAmount": TPASS_PRICE,
            "validityDays": TPASS_DAYS,
            "validity": "30 consecutive days: end date = start date + 29 days",
            "benefits": [
                "Unlimited Taipei Metro rides within the validity period",
                "No need to count trips",
            ],
        },
        "comparisonTip": "TPASS pays off when the 30 days' per-ride fares, after each month's frequent-rider discount, exceed NT$1200; calculate_fare works it out for a start date, fare and schedule",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Date {
        Date::parse(s).unwrap()
    }

    fn req(start: &str, fare: u32, custom: Option<u32>) -> Request {
        Request {
            start_date: Some(d(start)),
            one_way_fare: fare,
            trips_per_day: 2,
            custom_working_days: custom,
        }
    }

    /// A fixed "today" before every acceptance case so no past-date warning depends on the real clock.
    fn today() -> Date {
        d("2024-01-01")
    }

    #[test]
    fn tiers_by_monthly_trip_count() {
        let cases = [
            (0, 0),
            (10, 0),
            (11, 5),
            (20, 5),
            (21, 10),
            (38, 10),
            (40, 10),
            (41, 15),
            (1000, 15),
        ];
        for (trips, percent) in cases {
            assert_eq!(tier_for(trips).percent, percent, "{trips} trips");
        }
        assert_eq!(tier_for(21).description(), "21-40 trips: 10% off");
        assert_eq!(tier_for(41).description(), "41+ trips: 15% off");
    }

    #[test]
    fn discounted_costs() {
        let cases = [
            (350, 10, 35_000),
            (525, 15, 49_875),
            (1050, 30, 94_500),
            (1470, 42, 124_950),
        ];
        for (base, trips, cents) in cases {
            assert_eq!(
                discounted_cost_cents(base, trips),
                cents,
                "({base}, {trips})"
            );
        }
        assert_eq!(money_number(49_875), json!(498.75));
        assert_eq!(money_number(124_950), json!(1249.5));
        assert_eq!(money_number(94_500), json!(945));
    }

    #[test]
    fn money_rounds_half_up() {
        let cases = [
            (59_850, "NT$599"),
            (59_849, "NT$598"),
            (50, "NT$1"),
            (49, "NT$0"),
            (0, "NT$0"),
            (124_950, "NT$1250"),
            (250, "NT$3"),
            (-6_700, "-NT$67"),
            (-150, "-NT$2"),
        ];
        for (cents, text) in cases {
            assert_eq!(money(cents), text, "{cents}");
        }
    }

    #[test]
    fn custom_days_share_rounds_half_up() {
        let cases = [
            (15, 1, 1),   // 0.5 -> 1
            (15, 3, 2),   // 1.5 -> 2
            (15, 5, 3),   // 2.5 -> 3
            (1, 20, 1),   // 0.67 -> 1
            (29, 20, 19), // 19.33 -> 19
            (30, 22, 22),
            (1, 1, 0), // 0.03 -> 0
            (29, 30, 29),
            (0, 30, 0),
        ];
        for (days, custom, share) in cases {
            assert_eq!(
                share_of_custom_days(days, custom),
                share,
                "{days}/30 x {custom}"
            );
        }
    }

    #[test]
    fn month_segments_split_at_month_ends() {
        let seg = |start: &str| {
            let s = d(start);
            month_segments(s, s.add_days(29))
                .into_iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<Vec<_>>()
        };
        let pairs = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            seg("2024-10-31"),
            pairs(&[("2024-10-31", "2024-10-31"), ("2024-11-01", "2024-11-29")])
        );
        assert_eq!(
            seg("2024-12-20"),
            pairs(&[("2024-12-20", "2024-12-31"), ("2025-01-01", "2025-01-18")])
        );
        assert_eq!(
            seg("2024-02-15"),
            pairs(&[("2024-02-15", "2024-02-29"), ("2024-03-01", "2024-03-15")])
        );
        assert_eq!(
            seg("2025-02-15"),
            pairs(&[("2025-02-15", "2025-02-28"), ("2025-03-01", "2025-03-16")])
        );
        assert_eq!(
            seg("2025-01-31"),
            pairs(&[
                ("2025-01-31", "2025-01-31"),
                ("2025-02-01", "2025-02-28"),
                ("2025-03-01", "2025-03-01")
            ])
        );
        assert_eq!(seg("2025-10-01"), pairs(&[("2025-10-01", "2025-10-30")]));
    }

    #[test]
    fn october_2024_custom_20_at_fare_35() {
        let c = calculate(&req("2024-10-31", 35, Some(20)), today());
        assert_eq!(c.end, d("2024-11-29"));
        assert_eq!(c.segments.len(), 2);
        let (oct, nov) = (&c.segments[0], &c.segments[1]);
        assert_eq!(
            (oct.days, oct.working_days, oct.trips, oct.percent),
            (1, 1, 2, 0)
        );
        assert_eq!(money(oct.final_cents), "NT$70");
        assert_eq!(
            (nov.days, nov.working_days, nov.trips, nov.percent),
            (29, 19, 38, 10)
        );
        assert_eq!(money(nov.discount_cents()), "NT$133");
        assert_eq!(money(nov.final_cents), "NT$1197");
        assert_eq!(c.regular_cents, 126_700);
        assert_eq!(c.savings_cents(), -6_700);
        assert_eq!(c.recommendation(), Recommendation::BuyTpass);
        assert_eq!(c.total_trips, 40);
        assert_eq!(c.before_discount_cents, 140_000);

        let j = c.to_json();
        assert_eq!(j["regularCost"], json!(1267));
        assert_eq!(j["savingsAmount"], json!(-67));
        assert_eq!(j["recommendation"], "BUY_TPASS");
        assert_eq!(j["details"]["crossesMonthBoundary"], true);
        assert_eq!(j["details"]["periodEnd"], "2024-11-29");
        let months = j["monthlyBreakdown"].as_array().unwrap();
        assert_eq!(months[0]["trips"], 2);
        assert_eq!(months[0]["finalCost"], "NT$70");
        assert_eq!(months[1]["month"], "November");
        assert_eq!(months[1]["trips"], 38);
        assert_eq!(months[1]["discountTier"], "10%");
        assert_eq!(months[1]["discountAmount"], "NT$133");
        assert_eq!(months[1]["finalCost"], "NT$1197");
        assert_eq!(months[1]["dateRange"], "Nov 1 - Nov 29");
        assert!(j["recommendationReason"]
            .as_str()
            .unwrap()
            .contains("saves NT$67"));
        // 2024 is outside the embedded calendar.
        assert!(j["warnings"][0].as_str().unwrap().contains("2024"));
    }

    #[test]
    fn october_2025_custom_days_at_fare_40() {
        let cases = [
            (22, 149_600, Recommendation::BuyTpass, -29_600),
            (15, 108_000, Recommendation::UseRegular, 12_000),
            (10, 76_000, Recommendation::UseRegular, 44_000),
        ];
        for (custom, regular, rec, savings) in cases {
            let c = calculate(&req("2025-10-01", 40, Some(custom)), today());
            assert_eq!(c.regular_cents, regular, "custom {custom}");
            assert_eq!(c.recommendation(), rec, "custom {custom}");
            assert_eq!(c.savings_cents(), savings, "custom {custom}");
            assert!(!c.crosses_month_boundary());
            assert!(c.to_json().get("monthlyBreakdown").is_none());
        }
        let j = calculate(&req("2025-10-01", 40, Some(15)), today()).to_json();
        assert_eq!(j["regularCost"], json!(1080));
        assert_eq!(j["savingsAmount"], json!(120));
        assert_eq!(j["savingsPercentage"], json!(120.0 / 1080.0));
        assert_eq!(j["recommendation"], "USE_REGULAR");
        assert_eq!(j["warnings"], json!([]));
    }

    #[test]
    fn october_2025_calendar_lists_holidays() {
        let c = calculate(&req("2025-10-01", 40, None), today());
        assert_eq!(c.working_days, 19);
        assert_eq!(c.total_trips, 38);
        // 38 trips in October alone: 10% off 1520.
        assert_eq!(c.regular_cents, 136_800);
        let j = c.to_json();
        let list = j["holidays"]["list"].as_array().unwrap();
        let dates: Vec<&str> = list.iter().map(|h| h["date"].as_str().unwrap()).collect();
        assert_eq!(dates, ["2025-10-06", "2025-10-10", "2025-10-24"]);
        assert_eq!(j["holidays"]["totalHolidays"], 3);
        assert!(list[0]["name"].as_str().unwrap().contains("Mid-Autumn"));
        assert_eq!(list[0]["dayOfWeek"], "Monday");
        assert!(list[1]["name"].as_str().unwrap().contains("National Day"));
        assert_eq!(list[1]["isWeekend"], false);
        let weekday_holidays = list.iter().filter(|h| h["isWeekend"] == false).count() as u32;
        let weekend_days = (0..30)
            .filter(|&i| c.start.add_days(i).is_weekend())
            .count() as u32;
        assert_eq!(c.working_days + weekday_holidays + weekend_days, 30);
    }

    #[test]
    fn per_month_tiers_with_calendar_days() {
        // 2025-09-15..2025-10-14: September has 11 working days (09-29 is off), October 8 (10-06, 10-10 off).
        let c = calculate(&req("2025-09-15", 40, None), today());
        let per: Vec<(u32, u32)> = c
            .segments
            .iter()
            .map(|s| (s.working_days, s.percent))
            .collect();
        assert_eq!(per, [(11, 10), (8, 5)]);
        assert_eq!(c.regular_cents, 40 * 22 * 90 + 40 * 16 * 95);
        assert_eq!(c.working_days, 19);
    }

    #[test]
    fn savings_percentage_is_null_without_rides() {
        let j = calculate(&req("2025-10-01", 40, Some(0)), today()).to_json();
        assert_eq!(j["regularCost"], json!(0));
        assert_eq!(j["savingsPercentage"], Value::Null);
        assert_eq!(j["recommendation"], "USE_REGULAR");
    }

    #[test]
    fn equal_cost_keeps_regular_fare() {
        // 5 days x 2 trips = 10 trips, the 0% tier, x NT$120 = exactly the NT$1200 pass price.
        let c = calculate(&req("2025-10-01", 120, Some(5)), today());
        assert_eq!(c.regular_cents, 120_000);
        assert_eq!(c.recommendation(), Recommendation::UseRegular);
    }

    #[test]
    fn default_start_is_next_working_day() {
        let cases = [
            ("2025-10-02", "2025-10-03"), // Thursday -> Friday
            ("2025-10-03", "2025-10-07"), // Friday -> skip weekend and Mid-Autumn Monday
            ("2025-01-24", "2025-02-03"), // Lunar New Year block
            ("2025-02-07", "2025-02-08"), // make-up working Saturday
            ("2027-02-03", "2027-02-11"), // Lunar New Year 2027: 02-04..02-10 off
            ("2028-06-02", "2028-06-05"), // outside the embedded years: Monday-Friday
        ];
        for (today, start) in cases {
            assert_eq!(default_start(d(today)), d(start), "today {today}");
        }
        let c = calculate(&Request::default(), d("2025-10-03"));
        assert_eq!(c.start, d("2025-10-07"));
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn warnings_for_past_start_and_uncovered_years() {
        let c = calculate(&req("2025-10-01", 40, None), d("2025-10-02"));
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].contains("in the past"));
        let c = calculate(&req("2027-12-20", 40, None), d("2027-01-01"));
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].contains("2028"));
        assert!(c.warnings[0].contains("Monday-Friday"));
        assert_eq!(c.working_days, calendar::working_days(c.start, c.end));
    }

    /// Working days and cost of the window with `year` counted Monday-Friday and the other years by the calendar:
    /// with 2027, what the service answered before the 2027 calendar was embedded.
    fn cost_without_calendar_for(c: &Comparison, year: i32) -> (u32, i64) {
        let mut days = 0;
        let mut cents = 0;
        for s in &c.segments {
            let n = (s.first.to_days()..=s.last.to_days())
                .map(Date::from_days)
                .filter(|&x| {
                    if x.year() == year {
                        !x.is_weekend()
                    } else {
                        calendar::is_working_day(x)
                    }
                })
                .count() as u32;
            let trips = n * c.trips_per_day;
            days += n;
            cents += discounted_cost_cents(i64::from(c.one_way_fare) * i64::from(trips), trips);
        }
        (days, cents)
    }

    #[test]
    fn default_window_from_2026_12_02_counts_new_year_2027_off() {
        let c = calculate(&Request::default(), d("2026-12-02"));
        assert_eq!((c.start, c.end), (d("2026-12-03"), d("2027-01-01")));
        assert_eq!(c.working_days, 20);
        assert_eq!(c.regular_cents, 144_000);
        assert_eq!(money(c.regular_cents), "NT$1440");
        assert_eq!(c.recommendation(), Recommendation::BuyTpass);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let per: Vec<(u32, u32)> = c
            .segments
            .iter()
            .map(|s| (s.working_days, s.percent))
            .collect();
        assert_eq!(per, [(20, 10), (0, 0)]);
        let dates: Vec<String> = c.holidays.iter().map(|h| h.date.to_string()).collect();
        assert_eq!(dates, ["2026-12-25", "2027-01-01"]);
        assert_eq!(cost_without_calendar_for(&c, 2027), (21, 152_000));
    }

    #[test]
    fn february_2027_lunar_new_year_makes_per_ride_cheaper() {
        let c = calculate(&req("2027-02-01", 40, None), d("2026-12-02"));
        assert_eq!(c.end, d("2027-03-02"));
        let per: Vec<(u32, u32, u32)> = c
            .segments
            .iter()
            .map(|s| (s.working_days, s.trips, s.percent))
            .collect();
        assert_eq!(per, [(15, 30, 10), (1, 2, 0)]);
        assert_eq!(c.working_days, 16);
        assert_eq!(c.regular_cents, 116_000);
        assert_eq!(c.savings_cents(), 4_000);
        assert_eq!(c.recommendation(), Recommendation::UseRegular);
        let j = c.to_json();
        assert_eq!(j["regularCost"], json!(1160));
        assert_eq!(j["recommendation"], "USE_REGULAR");
        let list = j["holidays"]["list"].as_array().unwrap();
        let dates: Vec<&str> = list.iter().map(|h| h["date"].as_str().unwrap()).collect();
        assert_eq!(
            dates,
            [
                "2027-02-04",
                "2027-02-05",
                "2027-02-06",
                "2027-02-07",
                "2027-02-08",
                "2027-02-09",
                "2027-02-10",
                "2027-02-28",
                "2027-03-01"
            ]
        );
        let weekday_holidays = list.iter().filter(|h| h["isWeekend"] == false).count() as u32;
        let weekend_days = (0..30)
            .filter(|&i| c.start.add_days(i).is_weekend())
            .count() as u32;
        assert_eq!(c.working_days + weekday_holidays + weekend_days, 30);
        assert_eq!(cost_without_calendar_for(&c, 2027), (22, 160_000));
    }

    #[test]
    fn window_across_2027_into_2028_falls_back_with_a_warning() {
        let c = calculate(&req("2027-12-15", 40, None), d("2026-12-02"));
        assert_eq!(c.end, d("2028-01-13"));
        let per: Vec<(u32, u32)> = c
            .segments
            .iter()
            .map(|s| (s.working_days, s.percent))
            .collect();
        // December: 13 weekdays less 12-24 and 12-31; January 2028: Monday-Friday.
        assert_eq!(per, [(11, 10), (9, 5)]);
        assert_eq!(c.regular_cents, 40 * 22 * 90 + 40 * 18 * 95);
        assert_eq!(c.recommendation(), Recommendation::BuyTpass);
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("2028"), "{}", c.warnings[0]);
        assert!(c.warnings[0].contains("Monday-Friday"), "{}", c.warnings[0]);
        let dates: Vec<String> = c.holidays.iter().map(|h| h.date.to_string()).collect();
        assert_eq!(dates, ["2027-12-24", "2027-12-25", "2027-12-31"]);
    }

    #[test]
    fn request_defaults_and_valid_values() {
        assert_eq!(Request::from_args(None).unwrap(), Request::default());
        assert_eq!(
            Request::from_args(Some(&json!({}))).unwrap(),
            Request::default()
        );
        let r = Request::from_args(Some(&json!({
            "startDate": "2025-10-01", "oneWayFare": 1000, "tripsPerDay": 10.0, "customWorkingDays": 0,
            "unrelated": true
        })))
        .unwrap();
        assert_eq!(
            r,
            Request {
                start_date: Some(d("2025-10-01")),
                one_way_fare: 1000,
                trips_per_day: 10,
                custom_working_days: Some(0),
            }
        );
        let r = Request::from_args(Some(&json!({"oneWayFare": null, "customWorkingDays": 30})))
            .unwrap();
        assert_eq!((r.one_way_fare, r.custom_working_days), (40, Some(30)));
    }

    #[test]
    fn request_rejects_each_invalid_input() {
        let cases = [
            (
                json!({"oneWayFare": 0}),
                "oneWayFare must be between 1 and 1000 (got 0)",
            ),
            (
                json!({"oneWayFare": 1001}),
                "oneWayFare must be between 1 and 1000 (got 1001)",
            ),
            (
                json!({"oneWayFare": -5}),
                "oneWayFare must be between 1 and 1000 (got -5)",
            ),
            (
                json!({"oneWayFare": 40.5}),
                "oneWayFare must be a whole number from 1 to 1000 (got 40.5)",
            ),
            (
                json!({"oneWayFare": "40"}),
                "oneWayFare must be a number from 1 to 1000 (got \"40\")",
            ),
            (
                json!({"tripsPerDay": 0}),
                "tripsPerDay must be between 1 and 10 (got 0)",
            ),
            (
                json!({"tripsPerDay": 11}),
                "tripsPerDay must be between 1 and 10 (got 11)",
            ),
            (
                json!({"tripsPerDay": true}),
                "tripsPerDay must be a number from 1 to 10 (got true)",
            ),
            (
                json!({"customWorkingDays": -1}),
                "customWorkingDays must be between 0 and 30 (got -1)",
            ),
            (
                json!({"customWorkingDays": 31}),
                "customWorkingDays must be between 0 and 30 (got 31)",
            ),
            (
                json!({"customWorkingDays": 1e30}),
                "customWorkingDays must be between 0 and 30 (got 1e",
            ),
            (
                json!({"startDate": "2025-13-01"}),
                "startDate 2025-13-01 is not a real calendar date",
            ),
            (
                json!({"startDate": "2025-02-29"}),
                "startDate 2025-02-29 is not a real calendar date",
            ),
            (
                json!({"startDate": "01/10/2025"}),
                "startDate must be a date in YYYY-MM-DD format",
            ),
            (
                json!({"startDate": 20251001}),
                "startDate must be a string in YYYY-MM-DD format",
            ),
            (json!([1, 2]), "arguments must be a JSON object"),
        ];
        for (args, message) in cases {
            let err = Request::from_args(Some(&args)).unwrap_err();
            assert!(err.starts_with(message), "{args}: {err}");
        }
    }

    #[test]
    fn discount_info_lists_tiers_and_tpass_facts() {
        let j = discount_info();
        let tiers = j["discountTiers"].as_array().unwrap();
        let ranges: Vec<&str> = tiers
            .iter()
            .map(|t| t["tripRange"].as_str().unwrap())
            .collect();
        assert_eq!(
            ranges,
            ["0-10 trips", "11-20 trips", "21-40 trips", "41+ trips"]
        );
        let pct: Vec<&str> = tiers
            .iter()
            .map(|t| t["discount"].as_str().unwrap())
            .collect();
        assert_eq!(pct, ["0%", "5%", "10%", "15%"]);
        assert_eq!(j["tpassInfo"]["price"], "NT$1200");
        assert_eq!(j["tpassInfo"]["validityDays"], 30);
    }
}
