//! CNI specification versions.

use std::fmt;

/// A CNI specification version (`cniVersion`), `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CniVersion {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch version.
    pub patch: u32,
}

impl CniVersion {
    /// CNI 0.4.0, the first version with CHECK and prevResult on DEL.
    pub const V0_4_0: Self = Self::new(0, 4, 0);
    /// CNI 1.0.0.
    pub const V1_0_0: Self = Self::new(1, 0, 0);

    /// The versions crius can drive: the result layout of 0.3.x/0.4.0 and of 1.x.
    pub const SUPPORTED: [Self; 5] = [
        Self::new(0, 3, 0),
        Self::new(0, 3, 1),
        Self::new(0, 4, 0),
        Self::new(1, 0, 0),
        Self::new(1, 1, 0),
    ];

    /// A version from its parts.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    /// Parses `major.minor.patch`.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split('.').map(|p| p.parse::<u32>().ok());
        let v = Self::new(parts.next()??, parts.next()??, parts.next()??);
        parts.next().is_none().then_some(v)
    }

    /// Parses a version and checks that crius supports it.
    pub fn parse_supported(text: &str) -> Result<Self, UnsupportedVersion> {
        match Self::parse(text) {
            Some(v) if Self::SUPPORTED.contains(&v) => Ok(v),
            _ => Err(UnsupportedVersion {
                text: text.to_owned(),
            }),
        }
    }

    /// Whether plugins of this version know CHECK and get a prevResult on DEL.
    pub fn has_check(self) -> bool {
        self >= Self::V0_4_0
    }
}

/// A `cniVersion` that does not parse or that crius cannot drive.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unsupported cniVersion {text:?} (crius supports {})",
    CniVersion::SUPPORTED.map(|v| v.to_string()).join(", ")
)]
pub struct UnsupportedVersion {
    /// The version as the config gives it.
    pub text: String,
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders() {
        assert_eq!(CniVersion::parse("1.0.0"), Some(CniVersion::V1_0_0));
        assert_eq!(CniVersion::parse("1.0"), None);
        assert_eq!(CniVersion::parse("1.0.0.0"), None);
        assert_eq!(CniVersion::parse("a.b.c"), None);
        assert!(CniVersion::parse_supported("0.3.1").is_ok());
        assert_eq!(
            CniVersion::parse_supported("0.2.0")
                .expect_err("too old")
                .to_string(),
            "unsupported cniVersion \"0.2.0\" (crius supports 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0)"
        );
        assert!(!CniVersion::new(0, 3, 1).has_check());
        assert!(CniVersion::V0_4_0.has_check());
        assert!(CniVersion::V1_0_0.has_check());
    }
}
