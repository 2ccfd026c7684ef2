//! Joining a cluster: this node's part of the metadata quorum, waiting until it is
//! registered, applying the images it receives, and the metadata log's transport.

use super::*;

/// Joins the cluster when `controller.quorum.voters` is set: starts this node's part of the
/// metadata quorum, applies its images to the partitions, heartbeats, and replicates.
pub(super) async fn start_cluster(
    broker: &Arc<Broker>,
    stop: watch::Receiver<bool>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, BrokerError> {
    use gregor_cluster::controller::parse_voters;
    use gregor_cluster::{ClusterNode, Registration};
    let c = &broker.config;
    let spec = c.get("controller.quorum.voters").trim().to_string();
    if spec.is_empty() {
        return Ok(Vec::new());
    }
    let voters = parse_voters(&spec).map_err(|e| {
        BrokerError::Config(format!(
            "controller.quorum.voters '{spec}': {e}; write it as 1@HOST:PORT,2@HOST:PORT,3@HOST:PORT"
        ))
    })?;
    let addr = metadata_log_addr(c, &voters)?;
    let listener = TcpListener::bind(&addr).await.map_err(|e| {
        BrokerError::Config(format!(
            "cannot listen for the metadata log on {addr}: {e}; is another broker using it? check --controllers and --controller-listener"
        ))
    })?;
    let settings = controller_settings(c);
    let transport = metadata_transport(broker, &addr)?;
    let node = ClusterNode::start(
        broker.disk(),
        &c.data_dir,
        c.node_id,
        listener,
        voters,
        settings,
        transport,
    )
    .await
    .map_err(|e| BrokerError::Metadata(format!("starting the metadata quorum: {e}")))?;
    broker.attach_cluster(node.clone());
    let rack = c.get("broker.rack").trim().to_string();
    let registration = Registration {
        node_id: c.node_id,
        host: c.advertised_host.clone(),
        port: i32::from(c.advertised_port),
        rack: (!rack.is_empty()).then_some(rack),
        endpoints: c.endpoints(),
        raft_addr: addr,
        incarnation: node.incarnation(),
        unclean_start: !broker.clean_start,
    };
    let mut tasks = vec![tokio::spawn(node.clone().run(registration, stop.clone()))];
    let started = tokio::time::Instant::now();
    let mut waiting = JoinWait {
        node: &node,
        images: node.subscribe(),
        started,
        next_note: Duration::from_secs(5),
    };
    let registered = |image: &MetadataImage| {
        image.cluster_id().is_some()
            && image
                .broker(c.node_id)
                .is_some_and(|b| !b.fenced && b.incarnation == node.incarnation())
    };
    // No partition role is taken from the metadata log replayed at start: it may still
    // name this broker the leader of what it led before a crash, with a log that lost its
    // unflushed tail since, and followers would truncate to it. Roles come once the
    // controller has registered this incarnation, unfenced: a restart within the session
    // is fenced first (its leaderships move, it leaves the ISRs), so this broker starts
    // every partition as a follower that must catch up.
    waiting.until(|| registered(&node.image())).await;
    tasks.extend([
        tokio::spawn(follow_images(broker.clone(), node.clone(), stop.clone())),
        tokio::spawn(crate::replica::run_fetchers(broker.clone(), stop.clone())),
        tokio::spawn(crate::replica::run_isr_upkeep(broker.clone(), stop)),
    ]);
    // Ready once the image that registers this broker has been applied to the partitions
    // (not only received): only then do Metadata answers carry the cluster's id and the
    // leaderships this broker holds.
    waiting.until(|| registered(&broker.image())).await;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "registered with the cluster"
    );
    // Users created offline for this data directory (`gregor user create --data-dir`).
    broker.apply_bootstrap_records().await?;
    Ok(tasks)
}

/// Where this broker listens for the metadata log: `controller.listener` (or the
/// CONTROLLER listener's address), else its own entry in the voters.
fn metadata_log_addr(
    c: &crate::config::BrokerConfig,
    voters: &std::collections::BTreeMap<u64, String>,
) -> Result<String, BrokerError> {
    let named = c.controller_listener.as_ref().map(|l| l.addr.to_string());
    let configured = c.get("controller.listener").trim();
    let configured = named
        .as_deref()
        .filter(|_| configured.is_empty())
        .unwrap_or(configured);
    let configured = if configured.is_empty() {
        None
    } else {
        Some(configured.parse().map_err(|_| {
            BrokerError::Config(format!(
                "controller.listener '{configured}' is not HOST:PORT with an IP address"
            ))
        })?)
    };
    gregor_cluster::controller::raft_listen_addr(c.node_id, voters, configured)
        .map_err(BrokerError::Config)
}

/// The controller's settings, from the broker's.
fn controller_settings(c: &crate::config::BrokerConfig) -> gregor_cluster::ControllerSettings {
    gregor_cluster::ControllerSettings {
        session_timeout_ms: c.settings().broker_session_timeout_ms.max(1) as u64,
        heartbeat_interval_ms: c.settings().broker_heartbeat_interval_ms.max(1) as u64,
        auto_leader_rebalance: c.settings().auto_leader_rebalance_enable,
        leader_imbalance_check_ms: (c.settings().leader_imbalance_check_interval_seconds.max(1)
            as u64)
            .saturating_mul(1000),
        unclean_leader_election: c.settings().unclean_leader_election_enable,
    }
}

/// Waiting to join the cluster, with a warning every 10 s while it lasts.
struct JoinWait<'a> {
    node: &'a gregor_cluster::ClusterNode,
    images: watch::Receiver<Arc<MetadataImage>>,
    started: tokio::time::Instant,
    next_note: Duration,
}

impl JoinWait<'_> {
    /// Returns once `ready` holds, looking again at every new image and every 50 ms (an
    /// image is applied to the partitions a moment after it arrives).
    async fn until(&mut self, mut ready: impl FnMut() -> bool) {
        loop {
            self.images.borrow_and_update();
            if ready() {
                return;
            }
            if self.started.elapsed() >= self.next_note {
                tracing::warn!(
                    waited_s = self.started.elapsed().as_secs(),
                    active_controller = ?self.node.leader(),
                    "waiting to join the cluster: a majority of --controllers must be running and reachable"
                );
                self.next_note += Duration::from_secs(10);
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), self.images.changed()).await;
        }
    }
}

/// How the metadata log's port is secured. Every frame on it must come from a broker of
/// this cluster: over mutual TLS, a peer is admitted by its certificate's principal (this
/// broker's own, `super.users`, or an explicit ClusterAction ACL on the cluster), never by
/// the CA alone. When a listener is secured or the authorizer is on, the port is never
/// left open: without an SSL controller listener it runs over mutual TLS with the
/// brokers' own certificates, and without certificates the broker refuses to start. A
/// cluster with no security at all is told, once at start, that the port is open.
fn metadata_transport(
    broker: &Arc<Broker>,
    addr: &str,
) -> Result<Arc<dyn gregor_cluster::raft_net::Transport>, BrokerError> {
    use crate::config::SecurityProtocol;
    use crate::security::acl::{self, Caller};
    let c = &broker.config;
    let secured = c
        .listeners
        .iter()
        .any(|l| l.protocol != SecurityProtocol::Plaintext)
        || broker.security.authorizer.enabled;
    let tls_listener = c.controller_listener.as_ref().filter(|l| l.protocol.tls());
    let tls = broker.security.tls.clone().filter(|t| t.client().is_some());
    let tls = match (tls_listener, tls) {
        (Some(l), Some(tls)) => {
            tracing::info!(listener = %l.name, %addr, "the metadata log runs over mutual TLS; peers are admitted by their certificate's principal");
            tls
        }
        (Some(l), None) => {
            return Err(BrokerError::Config(format!(
                "controller listener {} is SSL but the brokers have no certificates to use on it: set ssl.keystore.location and ssl.truststore.location",
                l.name
            )))
        }
        (None, Some(tls)) if secured => {
            tracing::info!(%addr, "the metadata log runs over mutual TLS with this broker's certificate (ssl.keystore.location), as the cluster is secured; peers are admitted by their certificate's principal. Name an SSL listener in controller.listener.names to choose its port's listener yourself");
            tls
        }
        (None, None) if secured => {
            return Err(BrokerError::Config(format!(
                "the cluster is secured (a SASL or SSL listener, or authorizer.enabled) but its metadata-log port {addr} would take unauthenticated frames from anyone who can reach it; give the brokers certificates (ssl.keystore.location and ssl.truststore.location, the CA that signs every broker's certificate) so that the port runs over mutual TLS, with each broker's principal in super.users"
            )))
        }
        (None, _) => {
            tracing::warn!(%addr, "the metadata log's port is unauthenticated (no listener is secured): anyone who can reach it can change the cluster. Bind --controller-listener to a private address, or secure the cluster (docs/security.md)");
            return Ok(Arc::new(gregor_cluster::raft_net::PlainTcp));
        }
    };
    let own = tls.own_principal();
    let weak = Arc::downgrade(broker);
    let admit: crate::security::tls::Admit = Arc::new(move |principal: &str, host| {
        if own.as_deref() == Some(principal) {
            return true;
        }
        let Some(broker) = weak.upgrade() else {
            return false;
        };
        let a = &broker.security.authorizer;
        if a.super_users.iter().any(|u| u == principal) {
            return true;
        }
        // An explicit ALLOW of ClusterAction: "no ACL found" admits nobody here.
        let explicit = acl::Authorizer {
            enabled: true,
            super_users: Vec::new(),
            allow_if_no_acl: false,
        };
        let caller = Caller {
            principal: principal.to_string(),
            host,
        };
        a.enabled
            && explicit.authorize(
                &broker.image(),
                &caller,
                acl::op::CLUSTER_ACTION,
                acl::res::CLUSTER,
                acl::CLUSTER_NAME,
            )
    });
    Ok(Arc::new(crate::security::tls::TlsTransport { tls, admit }))
}

/// Applies every new metadata image to the partitions, until the broker stops.
async fn follow_images(
    broker: Arc<Broker>,
    node: Arc<gregor_cluster::ClusterNode>,
    mut stop: watch::Receiver<bool>,
) {
    let mut images = node.subscribe();
    loop {
        // Past states replayed from the log after a restart are not acted on (they could
        // move or delete replicas the current state keeps): images apply once this node
        // has caught up with the active controller.
        let caught_up = node.caught_up();
        if caught_up {
            let image = images.borrow_and_update().clone();
            let b = broker.clone();
            let _ = crate::blocking::offload(move || b.reconcile(image)).await;
        }
        let recheck = Duration::from_millis(if caught_up { 3_600_000 } else { 50 });
        tokio::select! {
            changed = images.changed() => if changed.is_err() { return; },
            _ = tokio::time::sleep(recheck) => {}
            _ = stop.changed() => return,
        }
    }
}
