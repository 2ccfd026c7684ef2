//! The local metadata log: `<data-dir>/__cluster_metadata/metadata.log`, a sequence of
//! frames `[length u32][crc32c u32][record as JSON]`. Every append is fsynced before it is
//! applied (metadata changes are rare and must not be lost). On open, the records are
//! replayed into the image and a torn or corrupt tail is cut off.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use gregor_storage::{Disk, DiskFile};

use crate::image::{MetadataImage, MetadataRecord};

/// A record larger than this is refused on append and treated as corruption on replay.
const RECORD_MAX_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum MetadataLogError {
    #[error("metadata log {path}: {op}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("metadata record too large to store ({0} bytes)")]
    TooLarge(usize),
}

#[derive(Debug)]
pub struct MetadataLog {
    disk: Arc<dyn Disk>,
    path: PathBuf,
    file: Arc<dyn DiskFile>,
    size: u64,
    image: MetadataImage,
}

impl MetadataLog {
    pub fn open(disk: Arc<dyn Disk>, data_dir: &Path) -> Result<Self, MetadataLogError> {
        let dir = data_dir.join("__cluster_metadata");
        let io = |op, path: &Path| {
            let path = path.to_path_buf();
            move |source| MetadataLogError::Io { op, path, source }
        };
        disk.create_dir_all(&dir)
            .map_err(io("create directory", &dir))?;
        let path = dir.join("metadata.log");
        let file = disk.open(&path, true).map_err(io("open", &path))?;
        let len = file.len().map_err(io("stat", &path))?;
        let mut raw = vec![0u8; len as usize];
        file.read_exact_at(&mut raw, 0).map_err(io("read", &path))?;
        let mut image = MetadataImage::default();
        let mut pos = 0usize;
        let mut count = 0usize;
        while let Some((record, next)) = decode_frame(&raw, pos) {
            image.apply(&record);
            pos = next;
            count += 1;
        }
        if pos < raw.len() {
            tracing::warn!(path = %path.display(), truncated_bytes = raw.len() - pos, "metadata log had a torn or corrupt tail; cut it off");
            file.set_len(pos as u64).map_err(io("truncate", &path))?;
            file.sync_data().map_err(io("fsync", &path))?;
        }
        tracing::info!(path = %path.display(), records = count, topics = image.topics().count(), "metadata log replayed");
        Ok(MetadataLog {
            disk,
            path,
            file,
            size: pos as u64,
            image,
        })
    }

    /// Appends records durably, then applies them. All or none: on error nothing is applied
    /// and the file is cut back.
    pub fn append(&mut self, records: &[MetadataRecord]) -> Result<(), MetadataLogError> {
        let mut buf = Vec::new();
        for record in records {
            let json = serde_json::to_vec(record).map_err(|e| MetadataLogError::Io {
                op: "encode",
                path: self.path.clone(),
                source: std::io::Error::other(e),
            })?;
            if json.len() > RECORD_MAX_BYTES {
                return Err(MetadataLogError::TooLarge(json.len()));
            }
            buf.extend_from_slice(&(json.len() as u32).to_be_bytes());
            buf.extend_from_slice(&crc32c::crc32c(&json).to_be_bytes());
            buf.extend_from_slice(&json);
        }
        let write = self
            .file
            .write_all_at(&buf, self.size)
            .and_then(|_| self.file.sync_data());
        if let Err(source) = write {
            let _ = self.file.set_len(self.size);
            return Err(MetadataLogError::Io {
                op: "append",
                path: self.path.clone(),
                source,
            });
        }
        self.size += buf.len() as u64;
        for record in records {
            self.image.apply(record);
        }
        Ok(())
    }

    pub fn image(&self) -> &MetadataImage {
        &self.image
    }

    pub fn disk(&self) -> &Arc<dyn Disk> {
        &self.disk
    }
}

fn decode_frame(raw: &[u8], pos: usize) -> Option<(MetadataRecord, usize)> {
    let header = raw.get(pos..pos + 8)?;
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if len > RECORD_MAX_BYTES {
        return None;
    }
    let body = raw.get(pos + 8..pos + 8 + len)?;
    if crc32c::crc32c(body) != crc {
        return None;
    }
    let record = serde_json::from_slice(body).ok()?;
    Some((record, pos + 8 + len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gregor_storage::OsDisk;
    use std::collections::BTreeMap;
    use uuid::Uuid;

    #[test]
    fn records_survive_reopen_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = Uuid::new_v4();
        let mut log = MetadataLog::open(Arc::new(OsDisk), dir.path()).expect("open");
        log.append(&[
            MetadataRecord::Topic {
                name: "a".into(),
                topic_id: id,
                configs: BTreeMap::from([("retention.ms".into(), "5".into())]),
            },
            MetadataRecord::Partition {
                topic_id: id,
                partition: 0,
                replicas: vec![0],
                leader: 0,
                leader_epoch: 0,
                isr: None,
            },
        ])
        .expect("append");
        let good_len = log.size;
        log.append(&[MetadataRecord::RemoveTopic { topic_id: id }])
            .expect("append");
        drop(log);
        let path = dir.path().join("__cluster_metadata/metadata.log");
        let full = std::fs::read(&path).expect("read");
        // Cut the last record anywhere: the topic must come back, with its id and config.
        for cut in good_len as usize..full.len() {
            std::fs::write(&path, &full[..cut]).expect("cut");
            let log = MetadataLog::open(Arc::new(OsDisk), dir.path()).expect("reopen");
            let topic = log.image().topic("a").expect("topic kept");
            assert_eq!(topic.topic_id, id);
            assert_eq!(
                topic.configs.get("retention.ms").map(String::as_str),
                Some("5")
            );
            assert_eq!(std::fs::metadata(&path).expect("stat").len(), good_len);
        }
    }
}
