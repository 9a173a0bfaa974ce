//! The injector flags for how injected sidecars treat request paths: escaped slashes and
//! whether the normalised or the original path is forwarded (the sidecar's
//! `PALISADE_ESCAPED_SLASHES`, `PALISADE_FORWARD_ORIGINAL_PATH`).

use clap::ValueEnum;

/// What injected sidecars do with `%2F`, `%5C` and `\` in a path (the sidecar's
/// `--escaped-slashes`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum EscapedSlashes {
    /// Answer 400: routers disagree on whether they separate segments.
    #[default]
    Reject,
    /// Keep them as data inside a segment.
    Keep,
    /// Turn each into `/`, then normalise.
    Unescape,
}

impl EscapedSlashes {
    /// The sidecar's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reject => "reject",
            Self::Keep => "keep",
            Self::Unescape => "unescape",
        }
    }
}

/// Path settings of injected sidecars.
#[derive(Debug, Clone, clap::Args)]
pub struct PathArgs {
    /// `%2F`, `%5C` and `\` in a path: `reject` (400), `keep` (data inside a segment) or
    /// `unescape` (each becomes `/`). See "Path normalisation" in docs/sidecar.md.
    #[arg(
        long,
        env = "PALISADE_SIDECAR_ESCAPED_SLASHES",
        value_enum,
        default_value_t = EscapedSlashes::Reject
    )]
    pub sidecar_escaped_slashes: EscapedSlashes,
    /// Sidecars forward the path as the client sent it instead of the normalised path (path
    /// conditions still match the normalised path).
    #[arg(long, env = "PALISADE_SIDECAR_FORWARD_ORIGINAL_PATH")]
    pub sidecar_forward_original_path: bool,
}
