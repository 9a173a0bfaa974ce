//! The Palisade sidecar: a reverse proxy in front of each protected API container that
//! identifies the client, enforces the namespace's policy bundle and counts for detection.

fn main() {}
