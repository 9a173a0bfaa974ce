//! Palisade's end-to-end test support: a real Kubernetes control plane (etcd,
//! kube-apiserver, kube-controller-manager) started on loopback, shared by the tests of one
//! `cargo test` process, with one throwaway namespace per test.
