//! Compiles `bpf/kindling.bpf.c` into a libbpf skeleton when the `loader`
//! feature is on. Without it the crate is pure Rust (ABI + capture files).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "loader")]
    build_skeleton();
}

#[cfg(feature = "loader")]
fn build_skeleton() {
    use std::path::PathBuf;

    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let bpf = manifest.join("bpf");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it"));
    let arch = match std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "x86",
        Ok("aarch64") => "arm64",
        Ok(other) => panic!("kindling-probe: unsupported target architecture {other}"),
        Err(_) => panic!("kindling-probe: CARGO_CFG_TARGET_ARCH is not set"),
    };
    // the socket probe, and the packet tracer (loaded only while tracing)
    for name in ["kindling", "packets"] {
        libbpf_cargo::SkeletonBuilder::new()
            .source(bpf.join(format!("{name}.bpf.c")))
            .clang_args([
                "-I".into(),
                bpf.clone().into_os_string(),
                format!("-D__TARGET_ARCH_{arch}").into(),
                "-Wall".into(),
                "-Wno-unused-function".into(),
            ])
            .build_and_generate(out_dir.join(format!("{name}.skel.rs")))
            .unwrap_or_else(|e| {
                panic!("kindling-probe: compiling {name}.bpf.c failed (is clang installed?): {e:#}")
            });
    }
    for f in ["kindling.bpf.c", "packets.bpf.c", "kindling.h", "vmlinux.h"] {
        println!("cargo:rerun-if-changed={}", bpf.join(f).display());
    }
}
