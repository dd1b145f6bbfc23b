//! Regenerates the gRPC code from the `.proto` files and fails if the
//! committed code in `src/gen/` differs. Run with `RONDO_BLESS=1` to update.

#![allow(clippy::expect_used)]

use std::path::PathBuf;

#[test]
fn generated_code_is_up_to_date() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let protos = [
        root.join("proto/rondo/storage/v1/storage.proto"),
        root.join("proto/rondo/ring/v1/ring.proto"),
    ];
    let includes = [root.join("proto")];
    let fds = protox::compile(protos, includes).expect("compile protos");
    let out = tempfile_dir();
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .out_dir(&out)
        .compile_fds(fds)
        .expect("generate code");
    let committed_dir = root.join("src/gen");
    let bless = std::env::var_os("RONDO_BLESS").is_some();
    let mut stale = Vec::new();
    for entry in std::fs::read_dir(&out).expect("read out dir") {
        let entry = entry.expect("dir entry");
        let name = entry.file_name();
        let fresh = std::fs::read_to_string(entry.path()).expect("read generated");
        let committed_path = committed_dir.join(&name);
        let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
        if committed != fresh {
            if bless {
                std::fs::write(&committed_path, &fresh).expect("write generated");
            } else {
                stale.push(name.to_string_lossy().into_owned());
            }
        }
    }
    let _ = std::fs::remove_dir_all(&out);
    assert!(
        stale.is_empty(),
        "generated code is stale: {stale:?}; run `RONDO_BLESS=1 cargo test -p rondo-proto`"
    );
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rondo-proto-gen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}
