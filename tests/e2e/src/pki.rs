//! The control plane's key material: a throwaway CA, the apiserver's serving certificate,
//! an admin client certificate (group `system:masters`), the e2e node's kubelet client
//! certificate and the service-account signing key, generated in process with rcgen and written as PEM files.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

use crate::Error;

/// Paths of the PEM files written by [`write`].
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA certificate that signs the serving and client certificates.
    pub ca_crt: PathBuf,
    /// The kube-apiserver serving certificate and key.
    pub server_crt: PathBuf,
    /// Key of [`Pki::server_crt`].
    pub server_key: PathBuf,
    /// The admin client certificate (`CN=palisade-e2e-admin, O=system:masters`).
    pub admin_crt: PathBuf,
    /// Key of [`Pki::admin_crt`].
    pub admin_key: PathBuf,
    /// The kubelet's client certificate (`CN=system:node:palisade-node, O=system:nodes`).
    pub node_crt: PathBuf,
    /// Key of [`Pki::node_crt`].
    pub node_key: PathBuf,
    /// The service-account token signing key (private).
    pub sa_key: PathBuf,
    /// The service-account token verification key (public).
    pub sa_pub: PathBuf,
}

/// Generates all key material into `dir`.
pub fn write(dir: &Path) -> Result<Pki, Error> {
    fs::create_dir_all(dir).map_err(|e| Error::io("create pki dir", dir, e))?;
    let pki = Pki {
        ca_crt: dir.join("ca.crt"),
        server_crt: dir.join("apiserver.crt"),
        server_key: dir.join("apiserver.key"),
        admin_crt: dir.join("admin.crt"),
        admin_key: dir.join("admin.key"),
        node_crt: dir.join("node.crt"),
        node_key: dir.join("node.key"),
        sa_key: dir.join("sa.key"),
        sa_pub: dir.join("sa.pub"),
    };
    let mut ca_params = params("palisade-e2e-ca", vec![])?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    put(&pki.ca_crt, &ca.pem())?;

    let sans = vec![
        SanType::DnsName("localhost".try_into()?),
        SanType::DnsName("kubernetes".try_into()?),
        SanType::DnsName("kubernetes.default".try_into()?),
        SanType::DnsName("kubernetes.default.svc".try_into()?),
        SanType::DnsName("kubernetes.default.svc.cluster.local".try_into()?),
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        // What pods of the e2e node reach: the `kubernetes` Service and the node's address.
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1))),
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1))),
    ];
    let mut server = params("kube-apiserver", sans)?;
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate()?;
    put(&pki.server_crt, &server.signed_by(&key, &ca)?.pem())?;
    put(&pki.server_key, &key.serialize_pem())?;

    let mut admin = params("palisade-e2e-admin", vec![])?;
    admin
        .distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate()?;
    put(&pki.admin_crt, &admin.signed_by(&key, &ca)?.pem())?;
    put(&pki.admin_key, &key.serialize_pem())?;

    let node = format!("system:node:{}", crate::node::NODE_NAME);
    let mut kubelet = params(&node, vec![])?;
    kubelet
        .distinguished_name
        .push(DnType::OrganizationName, "system:nodes");
    kubelet.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate()?;
    put(&pki.node_crt, &kubelet.signed_by(&key, &ca)?.pem())?;
    put(&pki.node_key, &key.serialize_pem())?;

    let sa = KeyPair::generate()?;
    put(&pki.sa_key, &sa.serialize_pem())?;
    put(&pki.sa_pub, &sa.public_key_pem())?;
    Ok(pki)
}

fn params(cn: &str, sans: Vec<SanType>) -> Result<CertificateParams, Error> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.subject_alt_names = sans;
    p.distinguished_name.push(DnType::CommonName, cn);
    Ok(p)
}

fn put(path: &Path, pem: &str) -> Result<(), Error> {
    fs::write(path, pem).map_err(|e| Error::io("write", path, e))
}
