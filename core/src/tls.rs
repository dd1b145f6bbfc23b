//! rustls configurations built from PEM bytes (the caller reads the files).
//!
//! Every Rondo process uses rustls with the `ring` provider; `main.rs`
//! installs it as the process default before anything builds a config.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::Error;

/// A server configuration offering HTTP/2 and HTTP/1.1 through ALPN.
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<rustls::ServerConfig>, Error> {
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(format!("certificate chain: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Tls("certificate file holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| Error::Tls(format!("private key: {e}")))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::Tls(format!("certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The certificates in a PEM bundle, for use as trust roots.
pub fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(format!("ca certificate: {e}")))
}

/// Who holds a certificate of the cluster CA: a storage node (its node id)
/// or a gateway (its id). Every internal gRPC connection is mutual TLS, and
/// the server reads the caller's identity from its certificate.
///
/// The identity is written as two DNS names in the certificate: the role
/// (`node.rondo.internal`) and the role under the id
/// (`<uuid>.node.rondo.internal`). A client checks the first when it does
/// not know which node answers (a probe of an address), the second when it
/// does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    Node(crate::NodeId),
    Gateway(uuid::Uuid),
}

/// The role name of storage nodes in certificates.
pub const NODE_ROLE: &str = "node.rondo.internal";
/// The role name of gateways in certificates.
pub const GATEWAY_ROLE: &str = "gateway.rondo.internal";

impl Identity {
    fn role(&self) -> &'static str {
        match self {
            Identity::Node(_) => NODE_ROLE,
            Identity::Gateway(_) => GATEWAY_ROLE,
        }
    }

    fn uuid(&self) -> uuid::Uuid {
        match self {
            Identity::Node(id) => id.0,
            Identity::Gateway(id) => *id,
        }
    }

    /// The name this identity's certificate is checked against by a client
    /// that knows whom it calls.
    pub fn server_name(&self) -> String {
        format!("{}.{}", self.uuid(), self.role())
    }

    /// The DNS names written in this identity's certificate.
    pub fn dns_names(&self) -> Vec<String> {
        vec![self.role().to_string(), self.server_name()]
    }

    /// The node id, for a node.
    pub fn node(&self) -> Option<crate::NodeId> {
        match self {
            Identity::Node(id) => Some(*id),
            Identity::Gateway(_) => None,
        }
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Node(id) => write!(f, "node {id}"),
            Identity::Gateway(id) => write!(f, "gateway {id}"),
        }
    }
}

/// The identity a certificate names: exactly one `<uuid>.<role>` name of a
/// known role, together with the role's own name. The caller has verified
/// the certificate's chain (rustls did, in the handshake).
pub fn identity_of(cert: &CertificateDer<'_>) -> Result<Identity, Error> {
    let parsed = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| Error::Tls(format!("certificate does not parse: {e:?}")))?;
    let names: Vec<&str> = parsed.valid_dns_names().collect();
    let mut found = None;
    for name in &names {
        let Some((id, role)) = name.split_once('.') else {
            continue;
        };
        let Ok(id) = id.parse::<uuid::Uuid>() else {
            continue;
        };
        let identity = match role {
            NODE_ROLE => Identity::Node(crate::NodeId(id)),
            GATEWAY_ROLE => Identity::Gateway(id),
            _ => continue,
        };
        if !names.contains(&identity.role()) {
            continue;
        }
        if found.replace(identity).is_some() {
            return Err(Error::Tls("certificate names two identities".into()));
        }
    }
    found.ok_or_else(|| Error::Tls("certificate names no node or gateway identity".into()))
}

/// A certificate and its private key, in PEM.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The cluster's certificate authority: it issues the certificates of
/// nodes and gateways for mutual TLS on the internal network (`rondo dev`,
/// the test harness, `rondo cert issue`).
pub struct ClusterCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    cert_pem: String,
    key_pem: String,
}

fn rcgen_error(e: rcgen::Error) -> Error {
    Error::Tls(e.to_string())
}

impl ClusterCa {
    /// A new CA with a fresh key.
    pub fn generate(name: &str) -> Result<ClusterCa, Error> {
        let key = rcgen::KeyPair::generate().map_err(rcgen_error)?;
        let mut params =
            rcgen::CertificateParams::new(Vec::<String>::new()).map_err(rcgen_error)?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let cert = params.self_signed(&key).map_err(rcgen_error)?;
        let key_pem = key.serialize_pem();
        Ok(ClusterCa {
            issuer: rcgen::Issuer::new(params, key),
            cert_pem: cert.pem(),
            key_pem,
        })
    }

    /// The CA of a certificate and key written earlier.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<ClusterCa, Error> {
        let key = rcgen::KeyPair::from_pem(key_pem).map_err(rcgen_error)?;
        let issuer = rcgen::Issuer::from_ca_cert_pem(cert_pem, key).map_err(rcgen_error)?;
        Ok(ClusterCa {
            issuer,
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A certificate for `identity`, usable as a server and as a client
    /// certificate, with a fresh key.
    pub fn issue(&self, identity: Identity) -> Result<Issued, Error> {
        let key = rcgen::KeyPair::generate().map_err(rcgen_error)?;
        let mut params =
            rcgen::CertificateParams::new(identity.dns_names()).map_err(rcgen_error)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, identity.to_string());
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer).map_err(rcgen_error)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(pem: &str) -> CertificateDer<'static> {
        certificates(pem.as_bytes()).unwrap().remove(0)
    }

    #[test]
    fn an_issued_certificate_names_its_identity() {
        let ca = ClusterCa::generate("test CA").unwrap();
        let node = Identity::Node(crate::NodeId::new_random());
        let gateway = Identity::Gateway(uuid::Uuid::new_v4());
        for identity in [node, gateway] {
            let issued = ca.issue(identity).unwrap();
            assert_eq!(identity_of(&leaf(&issued.cert_pem)).unwrap(), identity);
        }
        // A CA read back from its PEM issues certificates too.
        let again = ClusterCa::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        let issued = again.issue(node).unwrap();
        assert_eq!(identity_of(&leaf(&issued.cert_pem)).unwrap(), node);
    }

    #[test]
    fn a_certificate_without_a_rondo_identity_names_none() {
        let key = rcgen::KeyPair::generate().unwrap();
        let id = uuid::Uuid::new_v4();
        for names in [
            vec!["localhost".to_string()],
            // The id without its role name.
            vec![format!("{id}.{NODE_ROLE}")],
            vec![NODE_ROLE.to_string(), format!("{id}.example.com")],
            vec![NODE_ROLE.to_string(), format!("not-a-uuid.{NODE_ROLE}")],
        ] {
            let cert = rcgen::CertificateParams::new(names.clone())
                .unwrap()
                .self_signed(&key)
                .unwrap();
            assert!(identity_of(cert.der()).is_err(), "{names:?}");
        }
        let two = rcgen::CertificateParams::new(vec![
            NODE_ROLE.to_string(),
            format!("{id}.{NODE_ROLE}"),
            format!("{}.{NODE_ROLE}", uuid::Uuid::new_v4()),
        ])
        .unwrap()
        .self_signed(&key)
        .unwrap();
        assert_eq!(
            identity_of(two.der()).unwrap_err(),
            Error::Tls("certificate names two identities".into())
        );
    }
}
