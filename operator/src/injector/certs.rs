//! The webhook's key material, pure: a CA and a serving certificate generated with rcgen,
//! their Secret encoding (`ca.crt`, `ca.key`, `tls.crt`, `tls.key`, `ca-previous.crt` and
//! expiry annotations), and the renewal plan. The async loop that reads and writes the
//! Secret is `rotate.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

const CA_CN: &str = "palisade-webhook-ca";
/// Annotation: when the serving certificate expires (RFC 3339).
pub const CERT_NOT_AFTER: &str = "palisade.dev/cert-not-after";
/// Annotation: when the CA expires (RFC 3339).
pub const CA_NOT_AFTER: &str = "palisade.dev/ca-not-after";
/// Annotation: the serving certificate's SANs, comma-separated.
pub const CERT_SANS: &str = "palisade.dev/cert-sans";

/// What can go wrong with the key material.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused to generate.
    #[error("generating the webhook certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The Secret lacks a key or holds bad PEM.
    #[error("Secret key {key} is missing or not valid PEM; delete the Secret to regenerate it")]
    BadSecret {
        /// The data key.
        key: &'static str,
    },
    /// rustls cannot use the key.
    #[error("the webhook key cannot be used: {0}")]
    Key(#[from] rustls::Error),
}

impl CertError {
    /// PascalCase reason for metrics and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Generate(_) => "CertGenerateFailed",
            Self::BadSecret { .. } => "CertSecretInvalid",
            Self::Key(_) => "CertKeyInvalid",
        }
    }
}

/// The CA and serving certificate, as kept in the Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertBundle {
    /// CA certificate (PEM).
    pub ca_crt: String,
    /// CA key (PEM); empty for a user-supplied Secret.
    pub ca_key: String,
    /// Serving certificate (PEM).
    pub tls_crt: String,
    /// Serving key (PEM).
    pub tls_key: String,
    /// The CA before the last CA rotation, still trusted in `caBundle`.
    pub ca_previous: Option<String>,
    /// Expiry of the serving certificate.
    pub cert_not_after: Option<Timestamp>,
    /// Expiry of the CA.
    pub ca_not_after: Option<Timestamp>,
    /// SANs of the serving certificate.
    pub sans: Vec<String>,
}

/// What the leader does with the current material.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Valid long enough, right SANs.
    Keep,
    /// New serving certificate from the same CA.
    RenewServing,
    /// New CA (the old one stays trusted) and a new serving certificate.
    NewCa,
}

/// The SANs of the serving certificate: `<service>.<namespace>.svc` and 127.0.0.1.
pub fn sans(service: &str, namespace: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
        "127.0.0.1".to_owned(),
    ]
}

/// The host of a `host:port` address when it is an IP address (`10.0.0.5:9444`,
/// `[fd00::5]:9444`), as a SAN; `None` for a DNS name or an empty address.
pub fn ip_host(addr: &str) -> Option<String> {
    addr.parse::<std::net::SocketAddr>()
        .ok()
        .map(|a| a.ip().to_string())
}

/// Decides whether `current` can stay.
pub fn plan(
    current: Option<&CertBundle>,
    sans: &[String],
    now: Timestamp,
    renew_before: Duration,
) -> Plan {
    let soon = |t: Option<Timestamp>| {
        t.is_none_or(|t| t.duration_since(now).unsigned_abs() < renew_before || t <= now)
    };
    match current {
        None => Plan::NewCa,
        Some(c) if c.ca_key.is_empty() || soon(c.ca_not_after) => Plan::NewCa,
        Some(c) if c.sans != sans || soon(c.cert_not_after) => Plan::RenewServing,
        Some(_) => Plan::Keep,
    }
}

/// Carries out `plan`: new material, keeping the CA for `RenewServing` and remembering the
/// outgoing CA for `NewCa`. `served_ca` is the CA of the certificate served now, if any.
pub fn issue(
    plan: Plan,
    current: Option<&CertBundle>,
    served_ca: Option<&str>,
    sans: &[String],
    now: Timestamp,
    validity: Duration,
) -> Result<CertBundle, CertError> {
    let (ca_crt, ca_key, ca_not_after, ca_previous) = match (plan, current) {
        (Plan::RenewServing | Plan::Keep, Some(c)) => (
            c.ca_crt.clone(),
            KeyPair::from_pem(&c.ca_key)?,
            c.ca_not_after,
            c.ca_previous.clone(),
        ),
        _ => {
            let key = KeyPair::generate()?;
            let ca_validity = validity.saturating_mul(10);
            let cert = ca_params(now, ca_validity).self_signed(&key)?;
            let previous = current
                .map(|c| c.ca_crt.clone())
                .or(served_ca.map(str::to_owned));
            (cert.pem(), key, Some(add(now, ca_validity)), previous)
        }
    };
    let issuer = Issuer::new(ca_params(now, validity), &ca_key);
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "palisade-webhook");
    params.subject_alt_names = sans.iter().map(|s| san(s)).collect::<Result<_, _>>()?;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    set_window(&mut params, now, validity);
    let tls_crt = params.signed_by(&key, &issuer)?.pem();
    Ok(CertBundle {
        ca_crt,
        ca_key: ca_key.serialize_pem(),
        tls_crt,
        tls_key: key.serialize_pem(),
        ca_previous: ca_previous.filter(|p| !p.is_empty()),
        cert_not_after: Some(add(now, validity)),
        ca_not_after,
        sans: sans.to_vec(),
    })
}

fn ca_params(now: Timestamp, validity: Duration) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, CA_CN);
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_window(&mut p, now, validity);
    p
}

fn san(s: &str) -> Result<SanType, rcgen::Error> {
    Ok(match s.parse() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(s.to_owned().try_into()?),
    })
}

fn add(now: Timestamp, d: Duration) -> Timestamp {
    let d = jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX);
    now.saturating_add(d).unwrap_or(Timestamp::MAX)
}

/// `not_before` one hour back (clock skew), `not_after` after `validity`.
fn set_window(p: &mut CertificateParams, now: Timestamp, validity: Duration) {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let secs = |t: Timestamp| Duration::from_secs(u64::try_from(t.as_second()).unwrap_or(0));
    let before = now
        .checked_sub(jiff::SignedDuration::from_hours(1))
        .unwrap_or(now);
    p.not_before = epoch + secs(before);
    p.not_after = epoch + secs(add(now, validity));
}

impl CertBundle {
    /// PEM for `caBundle`: the CA, then the previous one while it may still sign served certs.
    pub fn ca_bundle(&self) -> String {
        let mut out = self.ca_crt.trim_end().to_owned();
        if let Some(prev) = self.ca_previous.as_deref().filter(|p| *p != self.ca_crt) {
            out.push('\n');
            out.push_str(prev.trim_end());
        }
        out.push('\n');
        out
    }

    /// The serving certificate and key for rustls.
    pub fn certified_key(&self) -> Result<Arc<CertifiedKey>, CertError> {
        let bad = |key| CertError::BadSecret { key };
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.tls_crt.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|_| bad("tls.crt"))?;
        if chain.is_empty() {
            return Err(bad("tls.crt"));
        }
        let key =
            PrivateKeyDer::from_pem_slice(self.tls_key.as_bytes()).map_err(|_| bad("tls.key"))?;
        let provider = rustls::crypto::ring::default_provider();
        Ok(Arc::new(CertifiedKey::from_der(chain, key, &provider)?))
    }

    /// Secret `data` (string values; the caller base64-encodes through `ByteString`).
    pub fn to_secret_data(&self) -> BTreeMap<String, String> {
        let mut d = BTreeMap::from([
            ("ca.crt".to_owned(), self.ca_crt.clone()),
            ("ca.key".to_owned(), self.ca_key.clone()),
            ("tls.crt".to_owned(), self.tls_crt.clone()),
            ("tls.key".to_owned(), self.tls_key.clone()),
        ]);
        if let Some(prev) = &self.ca_previous {
            d.insert("ca-previous.crt".to_owned(), prev.clone());
        }
        d
    }

    /// Secret annotations recording expiry and SANs (so no X.509 parser is needed to plan).
    pub fn to_annotations(&self) -> BTreeMap<String, String> {
        let ts = |t: Option<Timestamp>| t.map(|t| t.to_string()).unwrap_or_default();
        BTreeMap::from([
            (CERT_NOT_AFTER.to_owned(), ts(self.cert_not_after)),
            (CA_NOT_AFTER.to_owned(), ts(self.ca_not_after)),
            (CERT_SANS.to_owned(), self.sans.join(",")),
        ])
    }

    /// Reads a Secret's data and annotations back; `tls.crt` and `tls.key` are required,
    /// the rest is optional (a user-supplied Secret has no `ca.key`).
    pub fn from_secret(
        data: &BTreeMap<String, Vec<u8>>,
        annotations: &BTreeMap<String, String>,
    ) -> Result<Self, CertError> {
        let text = |k: &str| {
            data.get(k)
                .and_then(|v| String::from_utf8(v.clone()).ok())
                .unwrap_or_default()
        };
        let (tls_crt, tls_key) = (text("tls.crt"), text("tls.key"));
        if tls_crt.is_empty() {
            return Err(CertError::BadSecret { key: "tls.crt" });
        }
        if tls_key.is_empty() {
            return Err(CertError::BadSecret { key: "tls.key" });
        }
        let ts = |k: &str| annotations.get(k).and_then(|s| s.parse().ok());
        let prev = text("ca-previous.crt");
        Ok(Self {
            ca_crt: text("ca.crt"),
            ca_key: text("ca.key"),
            tls_crt,
            tls_key,
            ca_previous: (!prev.is_empty()).then_some(prev),
            cert_not_after: ts(CERT_NOT_AFTER),
            ca_not_after: ts(CA_NOT_AFTER),
            sans: annotations
                .get(CERT_SANS)
                .map(|s| {
                    s.split(',')
                        .filter(|x| !x.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
    const RENEW: Duration = Duration::from_secs(90 * 24 * 3600);

    fn now() -> Timestamp {
        "2026-11-26T12:00:00Z".parse().expect("ts")
    }

    fn fresh() -> CertBundle {
        let s = sans("palisade-webhook", "palisade-system");
        issue(Plan::NewCa, None, None, &s, now(), YEAR).expect("issued")
    }

    #[test]
    fn only_an_ip_collector_address_adds_a_san() {
        assert_eq!(ip_host("198.19.0.10:9444").as_deref(), Some("198.19.0.10"));
        assert_eq!(ip_host("[fd00::a]:9444").as_deref(), Some("fd00::a"));
        assert_eq!(ip_host("palisade-collector.palisade-system.svc:9444"), None);
        assert_eq!(ip_host(""), None);
        let mut s = sans("palisade-webhook", "palisade-system");
        s.push("198.19.0.10".to_owned());
        let b = issue(Plan::NewCa, None, None, &s, now(), YEAR).expect("IP SAN issued");
        assert_eq!(plan(Some(&b), &s, now(), RENEW), Plan::Keep);
    }

    #[test]
    fn a_new_bundle_is_usable_and_survives_the_secret_round_trip() {
        let b = fresh();
        assert!(b.certified_key().is_ok());
        assert!(b.ca_previous.is_none());
        let data = b
            .to_secret_data()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        let back = CertBundle::from_secret(&data, &b.to_annotations()).expect("decodes");
        assert_eq!(back, b);
        assert_eq!(plan(Some(&back), &b.sans, now(), RENEW), Plan::Keep);
    }

    #[test]
    fn plans_renewal_well_before_expiry() {
        let b = fresh();
        let s = b.sans.clone();
        let later = |days: i64| now() + jiff::SignedDuration::from_hours(24 * days);
        assert_eq!(plan(None, &s, now(), RENEW), Plan::NewCa);
        assert_eq!(plan(Some(&b), &s, later(200), RENEW), Plan::Keep);
        assert_eq!(plan(Some(&b), &s, later(300), RENEW), Plan::RenewServing);
        assert_eq!(plan(Some(&b), &s, later(400), RENEW), Plan::RenewServing);
        assert_eq!(plan(Some(&b), &s, later(3600), RENEW), Plan::NewCa);
        let other = sans("other", "palisade-system");
        assert_eq!(plan(Some(&b), &other, now(), RENEW), Plan::RenewServing);
    }

    #[test]
    fn renewing_keeps_the_ca_and_a_new_ca_keeps_the_old_one_trusted() {
        let b = fresh();
        let renewed = issue(Plan::RenewServing, Some(&b), None, &b.sans, now(), YEAR).expect("r");
        assert_eq!(renewed.ca_crt, b.ca_crt);
        assert_ne!(renewed.tls_crt, b.tls_crt);
        assert_eq!(renewed.ca_bundle(), b.ca_bundle());
        let rotated = issue(Plan::NewCa, Some(&b), None, &b.sans, now(), YEAR).expect("rot");
        assert_ne!(rotated.ca_crt, b.ca_crt);
        assert_eq!(rotated.ca_previous.as_deref(), Some(b.ca_crt.as_str()));
        let bundle = rotated.ca_bundle();
        assert!(bundle.contains(rotated.ca_crt.trim()) && bundle.contains(b.ca_crt.trim()));
    }

    #[test]
    fn the_served_ca_stays_trusted_when_the_secret_was_lost() {
        let b = fresh();
        let again = issue(Plan::NewCa, None, Some(&b.ca_crt), &b.sans, now(), YEAR).expect("i");
        assert_eq!(again.ca_previous.as_deref(), Some(b.ca_crt.as_str()));
    }

    #[test]
    fn a_secret_without_tls_key_is_refused_with_the_key_named() {
        let data = BTreeMap::from([("tls.crt".to_owned(), b"x".to_vec())]);
        let err = CertBundle::from_secret(&data, &BTreeMap::new()).expect_err("refused");
        assert!(err.to_string().contains("tls.key"));
        assert_eq!(err.reason(), "CertSecretInvalid");
    }
}
