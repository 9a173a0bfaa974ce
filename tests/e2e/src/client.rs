//! Kubernetes clients built from the harness's kubeconfig.

use std::path::Path;

use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};

use crate::Error;

/// A client from `path`; with `token`, the kubeconfig's user is replaced by that bearer
/// token (to act as a ServiceAccount, not as the admin).
pub async fn from_kubeconfig(path: &Path, token: Option<&str>) -> Result<kube::Client, Error> {
    let err = |detail: String| Error::Client {
        path: path.to_owned(),
        detail,
    };
    let mut kc = Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
    if let Some(token) = token {
        for named in &mut kc.auth_infos {
            named.auth_info = Some(AuthInfo {
                token: Some(token.to_owned().into()),
                ..AuthInfo::default()
            });
        }
    }
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| err(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| err(e.to_string()))
}
