//! Stop signals as the CRI `Signal` enum carries them, and their Linux numbers.

use cri_api::v1::Signal;
use crius_runtime::signal::{name, parse};

/// A `ContainerConfig.stop_signal` outside the CRI `Signal` enum.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value} is not a CRI Signal")]
pub(crate) struct NotCri {
    value: i32,
}

/// The number of a CRI `ContainerConfig.stop_signal`; `None` for RUNTIME_DEFAULT.
pub(crate) fn from_cri(value: i32) -> Result<Option<i32>, NotCri> {
    let signal = Signal::try_from(value).map_err(|_| NotCri { value })?;
    if signal == Signal::RuntimeDefault {
        return Ok(None);
    }
    Ok(Some(
        parse(signal.as_str_name()).map_err(|_| NotCri { value })?,
    ))
}

/// The CRI `Signal` of signal number `n` (RUNTIME_DEFAULT when it has no name).
pub(crate) fn to_cri(n: i32) -> i32 {
    name(n)
        .and_then(|name| Signal::from_str_name(&name))
        .map_or(Signal::RuntimeDefault as i32, |s| s as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cri_signal_round_trips() {
        for value in 1..=65 {
            let n = from_cri(value).expect("known").expect("a signal");
            let back = to_cri(n);
            assert_eq!(
                from_cri(back).expect("known"),
                Some(n),
                "{:?}",
                Signal::try_from(value)
            );
        }
        assert_eq!(from_cri(0), Ok(None));
        assert_eq!(from_cri(99), Err(NotCri { value: 99 }));
        assert_eq!(to_cri(15), Signal::Sigterm as i32);
        assert_eq!(to_cri(10), Signal::Sigusr1 as i32);
    }
}
