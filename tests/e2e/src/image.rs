//! Container images without a registry: OCI image archives (an `oci-layout`, an
//! `index.json`, a manifest, a config and one uncompressed tar layer) written from the
//! project's own binaries, for `ctr images import` on the e2e node.
//!
//! A dynamically linked binary is packed with the shared libraries `ldd` lists, at the paths
//! it lists them, so the image needs no base image.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest as _, Sha256};

use crate::Error;

/// One image to build: its reference, the files of its single layer and how it starts.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// Full reference, e.g. `palisade.local/operator:e2e` (what pods name in `image:`).
    pub reference: String,
    /// `(source file on this machine, absolute path in the image, mode)`.
    pub files: Vec<(PathBuf, String, u32)>,
    /// The image's entrypoint.
    pub entrypoint: Vec<String>,
}

impl ImageSpec {
    /// An image of `bin` at `/usr/local/bin/<name>` (its entrypoint) plus the shared
    /// libraries it links, found with `ldd`.
    pub fn for_binary(reference: &str, bin: &Path) -> Result<Self, Error> {
        let name = bin
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Error::Image(format!("{} has no file name", bin.display())))?;
        let dest = format!("/usr/local/bin/{name}");
        let mut files = vec![(bin.to_path_buf(), dest.clone(), 0o755)];
        for lib in shared_libraries(bin)? {
            let path = lib.display().to_string();
            files.push((lib, path, 0o755));
        }
        Ok(Self {
            reference: reference.to_owned(),
            files,
            entrypoint: vec![dest],
        })
    }
}

/// The shared libraries `ldd` lists for `bin` (none for a static binary).
pub fn shared_libraries(bin: &Path) -> Result<Vec<PathBuf>, Error> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .map_err(|e| Error::io("run ldd on", bin, e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // `ldd` exits 1 with "not a dynamic executable" for a static binary.
        return Ok(vec![]);
    }
    let mut libs = vec![];
    for line in text.lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        } else if line.contains("not found") {
            return Err(Error::Image(format!(
                "{}: a shared library is missing: {line}",
                bin.display()
            )));
        }
    }
    Ok(libs)
}

/// Writes `spec` as an OCI image archive at `out`; returns the manifest digest.
pub fn write_oci_archive(spec: &ImageSpec, out: &Path) -> Result<String, Error> {
    let layer = layer_tar(spec)?;
    let layer_digest = sha256(&layer);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": spec.entrypoint,
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created_by": "palisade-e2e image builder"}],
    }))
    .map_err(|e| Error::Image(format!("config of {}: {e}", spec.reference)))?;
    let config_digest = sha256(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer.len(),
        }],
    }))
    .map_err(|e| Error::Image(format!("manifest of {}: {e}", spec.reference)))?;
    let manifest_digest = sha256(&manifest);
    let tag = spec.reference.rsplit_once(':').map_or("latest", |(_, t)| t);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {
                "io.containerd.image.name": spec.reference,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    }))
    .map_err(|e| Error::Image(format!("index of {}: {e}", spec.reference)))?;

    let blob = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    let mut tar = Tar::default();
    tar.dir("blobs", 0o755);
    tar.dir("blobs/sha256", 0o755);
    tar.file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#, 0o644);
    tar.file("index.json", &index, 0o644);
    tar.file(&blob(&manifest_digest), &manifest, 0o644);
    tar.file(&blob(&config_digest), &config, 0o644);
    tar.file(&blob(&layer_digest), &layer, 0o644);
    std::fs::write(out, tar.finish()).map_err(|e| Error::io("write", out, e))?;
    Ok(manifest_digest)
}

/// The image's one layer: every parent directory, `/tmp` (1777) and the files.
fn layer_tar(spec: &ImageSpec) -> Result<Vec<u8>, Error> {
    let mut tar = Tar::default();
    let mut dirs: Vec<String> = vec!["tmp".into()];
    for (_, dest, _) in &spec.files {
        let rel = dest.trim_start_matches('/');
        let mut acc = String::new();
        for part in rel
            .split('/')
            .collect::<Vec<_>>()
            .iter()
            .rev()
            .skip(1)
            .rev()
        {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(part);
            if !dirs.contains(&acc) {
                dirs.push(acc.clone());
            }
        }
    }
    dirs.sort();
    for d in &dirs {
        tar.dir(d, if d == "tmp" { 0o1777 } else { 0o755 });
    }
    for (src, dest, mode) in &spec.files {
        let bytes = std::fs::read(src).map_err(|e| Error::io("read", src, e))?;
        tar.file(dest.trim_start_matches('/'), &bytes, *mode);
    }
    Ok(tar.finish())
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A minimal ustar writer: regular files and directories, owned by 0:0, mtime 0.
#[derive(Default)]
struct Tar(Vec<u8>);

impl Tar {
    fn dir(&mut self, path: &str, mode: u32) {
        self.header(&format!("{path}/"), 0, mode, b'5');
    }

    fn file(&mut self, path: &str, bytes: &[u8], mode: u32) {
        self.header(path, bytes.len(), mode, b'0');
        self.0.extend_from_slice(bytes);
        let pad = (512 - bytes.len() % 512) % 512;
        self.0.extend(std::iter::repeat_n(0, pad));
    }

    fn header(&mut self, path: &str, size: usize, mode: u32, kind: u8) {
        let mut h = [0u8; 512];
        let (prefix, name) = if path.len() > 100 {
            let cut = path[..path.len() - 100].len()
                + path[path.len() - 100..].find('/').unwrap_or_default();
            (&path[..cut], &path[cut + 1..])
        } else {
            ("", path)
        };
        h[..name.len()].copy_from_slice(name.as_bytes());
        let octal = |h: &mut [u8; 512], at: usize, width: usize, v: u64| {
            let s = format!("{v:0w$o}", w = width - 1);
            h[at..at + width - 1].copy_from_slice(s.as_bytes());
        };
        octal(&mut h, 100, 8, u64::from(mode));
        octal(&mut h, 108, 8, 0);
        octal(&mut h, 116, 8, 0);
        octal(&mut h, 124, 12, size as u64);
        octal(&mut h, 136, 12, 0);
        h[148..156].copy_from_slice(b"        ");
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        self.0.extend_from_slice(&h);
    }

    fn finish(mut self) -> Vec<u8> {
        self.0.extend(std::iter::repeat_n(0, 1024));
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_archive_is_a_tar_that_system_tar_lists_with_the_layout_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let bin = dir.path().join("hello");
        std::fs::write(&bin, b"#!/bin/sh\necho hi\n").expect("write");
        let spec = ImageSpec {
            reference: "palisade.local/hello:t".into(),
            files: vec![(bin, "/usr/local/bin/hello".into(), 0o755)],
            entrypoint: vec!["/usr/local/bin/hello".into()],
        };
        let out = dir.path().join("hello.tar");
        let digest = write_oci_archive(&spec, &out).expect("archive");
        let list = Command::new("tar")
            .arg("-tvf")
            .arg(&out)
            .output()
            .expect("tar");
        assert!(list.status.success(), "{list:?}");
        let text = String::from_utf8_lossy(&list.stdout);
        for want in [
            "oci-layout",
            "index.json",
            digest.trim_start_matches("sha256:"),
        ] {
            assert!(text.contains(want), "{want} not in:\n{text}");
        }
    }
}
