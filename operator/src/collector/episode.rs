//! Warnings raised once per episode and namespace (the client IP is a proxy's, an error
//! surge): raised when a finding crosses its raise threshold, over when it falls below a
//! lower clear threshold (the gap keeps a namespace near the threshold from warning again and
//! again) or the namespace goes quiet.

use std::collections::HashSet;

/// The namespaces in an episode.
#[derive(Debug, Default)]
pub struct Episodes(HashSet<String>);

impl Episodes {
    /// Records this tick for `ns`: returns true when an episode starts now (none was on and
    /// `raise`); an episode on ends when `clear`.
    pub fn update(&mut self, ns: &str, raise: bool, clear: bool) -> bool {
        if self.0.contains(ns) {
            if clear {
                self.0.remove(ns);
            }
            return false;
        }
        if raise {
            self.0.insert(ns.to_owned());
        }
        raise
    }

    /// Whether `ns` is in an episode.
    pub fn contains(&self, ns: &str) -> bool {
        self.0.contains(ns)
    }

    /// How many namespaces are in an episode.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}
