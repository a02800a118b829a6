//! The admin endpoint's client, for `cachewarden status`, `trigger` and `binlog` (the lag `status` shows, and whether
//! a daemon runs before `set` or `reset`) and the tests: one request, with the token when the configuration has one,
//! over HTTPS when it has `tls_cert`, trusting exactly that certificate.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::config::{AdminSettings, AdminTls, AdminToken};

/// A response from the admin endpoint.
#[derive(Debug)]
pub struct ClientResponse {
    pub status: u16,
    pub body: String,
}

/// Sends one request to the endpoint `admin` configures, with its token when it has one, over HTTPS when it has a
/// certificate.
pub async fn request_to(admin: &AdminSettings, method: Method, path: &str) -> anyhow::Result<ClientResponse> {
    let stream = TcpStream::connect(admin.listen).await?;
    let token = admin.token.as_ref();
    match &admin.tls {
        None => send(stream, admin.listen, token, method, path).await,
        Some(tls) => {
            let connector = tokio_rustls::TlsConnector::from(Arc::new(pinned(tls)));
            let stream = connector
                .connect(ServerName::IpAddress(admin.listen.ip().into()), stream)
                .await?;
            send(stream, admin.listen, token, method, path).await
        }
    }
}

/// Sends one request to the admin endpoint at `addr`, in plain HTTP, without a token.
pub async fn request(addr: SocketAddr, method: Method, path: &str) -> anyhow::Result<ClientResponse> {
    send(TcpStream::connect(addr).await?, addr, None, method, path).await
}

async fn send<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    addr: SocketAddr,
    token: Option<&AdminToken>,
    method: Method,
    path: &str,
) -> anyhow::Result<ClientResponse> {
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, addr.to_string());
    if let Some(token) = token {
        request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {}", token.expose()));
    }
    let request = request.body(Full::new(Bytes::new()))?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    driver.abort();
    Ok(ClientResponse {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// A client configuration that accepts the one certificate `tls` serves, whatever its issuer and names: the command
/// line reads the same file as the daemon, so it trusts that certificate and nothing else.
fn pinned(tls: &AdminTls) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Pinned {
        certificate: tls.chain[0].clone(),
        provider: provider.clone(),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring's provider supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// Accepts exactly `certificate`; the handshake's signatures are still checked against it.
#[derive(Debug)]
struct Pinned {
    certificate: CertificateDer<'static>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.certificate.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the admin endpoint's certificate is not the one [admin] tls_cert names".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
