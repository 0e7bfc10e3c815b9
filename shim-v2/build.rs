//! How the shim binary is linked; every shim a host runs maps it, so its layout is memory.
//!
//! - Position-dependent: a PIE of its size carries ~20,000 relative relocations that the
//!   loader applies at every start, touching ~850 KB of pages (the relocation table and every
//!   page of .data.rel.ro) in each of the hundreds of shims a busy host runs. Linked at a fixed
//!   address, none of that happens.
//! - In release builds linked by lld with `link-order.txt` (the functions a serving shim runs,
//!   recorded by `scripts/shim-order.sh`) placed first: the kernel maps a file's pages 64 KB at
//!   a time around each fault, so code a shim uses spread over the whole 3.5 MB text made
//!   every shim map ~1.3 MB of it; gathered, ~0.8 MB. Names the file has that a build lacks
//!   (after a toolchain or dependency update) are skipped; rerun the script then.
#[path = "link_order.rs"]
mod link_order;

fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
    link_order::link_in_order("link-order.txt", "rustc-link-arg-bins", "the shim");
}
