//! Shared by the build scripts of the shim (`shim-v2/build.rs`) and of berthd
//! (`cmd/build.rs`, through `#[path]`): a release build linked by lld with the functions an
//! order file names placed first. The kernel maps a binary's pages 64 KB or a page-cache
//! folio at a time around each fault, so code a process runs, gathered, keeps fewer pages
//! mapped. Names the file has that a build lacks are skipped (rerun the recording script
//! after a toolchain or dependency update); without `ld.lld` the link is the plain one.

/// Prints the link arguments for `order` (a file in the crate's directory) with `arg` as
/// the cargo instruction that carries them (`rustc-link-arg-bins` or
/// `rustc-link-arg-bin=NAME`); `what` names the binary in the warning when lld is absent.
pub fn link_in_order(order: &str, arg: &str, what: &str) {
    println!("cargo:rerun-if-changed={order}");
    println!("cargo:rerun-if-env-changed=PATH");
    if std::env::var("PROFILE").as_deref() != Ok("release") {
        return;
    }
    let lld = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("ld.lld").is_file()));
    if !lld {
        println!(
            "cargo:warning=ld.lld not found: {what} links without its function order (more memory); apt-get install lld"
        );
        return;
    }
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let path = std::path::Path::new(&dir).join(order);
    println!("cargo:{arg}=-fuse-ld=lld");
    println!("cargo:{arg}=-Wl,--symbol-ordering-file={}", path.display());
    println!("cargo:{arg}=-Wl,--no-warn-symbol-ordering");
}
