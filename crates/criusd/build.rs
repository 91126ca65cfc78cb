//! Links criusd as a position-dependent executable.
//!
//! criusd is also every pod's monitor (`criusd monitor`). In a position-independent executable
//! the loader writes the address of every pointer in `.data.rel.ro` (vtables, panic locations,
//! string tables: ~800 KiB here) into a private copy of those pages in each process; linked at a
//! fixed address they stay clean pages of the file, shared by all monitors and sandbox
//! processes. The cost is ASLR of the executable image itself (libraries, heap, stacks and
//! mmaps stay randomized), the same trade as the static Go shims of other runtimes.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
