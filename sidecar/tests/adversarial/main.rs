//! The adversarial suite: what a hostile client (or an ordinary-but-unusual set-up) tries
//! against the sidecar, over real sockets, each case named for the class it holds shut. A
//! dependency upgrade (hyper, h2) or a refactor that reopens one of them fails here.
//! docs/security.md lists every class with its defence and the test that holds it.
//!
//! One module per class of attack; each module starts its own app and sidecar.
#![allow(clippy::unwrap_used)]

mod headers;
mod identity;
mod paths;
#[path = "../support/mod.rs"]
mod support;

mod clients;
mod connections;
mod smuggling;
mod upstream;
