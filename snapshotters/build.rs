//! Compiles berth's bridge to ISA-L's inflate against the installed header
//! (Debian: libisal-dev) and links libisal.

fn main() {
    println!("cargo:rerun-if-changed=csrc/isal_inflate.c");
    cc::Build::new()
        .file("csrc/isal_inflate.c")
        .warnings(true)
        .compile("berth_isal");
    println!("cargo:rustc-link-lib=dylib=isal");
}
