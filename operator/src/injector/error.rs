//! The injector's errors; `reason()` is the metric label and Event reason.

use super::certs::CertError;

/// What can fail in the injector's shell.
#[derive(Debug, thiserror::Error)]
pub enum InjectorError {
    /// An API call failed.
    #[error("{what}: {source}")]
    Kube {
        /// What was being done, naming the object.
        what: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The key material is unusable.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// The webhook server could not start or stopped.
    #[error("webhook server on {addr}: {source}; check --webhook-addr")]
    Serve {
        /// The address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl InjectorError {
    /// Wraps an API error with what was being done.
    pub fn kube(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let what = what.into();
        move |source| Self::Kube { what, source }
    }

    /// PascalCase reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Kube { .. } => "ApiError",
            Self::Cert(e) => e.reason(),
            Self::Serve { .. } => "ServeFailed",
        }
    }
}
