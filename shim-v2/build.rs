//! The shim links as a position-dependent executable: a PIE of its size carries ~20,000
//! relative relocations that the loader applies at every start, touching ~850 KB of pages
//! (the relocation table and every page of .data.rel.ro) in each of the hundreds of shims
//! a busy host runs. Linked at a fixed address, none of that happens.
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
