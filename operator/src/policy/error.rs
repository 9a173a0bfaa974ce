//! Why a namespace could not be reconciled.

/// An error of the policy controller; `reason()` is its metric label.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing an object failed.
    #[error("{what} in namespace {namespace}: {source}")]
    Kube {
        /// What the controller was doing.
        what: &'static str,
        /// The namespace reconciled.
        namespace: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The compiled bundle could not be encoded (too large, too many shards).
    #[error("encoding the bundle of namespace {namespace}: {source}")]
    Encode {
        /// The namespace reconciled.
        namespace: String,
        /// The codec error.
        #[source]
        source: palisade_policy::BundleError,
    },
}

impl Error {
    /// A short PascalCase reason (metric label, Event reason).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Kube { .. } => "KubeApi",
            Self::Encode { .. } => "BundleEncode",
        }
    }

    pub(super) fn kube(what: &'static str, namespace: &str) -> impl FnOnce(kube::Error) -> Self {
        let namespace = namespace.to_owned();
        move |source| Self::Kube {
            what,
            namespace,
            source,
        }
    }
}
