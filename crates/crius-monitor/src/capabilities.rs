//! This process's capability sets, through the `caps` crate (as libcontainer sets them for a
//! container's first process). Capabilities are masks of bits by number, as `/proc/PID/status`
//! shows them; a bit the `caps` crate has no name for is left alone.

use caps::{CapSet, CapsHashSet};

/// The named capabilities whose bits are set in `mask`.
fn named(mask: u64) -> CapsHashSet {
    caps::all()
        .into_iter()
        .filter(|c| mask & c.bitmask() != 0)
        .collect()
}

/// Drops every capability not in `keep` from the bounding set. A capability the kernel does not
/// know, or a drop it refuses, is passed over.
pub(crate) fn drop_bounding_except(keep: u64) {
    for cap in caps::all() {
        if keep & cap.bitmask() == 0 {
            let _ = caps::drop(None, CapSet::Bounding, cap);
        }
    }
}

/// Empties the ambient set; a kernel without ambient capabilities has nothing to clear.
pub(crate) fn clear_ambient() {
    let _ = caps::clear(None, CapSet::Ambient);
}

/// A capability set the kernel refused.
#[derive(Debug, thiserror::Error)]
#[error("cannot set the {set} capabilities: {source}")]
pub(crate) struct SetError {
    /// The set: `effective`, `permitted` or `inheritable`.
    set: &'static str,
    /// What the `caps` crate reported.
    source: caps::errors::CapsError,
}

#[cfg(test)]
impl SetError {
    /// A refusal of the effective set, saying `why`.
    pub(crate) fn fake(why: &str) -> SetError {
        SetError {
            set: "effective",
            source: why.into(),
        }
    }
}

/// Sets the effective and permitted sets to `mask` and empties the inheritable set. The
/// effective set goes first: it may never hold more than the permitted set.
pub(crate) fn set(mask: u64) -> Result<(), SetError> {
    let wanted = named(mask);
    for (name, set, value) in [
        ("effective", CapSet::Effective, &wanted),
        ("permitted", CapSet::Permitted, &wanted),
        ("inheritable", CapSet::Inheritable, &CapsHashSet::new()),
    ] {
        caps::set(None, set, value).map_err(|source| SetError { set: name, source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use caps::Capability;

    #[test]
    fn masks_name_capabilities_by_bit_number() {
        let mask = (1 << Capability::CAP_CHOWN.index())
            | (1 << Capability::CAP_SYS_ADMIN.index())
            | (1 << Capability::CAP_CHECKPOINT_RESTORE.index());
        let set = named(mask);
        assert_eq!(set.len(), 3);
        assert!(set.contains(&Capability::CAP_SYS_ADMIN));
        assert!(set.contains(&Capability::CAP_CHECKPOINT_RESTORE));
        assert!(named(0).is_empty());
        assert_eq!(named(u64::MAX), caps::all());
    }

    #[test]
    fn setting_what_is_held_keeps_it() {
        let held = caps::read(None, CapSet::Permitted).expect("capget");
        let mask = held.iter().fold(0, |m, c| m | c.bitmask());
        let effective = caps::read(None, CapSet::Effective).expect("capget");
        let inheritable = caps::read(None, CapSet::Inheritable).expect("capget");
        if effective != held || !inheritable.is_empty() {
            return;
        }
        set(mask).expect("capset of the sets already held");
        assert_eq!(caps::read(None, CapSet::Permitted).expect("capget"), held);
        assert_eq!(caps::read(None, CapSet::Effective).expect("capget"), held);
    }
}
