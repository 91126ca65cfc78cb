//! Stop signals: names (the image's `STOPSIGNAL` text, `SIGRTMIN+3`) and Linux numbers.

/// The lowest real-time signal a process may use (glibc reserves 32 and 33).
const SIGRTMIN: i32 = 34;
/// The highest signal.
const SIGRTMAX: i32 = 64;

/// Standard signal names (without `SIG`) and numbers, canonical names first.
const NAMES: [(&str, i32); 34] = [
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("IOT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("POLL", 29),
    ("PWR", 30),
    ("SYS", 31),
];

/// Why a stop signal is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignalError {
    /// Text that names no signal.
    #[error("bad stop signal {text:?}")]
    Unknown {
        /// The text.
        text: String,
    },
}

/// A signal name (`SIGTERM`, `TERM`, `SIGRTMIN+3`, `RTMAXMINUS1`) or number; SIGTERM when
/// empty.
pub fn parse(text: &str) -> Result<i32, SignalError> {
    let bad = || SignalError::Unknown {
        text: text.to_owned(),
    };
    let t = text.trim();
    if t.is_empty() {
        return Ok(15);
    }
    if let Ok(n) = t.parse::<i32>() {
        return (1..=SIGRTMAX).contains(&n).then_some(n).ok_or_else(bad);
    }
    let upper = t.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some((_, n)) = NAMES.iter().find(|(n, _)| *n == name) {
        return Ok(*n);
    }
    let offset = |rest: &str| -> Result<i32, SignalError> {
        if rest.is_empty() {
            return Ok(0);
        }
        let digits = rest
            .strip_prefix('+')
            .or_else(|| rest.strip_prefix("PLUS"))
            .or_else(|| rest.strip_prefix('-'))
            .or_else(|| rest.strip_prefix("MINUS"))
            .ok_or_else(bad)?;
        digits.parse::<i32>().map_err(|_| bad())
    };
    let n = if let Some(rest) = name.strip_prefix("RTMIN") {
        SIGRTMIN + offset(rest)?
    } else if let Some(rest) = name.strip_prefix("RTMAX") {
        SIGRTMAX - offset(rest)?
    } else {
        return Err(bad());
    };
    (SIGRTMIN..=SIGRTMAX)
        .contains(&n)
        .then_some(n)
        .ok_or_else(bad)
}

/// The canonical name of signal `n` (`SIGTERM`, `SIGRTMINPLUS3`, `SIGRTMAXMINUS1`), as the
/// CRI's `Signal` enum spells it; none for a number without one.
pub fn name(n: i32) -> Option<String> {
    match NAMES.iter().find(|(_, v)| *v == n) {
        Some((name, _)) => Some(format!("SIG{name}")),
        None if n == SIGRTMIN => Some("SIGRTMIN".to_owned()),
        None if n == SIGRTMAX => Some("SIGRTMAX".to_owned()),
        None if (SIGRTMIN..SIGRTMIN + 16).contains(&n) => {
            Some(format!("SIGRTMINPLUS{}", n - SIGRTMIN))
        }
        None if (SIGRTMAX - 14..SIGRTMAX).contains(&n) => {
            Some(format!("SIGRTMAXMINUS{}", SIGRTMAX - n))
        }
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_numbers() {
        assert_eq!(parse(""), Ok(15));
        assert_eq!(parse("SIGQUIT"), Ok(3));
        assert_eq!(parse("usr1"), Ok(10));
        assert_eq!(parse("9"), Ok(9));
        assert_eq!(parse("SIGRTMIN+3"), Ok(37));
        assert_eq!(parse("SIGRTMAX-1"), Ok(63));
        assert_eq!(
            parse("SIGNOPE").map_err(|e| e.to_string()),
            Err("bad stop signal \"SIGNOPE\"".to_owned())
        );
        assert!(parse("65").is_err());
        assert!(parse("SIGRTMIN+40").is_err());
    }

    #[test]
    fn names_parse_back() {
        for n in 1..=64 {
            if let Some(name) = name(n) {
                assert_eq!(parse(&name), Ok(n), "{name}");
            }
        }
        assert_eq!(name(15).as_deref(), Some("SIGTERM"));
        assert_eq!(name(37).as_deref(), Some("SIGRTMINPLUS3"));
        assert_eq!(name(0), None);
    }
}
