//! Certificates for TLS servers, made at test time: a private CA, a server certificate it signs
//! for `127.0.0.1` and `localhost`, and a client certificate for mutual TLS.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

const CA_FILE: &str = "ca.crt";
const SERVER_CERT_FILE: &str = "server.crt";
const SERVER_KEY_FILE: &str = "server.key";
const CLIENT_CERT_FILE: &str = "client.crt";
const CLIENT_KEY_FILE: &str = "client.key";

/// The certificates of a TLS server started by [`RedisServer::start_tls`](crate::RedisServer::start_tls),
/// in PEM and as files in the server's directory.
///
/// The CA exists only for this server: a client trusts the server exactly when it is given
/// [`ca_pem`](Self::ca_pem). The server certificate names `127.0.0.1` and `localhost`. The client
/// certificate (also signed by the CA) is what a server started with `--tls-auth-clients yes`
/// asks for. `Debug` output shows the file names, never a key.
pub struct TlsCerts {
    ca_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
    dir: PathBuf,
    /// For the readiness probe: trusts the CA, presents the client certificate.
    probe: Arc<rustls::ClientConfig>,
}

impl TlsCerts {
    /// Makes a CA, a server and a client certificate, and writes them into `dir`.
    pub(crate) fn generate(dir: &Path) -> io::Result<TlsCerts> {
        let ca_key = KeyPair::generate().map_err(cert_error)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(cert_error)?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "redfour-test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(cert_error)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf = |names: Vec<String>, common_name: &str, purpose: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().map_err(cert_error)?;
            let mut params = CertificateParams::new(names).map_err(cert_error)?;
            params
                .distinguished_name
                .push(DnType::CommonName, common_name);
            params.use_authority_key_identifier_extension = true;
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            params.extended_key_usages = vec![purpose];
            let cert = params.signed_by(&key, &issuer).map_err(cert_error)?;
            Ok::<_, io::Error>((cert.pem(), key.serialize_pem()))
        };
        let (server_cert_pem, server_key_pem) = leaf(
            vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
            "redfour-test server",
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let (client_cert_pem, client_key_pem) = leaf(
            Vec::new(),
            "redfour-test client",
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;

        let ca_pem = ca_cert.pem();
        for (name, pem) in [
            (CA_FILE, &ca_pem),
            (SERVER_CERT_FILE, &server_cert_pem),
            (SERVER_KEY_FILE, &server_key_pem),
            (CLIENT_CERT_FILE, &client_cert_pem),
            (CLIENT_KEY_FILE, &client_key_pem),
        ] {
            std::fs::write(dir.join(name), pem)?;
        }
        let probe = probe_config(&ca_pem, &client_cert_pem, &client_key_pem)?;
        Ok(TlsCerts {
            ca_pem,
            client_cert_pem,
            client_key_pem,
            dir: dir.to_owned(),
            probe,
        })
    }

    /// The CA certificate in PEM: what a client must trust to connect.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The file holding [`ca_pem`](Self::ca_pem) (the server's `--tls-ca-cert-file`).
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join(CA_FILE)
    }

    /// A client certificate signed by the CA, in PEM.
    pub fn client_cert_pem(&self) -> &str {
        &self.client_cert_pem
    }

    /// The private key of [`client_cert_pem`](Self::client_cert_pem), in PEM (PKCS#8).
    pub fn client_key_pem(&self) -> &str {
        &self.client_key_pem
    }

    /// The certificates for [`redis::Client::build_with_tls`]: the CA as the only root, and the
    /// client certificate when `with_client_cert`.
    pub fn redis_certificates(&self, with_client_cert: bool) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: with_client_cert.then(|| redis::ClientTlsConfig {
                client_cert: self.client_cert_pem.clone().into_bytes(),
                client_key: self.client_key_pem.clone().into_bytes(),
            }),
            root_cert: Some(self.ca_pem.clone().into_bytes()),
        }
    }

    /// The server's arguments: TLS only on `port` (no plain TCP port), with these certificates.
    /// Client certificates are not asked for; `--tls-auth-clients yes` after these changes that.
    pub(crate) fn server_args(&self, port: u16) -> Vec<String> {
        let path = |name: &str| self.dir.join(name).to_string_lossy().into_owned();
        vec![
            "--port".to_owned(),
            "0".to_owned(),
            "--tls-port".to_owned(),
            port.to_string(),
            "--tls-cert-file".to_owned(),
            path(SERVER_CERT_FILE),
            "--tls-key-file".to_owned(),
            path(SERVER_KEY_FILE),
            "--tls-ca-cert-file".to_owned(),
            path(CA_FILE),
            "--tls-auth-clients".to_owned(),
            "no".to_owned(),
        ]
    }

    /// A TLS connection to `port` as the readiness probe makes it: trusting the CA, presenting the
    /// client certificate if asked, with short timeouts.
    pub(crate) fn probe(&self, port: u16) -> Option<impl Read + Write> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
        let timeout = Some(Duration::from_millis(500));
        stream.set_read_timeout(timeout).ok()?;
        stream.set_write_timeout(timeout).ok()?;
        let name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
        let conn = rustls::ClientConnection::new(self.probe.clone(), name).ok()?;
        Some(rustls::StreamOwned::new(conn, stream))
    }
}

impl fmt::Debug for TlsCerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsCerts")
            .field("ca_path", &self.ca_path())
            .finish_non_exhaustive()
    }
}

/// Installs the ring provider as rustls's process default, which the redis crate's TLS
/// connections use; a provider installed earlier (by the library under test) is kept.
pub(crate) fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn probe_config(
    ca_pem: &str,
    client_cert_pem: &str,
    client_key_pem: &str,
) -> io::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.map_err(cert_error)?).map_err(cert_error)?;
    }
    let chain = CertificateDer::pem_slice_iter(client_cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(cert_error)?;
    let key = PrivateKeyDer::from_pem_slice(client_key_pem.as_bytes()).map_err(cert_error)?;
    // An explicit provider: the probe must not depend on which one the process installed.
    let config = rustls::ClientConfig::builder_with_provider(
        rustls::crypto::ring::default_provider().into(),
    )
    .with_safe_default_protocol_versions()
    .map_err(cert_error)?
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .map_err(cert_error)?;
    Ok(Arc::new(config))
}

fn cert_error(err: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::other(format!("cannot make the test certificates: {err}"))
}
