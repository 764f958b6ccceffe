//! Validated configuration of the session table.
//!
//! Every bound is checked up front so a typo (`--max-sessions 0`, `--idle-timeout 0s`,
//! a burst of four billion) fails at start-up with a message naming the setting,
//! rather than as a table that silently rejects or never expires anything.

use std::num::NonZeroU32;
use std::time::Duration;

/// A bad configuration value: which setting, what was given, and what is allowed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("invalid {setting} `{value}`: {reason}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub value: String,
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(
        setting: &'static str,
        value: impl ToString,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            setting,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

/// Per-session token bucket: `per_second` requests sustained, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

pub const MAX_SESSIONS_LIMIT: usize = 10_000_000;
pub const MAX_RATE: u32 = 1_000_000;
pub const MAX_IN_FLIGHT_LIMIT: usize = 10_000_000;
const LONGEST_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);
const SHORTEST_CLEANUP: Duration = Duration::from_millis(10);
const LONGEST_CLEANUP: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableConfig {
    /// Bound on live sessions; creating one more evicts.
    pub max_sessions: usize,
    /// Optional bound on the sum of session weights (byte mode); `None` counts sessions only.
    pub weight_capacity: Option<u64>,
    /// A session unused this long is expired; `None` never expires idle sessions.
    pub idle_timeout: Option<Duration>,
    /// A session older than this is expired however busy; `None` disables.
    pub max_age: Option<Duration>,
    /// How often the background cleanup runs.
    pub cleanup_interval: Duration,
    /// Per-session request rate; `None` is unlimited.
    pub rate_limit: Option<RateLimit>,
    /// Bound on requests in flight across all sessions.
    pub max_in_flight: usize,
    /// How long one upstream teardown may take before it is abandoned and counted.
    pub teardown_timeout: Duration,
    /// Limits on per-session quotas a policy may set.
    pub quota_bounds: QuotaBounds,
}

/// The range a policy's quota adjustments are clamped into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaBounds {
    pub min_per_second: u32,
    pub max_per_second: u32,
    pub min_burst: u32,
    pub max_burst: u32,
}

impl Default for QuotaBounds {
    fn default() -> Self {
        Self {
            min_per_second: 1,
            max_per_second: 1_000,
            min_burst: 1,
            max_burst: 500,
        }
    }
}

impl QuotaBounds {
    pub fn clamp(&self, per_second: u32, burst: u32) -> RateLimit {
        let clamp =
            |v: u32, lo: u32, hi: u32| NonZeroU32::new(v.clamp(lo, hi).max(1)).expect("at least 1");
        RateLimit {
            per_second: clamp(per_second, self.min_per_second, self.max_per_second),
            burst: clamp(burst, self.min_burst, self.max_burst),
        }
    }
}

impl Default for TableConfig {
    fn default() -> Self {
        Self {
            max_sessions: 1_000,
            weight_capacity: None,
            idle_timeout: Some(Duration::from_secs(3600)),
            max_age: Some(Duration::from_secs(24 * 3600)),
            cleanup_interval: Duration::from_secs(60),
            rate_limit: Some(RateLimit {
                per_second: NonZeroU32::new(100).expect("non-zero"),
                burst: NonZeroU32::new(50).expect("non-zero"),
            }),
            max_in_flight: 10_000,
            teardown_timeout: Duration::from_secs(10),
            quota_bounds: QuotaBounds::default(),
        }
    }
}

impl TableConfig {
    /// A configuration for trace replay: no expiry, no rate limit, given capacity.
    pub fn unbounded_in_time(max_sessions: usize) -> Self {
        Self {
            max_sessions,
            idle_timeout: None,
            max_age: None,
            rate_limit: None,
            max_in_flight: MAX_IN_FLIGHT_LIMIT,
            ..Self::default()
        }
    }

    /// Settings that are valid but cannot do what they say, each as a
    /// sentence for a warning.
    pub fn oddities(&self) -> Vec<String> {
        let mut odd = Vec::new();
        if let (Some(idle), Some(age)) = (self.idle_timeout, self.max_age) {
            if idle >= age {
                odd.push(format!(
                    "the idle timeout ({}) never expires a session: the max age ({}) expires \
                     every session before it could",
                    readable_duration(idle),
                    readable_duration(age)
                ));
            }
        }
        odd
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_sessions == 0 || self.max_sessions > MAX_SESSIONS_LIMIT {
            return Err(ConfigError::new(
                "max sessions",
                self.max_sessions,
                format!("must be between 1 and {MAX_SESSIONS_LIMIT}"),
            ));
        }
        if self.weight_capacity == Some(0) {
            return Err(ConfigError::new(
                "weight capacity",
                0,
                "must be positive (omit it to bound sessions by count only)",
            ));
        }
        for (setting, value) in [
            ("idle timeout", self.idle_timeout),
            ("max age", self.max_age),
        ] {
            if let Some(d) = value {
                check_duration(setting, d, Duration::from_millis(1), LONGEST_TIMEOUT)?;
            }
        }
        check_duration(
            "cleanup interval",
            self.cleanup_interval,
            SHORTEST_CLEANUP,
            LONGEST_CLEANUP,
        )?;
        if let Some(limit) = self.rate_limit {
            if limit.per_second.get() > MAX_RATE {
                return Err(ConfigError::new(
                    "rate limit",
                    limit.per_second,
                    format!("at most {MAX_RATE} requests per second per session"),
                ));
            }
            if limit.burst.get() > MAX_RATE {
                return Err(ConfigError::new(
                    "burst",
                    limit.burst,
                    format!("at most {MAX_RATE} requests"),
                ));
            }
        }
        if self.max_in_flight == 0 || self.max_in_flight > MAX_IN_FLIGHT_LIMIT {
            return Err(ConfigError::new(
                "max in flight",
                self.max_in_flight,
                format!("must be between 1 and {MAX_IN_FLIGHT_LIMIT}"),
            ));
        }
        let q = self.quota_bounds;
        if q.min_per_second == 0
            || q.min_burst == 0
            || q.min_per_second > q.max_per_second
            || q.min_burst > q.max_burst
            || q.max_per_second > MAX_RATE
            || q.max_burst > MAX_RATE
        {
            return Err(ConfigError::new(
                "quota bounds",
                format!(
                    "rate {}..{}, burst {}..{}",
                    q.min_per_second, q.max_per_second, q.min_burst, q.max_burst
                ),
                format!(
                    "minimums must be at least 1, not above the maximums, and at most {MAX_RATE}"
                ),
            ));
        }
        check_duration(
            "teardown timeout",
            self.teardown_timeout,
            Duration::from_millis(1),
            Duration::from_secs(3600),
        )
    }
}

fn check_duration(
    setting: &'static str,
    value: Duration,
    min: Duration,
    max: Duration,
) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::new(
            setting,
            readable_duration(value),
            format!(
                "must be between {} and {}",
                readable_duration(min),
                readable_duration(max)
            ),
        ));
    }
    Ok(())
}

/// `365days`, `1h 30m`, `2s 500ms`: a duration as options are written, which
/// [`parse_duration`] reads back. Calendar units are left out (`humantime`
/// shows 365 days as `11months 30days 3h 50m 24s`, its months and years being
/// averages), and so is anything under a millisecond once there is a whole
/// second.
pub fn readable_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis == 0 {
        return match duration.as_micros() {
            0 => format!("{}ns", duration.as_nanos()),
            micros => format!("{micros}us"),
        };
    }
    let parts = [
        (millis / 86_400_000, "days"),
        (millis / 3_600_000 % 24, "h"),
        (millis / 60_000 % 60, "m"),
        (millis / 1_000 % 60, "s"),
        (millis % 1_000, "ms"),
    ];
    let mut text = String::new();
    for (value, unit) in parts.into_iter().filter(|(value, _)| *value > 0) {
        if !text.is_empty() {
            text.push(' ');
        }
        let unit = if value == 1 && unit == "days" {
            "day"
        } else {
            unit
        };
        text.push_str(&format!("{value}{unit}"));
    }
    text
}

/// Parses `90s`, `5m`, `1h30m`, `250ms`; a bare number is refused because its
/// unit would be a guess.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("empty duration; use a number with a unit, e.g. 90s, 5m, 1h".into());
    }
    if trimmed.starts_with('-') {
        return Err(format!("`{trimmed}`: a duration cannot be negative"));
    }
    if trimmed.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "`{trimmed}` has no unit; write e.g. {trimmed}s, {trimmed}m or {trimmed}h"
        ));
    }
    humantime::parse_duration(trimmed)
        .map_err(|e| format!("`{trimmed}` is not a duration ({e}); use e.g. 90s, 5m, 1h"))
}

/// Like [`parse_duration`], but `off` (or `never`) disables the timeout.
pub fn parse_optional_duration(text: &str) -> Result<Option<Duration>, String> {
    match text.trim() {
        "off" | "never" | "none" => Ok(None),
        other => parse_duration(other).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_back_as_written_without_calendar_units() {
        let cases = [
            (Duration::from_secs(365 * 86_400), "365days"),
            (Duration::from_secs(86_400 + 90 * 60), "1day 1h 30m"),
            (Duration::from_millis(2_500), "2s 500ms"),
            (Duration::from_nanos(5_001_234_567), "5s 1ms"),
            (Duration::from_millis(10), "10ms"),
            (Duration::from_micros(250), "250us"),
            (Duration::ZERO, "0ns"),
        ];
        for (duration, text) in cases {
            assert_eq!(readable_duration(duration), text);
            // What is shown is the duration to the millisecond.
            let shown = if duration < Duration::from_millis(1) {
                duration
            } else {
                Duration::from_millis(duration.as_millis() as u64)
            };
            assert_eq!(parse_duration(text), Ok(shown), "{text}");
        }
        let refused = TableConfig {
            idle_timeout: Some(Duration::from_secs(400 * 86_400)),
            ..TableConfig::default()
        }
        .validate()
        .expect_err("past a year")
        .to_string();
        assert!(
            refused.contains("`400days`") && refused.contains("between 1ms and 365days"),
            "{refused}"
        );
    }

    #[test]
    fn an_idle_timeout_the_max_age_always_beats_is_an_oddity() {
        let config = |idle: Option<u64>, age: Option<u64>| TableConfig {
            idle_timeout: idle.map(Duration::from_secs),
            max_age: age.map(Duration::from_secs),
            ..TableConfig::default()
        };
        assert!(TableConfig::default().oddities().is_empty());
        assert!(config(Some(60), None).oddities().is_empty());
        assert!(config(None, Some(60)).oddities().is_empty());
        assert!(config(Some(59), Some(60)).oddities().is_empty());
        assert_eq!(
            config(Some(3_600), Some(60)).oddities(),
            [
                "the idle timeout (1h) never expires a session: the max age (1m) expires every \
              session before it could"
            ]
        );
        assert_eq!(config(Some(60), Some(60)).oddities().len(), 1);
    }

    #[test]
    fn session_config_defaults_are_valid() {
        let config = TableConfig::default();
        assert_eq!(config.max_sessions, 1_000);
        assert_eq!(config.idle_timeout, Some(Duration::from_secs(3600)));
        assert_eq!(config.max_age, Some(Duration::from_secs(86_400)));
        assert_eq!(config.cleanup_interval, Duration::from_secs(60));
        config.validate().expect("defaults validate");
        TableConfig::unbounded_in_time(5)
            .validate()
            .expect("replay config validates");
    }

    #[test]
    fn session_config_rejects_zero_and_absurd_values_naming_the_setting() {
        let cases: Vec<(TableConfig, &str)> = vec![
            (
                TableConfig {
                    max_sessions: 0,
                    ..TableConfig::default()
                },
                "max sessions",
            ),
            (
                TableConfig {
                    max_sessions: usize::MAX,
                    ..TableConfig::default()
                },
                "max sessions",
            ),
            (
                TableConfig {
                    idle_timeout: Some(Duration::ZERO),
                    ..TableConfig::default()
                },
                "idle timeout",
            ),
            (
                TableConfig {
                    max_age: Some(Duration::from_secs(100 * 365 * 86_400)),
                    ..TableConfig::default()
                },
                "max age",
            ),
            (
                TableConfig {
                    cleanup_interval: Duration::ZERO,
                    ..TableConfig::default()
                },
                "cleanup interval",
            ),
            (
                TableConfig {
                    max_in_flight: 0,
                    ..TableConfig::default()
                },
                "max in flight",
            ),
            (
                TableConfig {
                    rate_limit: Some(RateLimit {
                        per_second: NonZeroU32::new(u32::MAX).expect("non-zero"),
                        burst: NonZeroU32::new(1).expect("non-zero"),
                    }),
                    ..TableConfig::default()
                },
                "rate limit",
            ),
        ];
        for (config, setting) in cases {
            let err = config.validate().expect_err(setting);
            assert_eq!(err.setting, setting);
            assert!(err.to_string().contains("must") || err.to_string().contains("at most"));
        }
    }

    #[test]
    fn session_durations_parse_with_units_and_reject_guesses() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("90").unwrap_err().contains("no unit"));
        assert!(parse_duration("soon")
            .unwrap_err()
            .contains("not a duration"));
        assert!(parse_duration("").is_err());
        assert_eq!(parse_optional_duration("off"), Ok(None));
        assert_eq!(
            parse_optional_duration("2h"),
            Ok(Some(Duration::from_secs(7200)))
        );
    }
}

/// Parses a size such as `64MiB`, `512KiB`, `1GiB`, `100MB` or a plain byte count.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let trimmed = text.trim();
    if trimmed.starts_with('-') {
        return Err(format!("`{trimmed}`: a size cannot be negative"));
    }
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("`{trimmed}` is not a size; use e.g. 64MiB, 512KiB, 1GiB"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit `{other}`; use B, KiB, MiB or GiB"
            ))
        }
    };
    value
        .checked_mul(multiplier)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| format!("`{trimmed}` is too large"))
}

#[cfg(test)]
mod size_tests {
    use super::parse_size;

    #[test]
    fn policy_memory_sizes_parse_with_units() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").unwrap_err().contains("unit"));
    }
}
