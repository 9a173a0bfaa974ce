//! Writes the CRD manifests (`crds/*.yaml`) and the API reference (`docs/api.md`) from the
//! Rust types.
//!
//! Run from anywhere in the workspace: `cargo run -p palisade-crds --bin crdgen`.

use std::{path::Path, process::ExitCode};

fn main() -> ExitCode {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifests = match palisade_crds::manifests() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("crdgen: cannot serialize the CRDs: {e}");
            return ExitCode::FAILURE;
        }
    };
    for (file, yaml) in manifests {
        let path = dir.join(&file);
        if let Err(e) = std::fs::write(&path, yaml) {
            eprintln!("crdgen: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        eprintln!("crdgen: wrote {}", path.display());
    }
    let doc = dir.join("../docs/api.md");
    if let Err(e) = std::fs::write(&doc, palisade_crds::reference::api_markdown()) {
        eprintln!("crdgen: cannot write {}: {e}", doc.display());
        return ExitCode::FAILURE;
    }
    eprintln!("crdgen: wrote {}", doc.display());
    ExitCode::SUCCESS
}
