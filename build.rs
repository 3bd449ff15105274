//! Build script: compiles the tiny C helpers (initial-exec TLS) and
//! regenerates include/cma.h with cbindgen.

use std::env;
use std::path::PathBuf;

fn main() {
    let crate_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));

    println!("cargo:rerun-if-changed=csrc/tls.c");
    cc::Build::new()
        .file(crate_dir.join("csrc/tls.c"))
        .flag("-ftls-model=initial-exec")
        .flag("-fno-stack-protector")
        .opt_level(2)
        .compile("cma_tls");

    // C++ operator new/delete, only where the malloc family is exported.
    // No C++ standard library is linked: see the file's header comment.
    if env::var_os("CARGO_FEATURE_OVERRIDE").is_some() {
        println!("cargo:rerun-if-changed=csrc/new_delete.cpp");
        cc::Build::new()
            .cpp(true)
            .cpp_link_stdlib(None)
            .file(crate_dir.join("csrc/new_delete.cpp"))
            .flag("-std=c++17")
            .flag("-fexceptions")
            .flag("-fno-rtti")
            .flag("-fno-stack-protector")
            .opt_level(2)
            .compile("cma_new_delete");
    }

    // The shared library's soname carries the ABI version (make install
    // installs libcma.so.0.1.0 with the libcma.so.0 and libcma.so links).
    let major = env::var("CARGO_PKG_VERSION_MAJOR").expect("version");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcma.so.{major}");
    // Code starts on a page of its own, so its 59 KB take 15 OS pages, not
    // 16 across a boundary: every process maps the whole code segment
    // (fault-around), and a page less of it is 4 KiB less resident.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,separate-code");

    generate_header(&crate_dir);
}

/// Generates the header from the public API in src/api/ into OUT_DIR and
/// refreshes include/cma.h when it differs. include/cma.h is committed:
/// `tests/header.rs` fails when the committed copy differs from what the
/// build generates, so a stale header cannot land.
fn generate_header(crate_dir: &std::path::Path) {
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=src/api/error.rs");
    println!("cargo:rerun-if-changed=src/api/cma.rs");
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("cbindgen.toml must parse");
    // Only the public API files are parsed, so the malloc family (declared by
    // <stdlib.h>) never appears in cma.h.
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(crate_dir.join("src/api/error.rs"))
        .with_src(crate_dir.join("src/api/cma.rs"))
        .generate()
        .unwrap_or_else(|err| panic!("cbindgen failed: {err}"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    bindings.write_to_file(out_dir.join("cma.h"));
    // write_to_file leaves the file untouched when the text is unchanged.
    bindings.write_to_file(crate_dir.join("include/cma.h"));
}
