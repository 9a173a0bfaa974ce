//! Errors of decoding (and encoding) bundles and detected-client documents.

use thiserror::Error;

/// Why a bundle or detected-client document cannot be used. A sidecar keeps its last good
/// policy on any of these.
#[derive(Debug, Error)]
pub enum BundleError {
    /// The format version is not the one this build reads.
    #[error(
        "bundle format version {found} is not supported (this build reads {supported}); upgrade the sidecar or the operator so that they match"
    )]
    UnsupportedVersion {
        /// The version found.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The bundle needs (or the manifest lists) more shards than allowed.
    #[error(
        "bundle needs {shards} shards, more than the {} allowed; shrink the referenced lists",
        crate::MAX_SHARDS
    )]
    TooLarge {
        /// Shards needed or listed.
        shards: usize,
    },
    /// A shard named by the manifest is missing.
    #[error(
        "shard {name} named by the manifest is missing; the bundle is being rewritten or was deleted"
    )]
    MissingShard {
        /// The shard's name.
        name: String,
    },
    /// A shard's size differs from the manifest or exceeds the limit.
    #[error(
        "shard {name} has {found} bytes, the manifest says {expected} (limit {})",
        crate::SHARD_MAX_BYTES
    )]
    ShardSize {
        /// The shard's name.
        name: String,
        /// Size in the manifest.
        expected: u64,
        /// Actual size.
        found: u64,
    },
    /// A shard's sha256 differs from the manifest.
    #[error(
        "shard {name} does not match its sha256 in the manifest; it is corrupt or from another bundle"
    )]
    ShardHash {
        /// The shard's name.
        name: String,
    },
    /// The sections do not hash to the manifest's bundle hash.
    #[error("bundle content does not match the manifest's bundle hash")]
    BundleHash,
    /// A shard does not inflate (or inflates beyond the limit).
    #[error("shard {name} cannot be decompressed")]
    Inflate {
        /// The shard's name.
        name: String,
        /// The zlib error.
        #[source]
        source: std::io::Error,
    },
    /// The content is structurally wrong.
    #[error("bundle is malformed: {what}")]
    Malformed {
        /// What is wrong.
        what: String,
    },
    /// JSON metadata cannot be (de)serialised.
    #[error("bundle metadata is not valid JSON")]
    Json(#[source] serde_json::Error),
}

impl BundleError {
    /// A short PascalCase reason, fit for metric labels and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::UnsupportedVersion { .. } => "UnsupportedVersion",
            Self::TooLarge { .. } => "BundleTooLarge",
            Self::MissingShard { .. } => "MissingShard",
            Self::ShardSize { .. } => "ShardSizeMismatch",
            Self::ShardHash { .. } => "ShardHashMismatch",
            Self::BundleHash => "BundleHashMismatch",
            Self::Inflate { .. } => "CorruptShard",
            Self::Malformed { .. } | Self::Json(_) => "MalformedBundle",
        }
    }
}
