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
use std::path::Path;

fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
    println!("cargo:rerun-if-changed=link-order.txt");
    println!("cargo:rerun-if-env-changed=PATH");
    if std::env::var("PROFILE").as_deref() != Ok("release") {
        return;
    }
    let lld = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("ld.lld").is_file()));
    if !lld {
        println!(
            "cargo:warning=ld.lld not found: the shim links without its function order (more memory per shim); apt-get install lld"
        );
        return;
    }
    let order = Path::new(env!("CARGO_MANIFEST_DIR")).join("link-order.txt");
    println!("cargo:rustc-link-arg-bins=-fuse-ld=lld");
    println!(
        "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
        order.display()
    );
    println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
}
