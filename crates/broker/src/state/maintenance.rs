//! The partitions' background work (periodic flushes, retention, compaction), a part of
//! the `Partitions` service; and the gauges, which span partitions and groups.

use super::*;

impl Partitions {
    /// Fsyncs partitions whose `flush.ms` has passed or which have more than `writeback`
    /// bytes (`log.writeback.bytes`) not yet written back.
    pub async fn flush_due(&self, writeback: i64) {
        let now = now_ms();
        for partition in self.all() {
            let due = {
                let log = partition.log();
                log.needs_periodic_flush(now)
                    || (writeback > 0 && log.unflushed_bytes() >= writeback as u64)
            };
            if due {
                let end = partition.log().log_end();
                if let Err(e) = partition.make_durable(end).await {
                    tracing::error!(topic = %partition.topic, partition = partition.index, error = %e, "periodic flush failed");
                }
            }
        }
    }

    /// Applies retention to every partition (`log.retention.check.interval.ms`), and
    /// forgets producers idle for `producer_idle_ms` (`producer.id.expiration.ms`).
    pub fn apply_retention(&self, producer_idle_ms: i64) {
        let now = now_ms();
        for partition in self.all() {
            let expired = partition.log().expire_producers(now, producer_idle_ms);
            if expired > 0 {
                tracing::info!(topic = %partition.topic, partition = partition.index, producers = expired, "expired idle producer ids");
            }
            let result = partition.log().apply_retention(now);
            if let Err(e) = result {
                tracing::error!(topic = %partition.topic, partition = partition.index, error = %e, "retention failed");
            }
        }
    }

    /// One cleaner pass, reading at most `rate` bytes a second
    /// (`log.cleaner.io.max.bytes.per.second`).
    pub fn clean_compacted_paced(&self, rate: i64) {
        let rate = rate.max(1) as f64;
        let started = tokio::time::Instant::now();
        let mut pace = |bytes: u64| {
            let due = std::time::Duration::from_secs_f64(bytes as f64 / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait.min(std::time::Duration::from_secs(10)));
            }
        };
        self.clean_compacted(&mut pace);
    }

    /// One pass of the log cleaner over every compacted partition. The partition lock is
    /// held only to pick the segments and to swap the cleaned ones in; `pace` is called
    /// with the bytes processed so far so the caller can throttle.
    pub fn clean_compacted(&self, pace: &mut dyn FnMut(u64)) {
        for partition in self.all() {
            let now = now_ms();
            let Some(cleanable) = partition.log().cleanable(now) else {
                continue;
            };
            let disk = self.disk.clone();
            let started = tokio::time::Instant::now();
            let cleaned =
                gregor_storage::cleaner::clean(disk.as_ref(), &cleanable, now, &mut *pace);
            let (done, stats) = match cleaned {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(topic = %partition.topic, partition = partition.index, error = %e, "log cleaning failed; the log is unchanged");
                    continue;
                }
            };
            let mut log = partition.log();
            for c in &done {
                if let Err(e) = log.install_cleaned(c) {
                    tracing::error!(topic = %partition.topic, partition = partition.index, error = %e, "could not swap a cleaned segment in; the original stays");
                }
            }
            if let Err(e) = log.set_cleaned_up_to(cleanable.end_offset) {
                tracing::warn!(error = %e, "could not store the cleaner checkpoint; the range will be cleaned again");
            }
            drop(log);
            tracing::info!(
                topic = %partition.topic,
                partition = partition.index,
                segments = stats.segments,
                records_read = stats.records_read,
                records_kept = stats.records_kept,
                bytes_before = stats.bytes_before,
                bytes_after = stats.bytes_after,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "log cleaned"
            );
        }
    }
}

impl Broker {
    /// Recomputes the gauges: partition sizes and offsets, group members, committed offsets
    /// and lag, and the process's resident memory.
    pub fn update_gauges(&self) {
        let broker = self;
        let mut log_ends = HashMap::new();
        for p in broker.partitions.all() {
            let (size, segments, offsets) = {
                let log = p.log();
                (log.size_bytes(), log.segment_count(), log.offsets())
            };
            p.metrics
                .set_log(size, segments, offsets.log_start, offsets.log_end);
            log_ends.insert((p.topic.clone(), p.index), offsets.high_watermark);
        }
        // Groups (and their partitions) reported last time but gone now read 0, not their last
        // value: the exporter keeps a gauge once it exists. Below the partition series
        // level, lag is summed per group and topic (or per group); committed offsets are
        // per partition only.
        type Labels = Vec<(&'static str, String)>;
        static REPORTED: std::sync::Mutex<Vec<Labels>> = std::sync::Mutex::new(Vec::new());
        static GROUPS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
        let level = crate::metrics::series_level();
        let mut lags: std::collections::BTreeMap<Labels, i64> = Default::default();
        let mut groups_now = Vec::new();
        for (group, _, _) in broker.groups.list() {
            let members = broker
                .groups
                .describe(&group)
                .map_or(0, |g| g.members.len());
            metrics::gauge!("gregor_consumer_group_members", "group" => group.clone())
                .set(members as f64);
            groups_now.push(group.clone());
            for (topic, partition, committed) in broker.groups.fetch_offsets(&group, None) {
                let (Some(committed), Some(&end)) =
                    (committed, log_ends.get(&(topic.clone(), partition)))
                else {
                    continue;
                };
                let labels = level.labels(&[("group", group.clone())], &topic, partition);
                if level == crate::metrics::SeriesLevel::Partition {
                    metrics::gauge!("gregor_consumer_group_committed_offset", &labels)
                        .set(committed.offset as f64);
                }
                *lags.entry(labels).or_default() += (end - committed.offset).max(0);
            }
        }
        for (labels, lag) in &lags {
            metrics::gauge!("gregor_consumer_group_lag", labels).set(*lag as f64);
        }
        let mut previous = GROUPS.lock().unwrap_or_else(|p| p.into_inner());
        for gone in previous.iter().filter(|g| !groups_now.contains(g)) {
            metrics::gauge!("gregor_consumer_group_members", "group" => gone.clone()).set(0.0);
        }
        *previous = groups_now;
        let mut previous = REPORTED.lock().unwrap_or_else(|p| p.into_inner());
        for gone in previous.iter().filter(|l| !lags.contains_key(*l)) {
            metrics::gauge!("gregor_consumer_group_lag", gone).set(0.0);
        }
        *previous = lags.into_keys().collect();
        if let Some(rss) = crate::metrics::resident_memory_bytes() {
            metrics::gauge!("process_resident_memory_bytes").set(rss as f64);
        }
        crate::metrics::open_files(gregor_storage::handles::stats());
    }
}
