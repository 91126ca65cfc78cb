//! End-to-end test support for crius: a real `criusd` on a temporary root, a real OCI registry on
//! loopback, and test images built offline from Debian's `busybox-static`.

pub mod env;
pub mod flood;
pub mod harness;
pub mod host;
pub mod image;
pub mod registry;
