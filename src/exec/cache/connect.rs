//! Connecting to Redis: the connection kinds ([`Conn`]: one node or a cluster), [`Cache::connect`] with its checks of
//! what the server is, connections of their own for blocking reads, and the clients sources build from `[redis]`.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::auth::RedisAuth;
use super::node::{Dedicated, Node};
use super::policy::WritePolicy;
use super::scripts::Scripts;
use super::topology::Topology;
use super::{Cache, CacheError, RESPONSE_TIMEOUT, cluster, info_field};
use crate::config::RedisSettings;

/// A connection to one node or to a cluster, for commands whose keys share a slot (redis-rs routes them on a
/// cluster); batches across slots go through `cluster` instead.
#[derive(Clone)]
pub enum Conn {
    /// One node, reconnected by the manager.
    Managed(Managed),
    /// One node, a connection of its own (blocking stream reads).
    Node(redis::aio::MultiplexedConnection),
    /// A Redis Cluster.
    Cluster(redis::cluster_async::ClusterConnection),
}

/// A connection manager that can be replaced. redis-rs's manager reconnects after I/O errors only: once a reconnect
/// is refused its password (rotated, or changed and changed back), every later command gets that refusal, forever. A
/// new manager ([`Managed::reconnect`]) is the way out; every clone of the cache shares the replacement.
#[derive(Clone)]
pub struct Managed(Arc<ManagedInner>);

struct ManagedInner {
    current: std::sync::RwLock<ConnectionManager>,
    client: redis::Client,
    config: ConnectionManagerConfig,
}

impl Managed {
    async fn connect(client: redis::Client, config: ConnectionManagerConfig) -> Result<Self, CacheError> {
        let manager = ConnectionManager::new_with_config(client.clone(), config.clone())
            .await
            .map_err(CacheError::Connect)?;
        Ok(Self(Arc::new(ManagedInner {
            current: std::sync::RwLock::new(manager),
            client,
            config,
        })))
    }

    fn current(&self) -> ConnectionManager {
        self.0
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Replaces the manager with a newly connected one.
    pub async fn reconnect(&self) -> Result<(), CacheError> {
        let manager = ConnectionManager::new_with_config(self.0.client.clone(), self.0.config.clone())
            .await
            .map_err(CacheError::Connect)?;
        *self.0.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = manager;
        Ok(())
    }
}

impl redis::aio::ConnectionLike for Managed {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        let mut manager = self.current();
        Box::pin(async move { manager.req_packed_command(cmd).await })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        let mut manager = self.current();
        Box::pin(async move { manager.req_packed_commands(pipeline, offset, count).await })
    }

    fn get_db(&self) -> i64 {
        self.current().get_db()
    }
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Managed(conn) => conn.req_packed_command(cmd),
            Conn::Node(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Managed(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Node(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Managed(conn) => conn.get_db(),
            Conn::Node(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}

impl Cache {
    /// Connects, failing if Redis cannot be reached now; later outages are reconnected transparently.
    pub async fn connect(settings: &RedisSettings) -> Result<Self, CacheError> {
        let client = client(settings)?;
        let auth = RedisAuth::new(&settings.url);
        let mut config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2);
        if let Some(auth) = &auth {
            config = config.set_credentials_provider(auth.provider());
        }
        let mut conn = Managed::connect(client.clone(), config).await?;
        // A cluster answers a single-node client until the first key on another shard, and a single node refuses a
        // cluster client with a riddle: say which it is now, clearly. (A user the ACL denies INFO is taken for what
        // the configuration says; the health check needs INFO anyway.)
        let info: Option<String> = redis::cmd("INFO").arg("cluster").query_async(&mut conn).await.ok();
        match (
            info.and_then(|info| info_field(&info, "cluster_enabled")),
            settings.cluster,
        ) {
            (Some(1), false) => return Err(CacheError::ClusterMode),
            (Some(0), true) => return Err(CacheError::NotCluster),
            _ => {}
        }
        let scripts = Arc::new(Scripts::new());
        let topology = if settings.cluster {
            let conn = cluster_builder(settings, auth.as_deref())?
                .build()
                .map_err(CacheError::Connect)?
                .get_async_connection()
                .await
                .map_err(CacheError::Connect)?;
            let cluster = cluster::Cluster::new(conn, scripts.clone(), settings.stale_set_protection).await?;
            Topology::Cluster(Arc::new(cluster))
        } else {
            let dedicated = Dedicated::new(client, settings.connect_timeout, RESPONSE_TIMEOUT, auth.as_deref());
            Topology::Node(Node {
                conn: Conn::Managed(conn),
                dedicated: Arc::new(dedicated),
                scripts: scripts.clone(),
            })
        };
        let cache = Self {
            auth,
            topology,
            policy: WritePolicy {
                protected: settings.stale_set_protection,
                fence: None,
            },
            scripts,
        };
        Ok(cache)
    }

    /// A connection of its own for blocking reads (streams), with `response_timeout`: to the node, or to the
    /// cluster (which routes the stream's commands to the stream's slot).
    pub(crate) async fn own_connection(
        &self,
        settings: &RedisSettings,
        response_timeout: Duration,
    ) -> Result<Conn, CacheError> {
        let connect = async {
            if settings.cluster {
                let client = cluster_builder(settings, self.auth.as_deref())?
                    .response_timeout(response_timeout)
                    .build()
                    .map_err(CacheError::Connect)?;
                client
                    .get_async_connection()
                    .await
                    .map(Conn::Cluster)
                    .map_err(CacheError::Connect)
            } else {
                let mut config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(settings.connect_timeout))
                    .set_response_timeout(Some(response_timeout));
                if let Some(auth) = &self.auth {
                    config = config.set_credentials_provider(auth.provider());
                }
                client(settings)?
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map(Conn::Node)
                    .map_err(CacheError::Connect)
            }
        };
        match tokio::time::timeout(settings.connect_timeout, connect).await {
            Ok(connected) => connected,
            Err(_) => Err(CacheError::Connect(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no connection within {}",
                    crate::pure::words::duration(settings.connect_timeout)
                ),
            )))),
        }
    }
}

/// A client for `[redis]`: the URL, and the CA file when one is configured. Sources that need connections of their
/// own (pub/sub, blocking stream reads) build them from this too.
pub fn client(settings: &RedisSettings) -> Result<redis::Client, CacheError> {
    let info = redis::IntoConnectionInfo::into_connection_info(settings.url.expose()).map_err(CacheError::Connect)?;
    client_for(info, settings)
}

/// The database `[redis] url` selects (`/N`; always 0 on a cluster).
pub(crate) fn db_of(settings: &RedisSettings) -> i64 {
    if settings.cluster {
        return 0;
    }
    redis::IntoConnectionInfo::into_connection_info(settings.url.expose()).map_or(0, |info| info.redis_settings().db())
}

/// A client for `info`, with `settings`' CA file when one is configured.
fn client_for(info: redis::ConnectionInfo, settings: &RedisSettings) -> Result<redis::Client, CacheError> {
    match &settings.ca_file {
        None => redis::Client::open(info),
        // A private CA (self-managed Redis, some ElastiCache setups) instead of the system trust store.
        Some(path) => {
            let root_cert = std::fs::read(path).map_err(|source| CacheError::CaFile {
                path: path.clone(),
                source,
            })?;
            let certificates = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert),
            };
            redis::Client::build_with_tls(info, certificates)
        }
    }
    .map_err(CacheError::Connect)
}

impl Cache {
    /// A client per configured node (`url`, then a cluster's other seeds, `urls`), with the current credentials: for
    /// connections the credentials provider does not reach (pub/sub), made afresh at each reconnect.
    pub fn clients(&self, settings: &RedisSettings) -> Result<Vec<redis::Client>, CacheError> {
        std::iter::once(&settings.url)
            .chain(&settings.seeds)
            .map(|url| match &self.auth {
                Some(auth) => {
                    let info = auth.apply(url).map_err(CacheError::Connect)?;
                    client_for(info, settings)
                }
                None => client(&RedisSettings {
                    url: url.clone(),
                    ..settings.clone()
                }),
            })
            .collect()
    }

    /// A client per node whose own events a subscriber must hear (keyspace notifications are local to each node): the
    /// server of `url`, or each master of a cluster (its slot map read afresh). With the current credentials and TLS.
    pub(crate) async fn node_clients(&self, settings: &RedisSettings) -> Result<Vec<redis::Client>, CacheError> {
        let Topology::Cluster(cluster) = &self.topology else {
            return Ok(self.clients(settings)?.into_iter().take(1).collect());
        };
        let base = match &self.auth {
            Some(auth) => auth.apply(&settings.url),
            None => redis::IntoConnectionInfo::into_connection_info(settings.url.expose()),
        }
        .map_err(CacheError::Connect)?;
        let tls = matches!(base.addr(), redis::ConnectionAddr::TcpTls { .. });
        cluster
            .master_addresses()
            .await?
            .into_iter()
            .map(|(host, port)| {
                let addr = if tls {
                    redis::ConnectionAddr::TcpTls {
                        host,
                        port,
                        insecure: false,
                        tls_params: None,
                    }
                } else {
                    redis::ConnectionAddr::Tcp(host, port)
                };
                client_for(base.clone().set_addr(addr), settings)
            })
            .collect()
    }

    /// Takes the credentials of `url` (a reload): every connection authenticates with them from now on. Whether
    /// they changed; `false` too when the first URL had no password (nothing to rotate: a restart applies one).
    pub(crate) fn reauthenticate(&self, url: &crate::config::SecretUrl) -> bool {
        self.auth.as_ref().is_some_and(|auth| auth.replace(url))
    }

    /// After a refused password: how to read `[redis] url` again.
    pub(crate) fn rereading(&self, reread: super::auth::RereadUrl) {
        if let Some(auth) = &self.auth {
            auth.rereading(reread);
        }
    }

    /// After Redis refused the password: reads `[redis] url` again (taking its credentials if they changed) and
    /// connects anew — the refused connection would otherwise refuse forever (see [`Managed`]). Whether the
    /// credentials changed.
    pub(crate) async fn recover_from_refused_password(&self) -> Result<bool, CacheError> {
        let changed = self.auth.as_ref().is_some_and(|auth| auth.reread());
        if let Conn::Managed(managed) = self.conn() {
            managed.reconnect().await?;
        }
        Ok(changed)
    }
}

/// A cluster client for `[redis]`: `url` and then `urls` as seeds, the CA file when one is configured.
fn cluster_builder(
    settings: &RedisSettings,
    auth: Option<&RedisAuth>,
) -> Result<redis::cluster::ClusterClientBuilder, CacheError> {
    let seeds: Vec<&str> = std::iter::once(&settings.url)
        .chain(&settings.seeds)
        .map(|url| url.expose())
        .collect();
    let mut builder = redis::cluster::ClusterClientBuilder::new(seeds)
        .connection_timeout(settings.connect_timeout)
        .response_timeout(RESPONSE_TIMEOUT);
    if let Some(auth) = auth {
        builder = builder.set_credentials_provider(auth.provider());
    }
    if let Some(path) = &settings.ca_file {
        let root_cert = std::fs::read(path).map_err(|source| CacheError::CaFile {
            path: path.clone(),
            source,
        })?;
        builder = builder.certs(redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(root_cert),
        });
    }
    Ok(builder)
}
