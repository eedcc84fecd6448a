//! Building an engine: the one place where a [`Topology`] and its addresses become the
//! engine that serves them (and the key layout it uses).

use std::sync::Arc;

use super::{cluster_builder, Context, Direct, Engine, Master, Quorum, SentinelShared};
use crate::config::{Config, Topology};
use crate::error::{Error, Result};
use crate::keys::{Layout, Namespace};

/// What a client builder hands over: the topology, its addresses (or a ready client) and the
/// checked settings.
pub(crate) struct Plan {
    pub(crate) topology: Topology,
    pub(crate) urls: Vec<String>,
    pub(crate) given: Option<redis::Client>,
    pub(crate) namespace: String,
    pub(crate) config: Config,
    /// Sentinel: the master's user name and password, when they are not the sentinels'.
    pub(crate) master_credentials: Option<(Option<String>, String)>,
    /// PEM certificates to trust instead of the system's, for `rediss://` URLs.
    #[cfg(feature = "tls")]
    pub(crate) tls_root_certificates: Option<Vec<u8>>,
}

impl Engine {
    /// The engine for `plan`, and the (password-redacted) address it connects to.
    pub(crate) fn build(plan: Plan) -> Result<(Engine, String)> {
        let Plan {
            topology,
            urls,
            given,
            namespace,
            mut config,
            mut master_credentials,
            #[cfg(feature = "tls")]
            tls_root_certificates,
        } = plan;
        let layout = match topology {
            Topology::Cluster => Layout::Cluster,
            _ => Layout::Node,
        };
        let ns = Namespace::with_layout(&namespace, layout)?;
        let standalone = matches!(topology, Topology::Standalone);
        if master_credentials.is_some() && !matches!(topology, Topology::Sentinel { .. }) {
            return Err(Error::invalid(
                "master credentials apply to the sentinel topology only",
            ));
        }
        if !standalone && urls.is_empty() {
            return Err(Error::invalid(format!(
                "the {} topology needs at least one address",
                topology.name()
            )));
        }
        #[cfg(feature = "tls")]
        if !standalone && tls_root_certificates.is_some() {
            return Err(Error::invalid(
                "TLS root certificates are only supported for the standalone topology",
            ));
        }
        let address = match &given {
            Some(client) => describe_connection(client),
            None => describe_urls(&topology, &urls),
        };
        let token = client_token();
        let engine = match topology {
            Topology::Standalone => {
                let client = match given {
                    Some(client) => {
                        #[cfg(feature = "tls")]
                        if tls_root_certificates.is_some() {
                            return Err(Error::invalid(
                                "TLS root certificates cannot be added to an existing redis::Client: \
                                 build it with redis::Client::build_with_tls instead",
                            ));
                        }
                        client
                    }
                    None => {
                        let [url] = &urls[..] else {
                            return Err(Error::invalid(format!(
                                "the standalone topology takes one address, not {}",
                                urls.len()
                            )));
                        };
                        let client = open_url(url)?;
                        #[cfg(feature = "tls")]
                        let client = match tls_root_certificates {
                            Some(pem) => with_root_certificates(client, pem)?,
                            None => client,
                        };
                        client
                    }
                };
                check_tls_support(&client)?;
                let ctx = Arc::new(Context::new(ns, config, token));
                Engine::Direct(Direct::new(
                    Master::Standalone(client),
                    ctx,
                    address.clone(),
                ))
            }
            Topology::Sentinel { service } => {
                if service.is_empty() {
                    return Err(Error::invalid(
                        "the sentinel service name must not be empty",
                    ));
                }
                let mut infos = Vec::with_capacity(urls.len());
                for url in &urls {
                    let client = open_url(url)?;
                    check_tls_support(&client)?;
                    infos.push(client.get_connection_info().clone());
                }
                let sentinels = infos.clone();
                let mut node = redis::sentinel::SentinelNodeConnectionInfo::default();
                if let redis::ConnectionAddr::TcpTls { insecure, .. } = infos[0].addr() {
                    node = node.set_tls_mode(if *insecure {
                        redis::TlsMode::Insecure
                    } else {
                        redis::TlsMode::Secure
                    });
                }
                // The master gets the credentials and database of the first sentinel address
                // (sentinels and masters often share them; `redis://:pw@sentinel/2`), unless
                // it has its own.
                let mut settings = infos[0].redis_settings().clone();
                let db = settings.db();
                if let Some((username, password)) = master_credentials.take() {
                    settings = redis::RedisConnectionInfo::default()
                        .set_db(db)
                        .set_password(password);
                    if let Some(username) = username {
                        settings = settings.set_username(username);
                    }
                }
                node = node.set_redis_connection_info(settings);
                let sentinel = redis::sentinel::SentinelClient::build(
                    infos,
                    service.clone(),
                    Some(node),
                    redis::sentinel::SentinelServerType::Master,
                )
                .map_err(|e| {
                    Error::invalid("invalid sentinel addresses")
                        .with_source(crate::redact::config_error(e))
                })?;
                let master = Master::Sentinel(Arc::new(SentinelShared::new(
                    sentinel,
                    sentinels,
                    service,
                    config.connect_timeout,
                    config.response_timeout,
                    config.reconnect_retries,
                    db,
                )));
                let ctx = Arc::new(Context::new(ns, config, token));
                Engine::Direct(Direct::new(master, ctx, address.clone()))
            }
            Topology::Cluster => {
                for url in &urls {
                    check_tls_support(&open_url(url)?)?;
                }
                let client = cluster_builder(&urls, &config).build().map_err(|e| {
                    Error::invalid("invalid cluster addresses")
                        .with_source(crate::redact::config_error(e))
                })?;
                let ctx = Arc::new(Context::new(ns, config, token));
                Engine::Direct(Direct::new(
                    Master::Cluster { client, urls },
                    ctx,
                    address.clone(),
                ))
            }
            Topology::Redlock => {
                if config.replica_acks > 0 {
                    return Err(Error::invalid(
                        "replica acknowledgements do not apply to Redlock (its masters have no replicas of each other)",
                    ));
                }
                // Waiters poll or are woken by any master's release notice; a fair queue would
                // need the masters to agree on its order, which Redlock cannot give.
                config.fair = false;
                let mut masters = Vec::with_capacity(urls.len());
                for url in &urls {
                    let client = open_url(url)?;
                    check_tls_support(&client)?;
                    masters.push((
                        client,
                        describe_urls(&Topology::Standalone, std::slice::from_ref(url)),
                    ));
                }
                let ctx = Arc::new(Context::new(ns, config, token));
                Engine::Quorum(Quorum::new(masters, ctx))
            }
        };
        Ok((engine, address))
    }
}

fn open_url(url: &str) -> Result<redis::Client> {
    redis::Client::open(url).map_err(|e| {
        let shown = crate::redact::url(url);
        let message = match crate::redact::parse_problem(url) {
            // The URL is hidden then: say at least why it does not parse.
            Some(problem) => format!("invalid redis URL `{shown}` ({problem})"),
            None => format!("invalid redis URL `{shown}`"),
        };
        Error::invalid(message).with_source(crate::redact::config_error(e))
    })
}

/// A token unique to this client among all clients of a Redis: host, pid, start time and a
/// per-process sequence number, without spaces (it travels in space-separated notices).
fn client_token() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let host: String = crate::config::HolderIdentity::of_this_process()
        .host
        .chars()
        .map(|c| {
            if c.is_whitespace() || c == '/' {
                '_'
            } else {
                c
            }
        })
        .collect();
    format!("{host}.{}.{nanos:x}.{seq}", std::process::id())
}

/// `client` (a `rediss://` one) trusting the CAs in `pem` instead of the system's.
#[cfg(feature = "tls")]
fn with_root_certificates(client: redis::Client, pem: Vec<u8>) -> Result<redis::Client> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    let info = client.get_connection_info().clone();
    if !matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }) {
        return Err(Error::invalid(
            "TLS root certificates were given for a URL that is not rediss://",
        ));
    }
    let mut found = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        cert.map_err(|e| {
            Error::invalid("the TLS root certificates are not valid PEM").with_source(e)
        })?;
        found += 1;
    }
    if found == 0 {
        return Err(Error::invalid(
            "no certificate in the TLS root certificates (expected PEM: -----BEGIN CERTIFICATE-----)",
        ));
    }
    redis::Client::build_with_tls(
        info,
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        },
    )
    .map_err(|e| Error::invalid("unusable TLS root certificates").with_source(e))
}

/// Rejects at build time what would otherwise fail at the first connection, less clearly: TLS
/// without the feature that brings it, and `#insecure` (no certificate verification) unless
/// it was opted into at build time.
fn check_tls_support(client: &redis::Client) -> Result<()> {
    let redis::ConnectionAddr::TcpTls { insecure, .. } = client.get_connection_info().addr() else {
        return Ok(());
    };
    if cfg!(not(feature = "tls")) {
        return Err(Error::invalid(
            "rediss:// (TLS) needs redfour's `tls` feature",
        ));
    }
    if *insecure && cfg!(not(feature = "tls-insecure")) {
        return Err(Error::invalid(
            "`#insecure` in a rediss:// URL (no certificate verification) needs redfour's \
             `tls-insecure` feature",
        ));
    }
    Ok(())
}

pub(crate) fn describe_urls(topology: &Topology, urls: &[String]) -> String {
    let shown: Vec<String> = urls.iter().map(|u| crate::redact::url(u)).collect();
    match topology {
        Topology::Standalone => shown.join(","),
        Topology::Sentinel { service } => {
            format!("sentinel {service} via {}", shown.join(","))
        }
        other => format!("{} {}", other.name(), shown.join(",")),
    }
}

pub(crate) fn describe_connection(client: &redis::Client) -> String {
    let info = client.get_connection_info();
    format!("{}/{}", info.addr(), info.redis_settings().db())
}
