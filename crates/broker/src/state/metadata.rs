//! This broker's view of the cluster metadata: the image it serves from, and where
//! changes go (its own metadata log on a single node, the controller in a cluster).

use super::*;

/// The metadata service: the latest image, the local metadata log, the cluster node.
#[derive(Debug)]
pub struct Metadata {
    /// The single node's metadata log; in a cluster it holds only what this broker had
    /// before it joined.
    log: Mutex<MetadataLog>,
    image: RwLock<Arc<MetadataImage>>,
    /// Set when this broker is part of a cluster (`controller.quorum.voters`): metadata
    /// changes go through the controller and the image comes from the replicated log.
    cluster: OnceLock<Arc<ClusterNode>>,
}

impl Metadata {
    pub(super) fn new(log: MetadataLog) -> Self {
        let image = Arc::new(log.image().clone());
        Metadata {
            log: Mutex::new(log),
            image: RwLock::new(image),
            cluster: OnceLock::new(),
        }
    }

    /// The image requests are answered from (readers take this `Arc` snapshot; no lock
    /// is held while they use it).
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Makes `image` the one requests are answered from.
    pub(super) fn publish(&self, image: Arc<MetadataImage>) {
        *self.image.write().unwrap_or_else(|p| p.into_inner()) = image;
    }

    /// The cluster node, when this broker is part of a cluster.
    pub fn cluster(&self) -> Option<&Arc<ClusterNode>> {
        self.cluster.get()
    }

    /// Joins a cluster (once).
    pub(super) fn attach(&self, node: Arc<ClusterNode>) {
        if self.cluster.set(node).is_err() {
            tracing::warn!("cluster already attached");
        }
    }

    /// On a single node: appends the records `build` makes from the current image,
    /// durably, under the log's lock (so two creators of one topic cannot both succeed),
    /// and publishes the new image.
    pub(super) fn append_local(
        &self,
        build: impl FnOnce(&MetadataImage) -> Result<Vec<MetadataRecord>, BrokerError>,
    ) -> Result<Arc<MetadataImage>, BrokerError> {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let records = build(log.image())?;
        log.append(&records)
            .map_err(|e| BrokerError::Metadata(e.to_string()))?;
        let image = Arc::new(log.image().clone());
        self.publish(image.clone());
        Ok(image)
    }
}

/// The current block of producer ids this broker hands out (reserved from the metadata
/// log a block at a time).
#[derive(Debug, Default)]
pub struct ProducerIds {
    /// (next to hand out, end of block).
    block: Mutex<(i64, i64)>,
}

impl ProducerIds {
    /// The next id of the block reserved, if any is left.
    pub fn next(&self) -> Option<i64> {
        let mut ids = self.block.lock().unwrap_or_else(|p| p.into_inner());
        (ids.0 < ids.1).then(|| {
            ids.0 += 1;
            ids.0 - 1
        })
    }

    /// Takes the block `[start, end)` when the current one is used up (a caller that
    /// reserved a block concurrently leaves its own unused: blocks never overlap).
    pub fn refill(&self, start: i64, end: i64) {
        let mut ids = self.block.lock().unwrap_or_else(|p| p.into_inner());
        if ids.0 >= ids.1 {
            *ids = (start, end);
        }
    }
}
