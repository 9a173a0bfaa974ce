//! Change notifications of one named object, for the loops that re-read it (the webhook
//! certificate, the bundle-signing keys).

use futures::StreamExt as _;
use kube::api::Api;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};

/// Yields once per change of the object `name` of `api` (created, modified, deleted, or
/// relisted after a watch restart). The watch is restricted to the one name, which RBAC
/// `resourceNames` can authorize; watch errors are logged (naming `what`) and retried with
/// backoff. Never ends.
pub fn changes<K>(
    api: Api<K>,
    name: String,
    what: &'static str,
) -> futures::stream::BoxStream<'static, ()>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    watcher::watcher(api, config)
        .default_backoff()
        .filter_map(move |event| {
            let changed = match event {
                Ok(Event::Apply(_) | Event::Delete(_) | Event::InitDone) => Some(()),
                Ok(Event::Init | Event::InitApply(_)) => None,
                Err(e) => {
                    tracing::warn!(error = %e, name = %name, "watching the {what}");
                    None
                }
            };
            std::future::ready(changed)
        })
        .chain(futures::stream::pending())
        .boxed()
}
