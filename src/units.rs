//! Human-friendly durations (`"7d"`, `"90s"`) and byte sizes (`"16MiB"`) for config and policies.
//!
//! Policies are written by admins, not programmers: `after = "7d"` reads better than
//! `after = 604800`. Both types parse from strings with a clear error naming the bad value,
//! so a typo never silently means "never expire" or "no limit".

use std::{fmt, str::FromStr, time::Duration};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A parse failure for a duration or size string.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{what} {value:?}: {why}")]
pub struct UnitError {
    what: &'static str,
    value: String,
    why: &'static str,
}

/// A span of time written as `<number><unit>`, unit one of `s`, `m`, `h`, `d`, `w`
/// (also `ms` for timeouts). Several parts may follow each other: `"1h30m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span(pub Duration);

impl Span {
    pub const fn secs(s: u64) -> Self {
        Span(Duration::from_secs(s))
    }
    pub fn get(self) -> Duration {
        self.0
    }
}

impl FromStr for Span {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why| UnitError { what: "duration", value: s.to_owned(), why };
        let text = s.trim();
        if text.is_empty() {
            return Err(err("empty; write e.g. \"90s\", \"10m\", \"7d\""));
        }
        let mut total = Duration::ZERO;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(err("expected a number before the unit"));
            }
            let n: u64 = rest[..digits].parse().map_err(|_| err("number too large"))?;
            rest = &rest[digits..];
            let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let part = match unit {
                "ms" => Duration::from_millis(n),
                "s" => Duration::from_secs(n),
                "m" => Duration::from_secs(n.saturating_mul(60)),
                "h" => Duration::from_secs(n.saturating_mul(3600)),
                "d" => Duration::from_secs(n.saturating_mul(86_400)),
                "w" => Duration::from_secs(n.saturating_mul(604_800)),
                "" => return Err(err("missing unit; use s, m, h, d or w")),
                _ => return Err(err("unknown unit; use s, m, h, d or w")),
            };
            total = total.saturating_add(part);
        }
        Ok(Span(total))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        if self.0.subsec_millis() != 0 || secs == 0 {
            return write!(f, "{}ms", self.0.as_millis());
        }
        for (unit, len) in [("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60)] {
            if secs.is_multiple_of(len) {
                return write!(f, "{}{unit}", secs / len);
            }
        }
        write!(f, "{secs}s")
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A byte count written as `<number>[B|KB|KiB|MB|MiB|GB|GiB]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Size(pub u64);

impl FromStr for Size {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why| UnitError { what: "size", value: s.to_owned(), why };
        let text = s.trim();
        let digits = text.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(err("expected a number, e.g. \"16MiB\""));
        }
        let n: u64 = text[..digits].parse().map_err(|_| err("number too large"))?;
        let factor: u64 = match text[digits..].trim() {
            "" | "B" => 1,
            "KB" | "kB" => 1000,
            "KiB" => 1024,
            "MB" => 1_000_000,
            "MiB" => 1 << 20,
            "GB" => 1_000_000_000,
            "GiB" => 1 << 30,
            _ => return Err(err("unknown unit; use B, KB, KiB, MB, MiB, GB or GiB")),
        };
        n.checked_mul(factor).map(Size).ok_or_else(|| err("too large"))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, len) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if self.0 >= len && self.0.is_multiple_of(len) {
                return write!(f, "{}{unit}", self.0 / len);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(n) => Ok(Size(n)),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_in_every_unit() {
        assert_eq!("90s".parse::<Span>().unwrap().0.as_secs(), 90);
        assert_eq!("10m".parse::<Span>().unwrap().0.as_secs(), 600);
        assert_eq!("2h".parse::<Span>().unwrap().0.as_secs(), 7200);
        assert_eq!("7d".parse::<Span>().unwrap().0.as_secs(), 604_800);
        assert_eq!("1w".parse::<Span>().unwrap().0.as_secs(), 604_800);
        assert_eq!("1h30m".parse::<Span>().unwrap().0.as_secs(), 5400);
        assert_eq!("250ms".parse::<Span>().unwrap().0.as_millis(), 250);
    }

    #[test]
    fn bad_spans_say_why() {
        let e = "7days".parse::<Span>().unwrap_err().to_string();
        assert!(e.contains("unknown unit"), "{e}");
        assert!("7".parse::<Span>().unwrap_err().to_string().contains("missing unit"));
        assert!("d".parse::<Span>().is_err());
        assert!("".parse::<Span>().is_err());
    }

    #[test]
    fn spans_print_back_in_their_largest_unit() {
        assert_eq!(Span::secs(604_800).to_string(), "1w");
        assert_eq!(Span::secs(90).to_string(), "90s");
        assert_eq!(Span::secs(7200).to_string(), "2h");
    }

    #[test]
    fn sizes() {
        assert_eq!("16MiB".parse::<Size>().unwrap().0, 16 << 20);
        assert_eq!("1MB".parse::<Size>().unwrap().0, 1_000_000);
        assert_eq!("512".parse::<Size>().unwrap().0, 512);
        assert!("16 furlongs".parse::<Size>().is_err());
        assert_eq!(Size(16 << 20).to_string(), "16MiB");
    }
}
