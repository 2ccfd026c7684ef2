//! Incremental fetch sessions (KIP-227): a consumer or follower of many partitions sends
//! them once, then only what changed (a new fetch offset, a partition added or
//! forgotten), and is answered only for the partitions with something new (records, an
//! error, or a high watermark, last stable offset or log start that moved).
//!
//! A partition the client names again (a new offset, a new leader epoch) is answered
//! whether or not anything changed, so a client that could not use an answer (a follower
//! whose leader epoch moved meanwhile) is never left with stale offsets; Kafka answers it
//! only when something changed.
//!
//! A full Fetch with epoch 0 opens a session when the cache has room
//! (`max.incremental.fetch.session.cache.slots`, 1,000); it is answered with the session's
//! id, and the client's next request names it with epoch 1, 2, ... Epoch -1 closes it (a
//! sessionless fetch). An unknown id is FETCH_SESSION_ID_NOT_FOUND and a wrong epoch
//! INVALID_FETCH_SESSION_EPOCH, after which clients start a new session; nothing is lost.
//!
//! A full cache makes room as Kafka's does: the weakest session (a consumer's before a
//! follower's, then the one with fewest partitions, then the least recently used) gives
//! way to a new one that is stronger, or is dropped anyway once unused for two minutes.
//! The partitions of all sessions together are bounded too
//! ([`PARTITIONS_MAX`]): a session that would pass it is not kept.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use tokio::time::Instant;
use uuid::Uuid;

/// Partitions kept over all sessions (about 200 bytes each).
pub const PARTITIONS_MAX: usize = 1_000_000;
/// A session unused for this long may be evicted by any new one.
const EVICTABLE_AFTER: Duration = Duration::from_secs(120);

/// A partition as a session knows it: named by topic name (before v13) or id.
type Key = (TopicName, Uuid, i32);

/// A key and a request's partition as a session keeps them: copied, and without tagged
/// fields, so that a kept partition does not keep its whole request frame in memory (a
/// decoded name is a slice of the frame).
fn owned(topic: &TopicName, topic_id: Uuid, p: &FetchPartition) -> (Key, FetchPartition) {
    let mut p = p.clone();
    p.unknown_tagged_fields = Default::default();
    let name = TopicName(kafka_protocol::protocol::StrBytes::from_string(
        topic.0.to_string(),
    ));
    ((name, topic_id, p.partition), p)
}

/// What the broker remembers of a session's partition: the client's last request for it,
/// and what it was last told.
#[derive(Debug, Clone)]
struct Cached {
    request: FetchPartition,
    /// (high watermark, last stable offset, log start) last answered; `None` before the
    /// first answer.
    answered: Option<(i64, i64, i64)>,
}

#[derive(Debug)]
struct Session {
    /// The epoch the next request must carry.
    epoch: i32,
    follower: bool,
    partitions: HashMap<Key, Cached>,
    /// The partitions in the order they were added (the order they are read in).
    order: VecDeque<Key>,
    last_used: Instant,
}

impl Session {
    fn strength(&self) -> (bool, usize, Instant) {
        (self.follower, self.partitions.len(), self.last_used)
    }

    fn remove(&mut self, key: &Key) {
        if self.partitions.remove(key).is_some() {
            self.order.retain(|k| k != key);
        }
    }
}

/// What a Fetch request is, for the sessions.
#[derive(Debug, PartialEq)]
pub enum Kind {
    /// No session: answered as asked, with session id 0.
    Sessionless,
    /// A full fetch that opens a session, if there is room.
    Opening,
    /// The next fetch of session `id`: the request now lists every partition of the
    /// session, and the answer is to keep only what changed.
    Incremental(i32),
}

/// The broker's fetch sessions.
#[derive(Debug)]
pub struct FetchSessions {
    slots: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    sessions: HashMap<i32, Session>,
    partitions: usize,
}

impl FetchSessions {
    pub fn new(slots: usize) -> Self {
        FetchSessions {
            slots,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Sessions open, and their partitions.
    pub fn size(&self) -> (usize, usize) {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (inner.sessions.len(), inner.partitions)
    }

    /// Reads a request's session fields (from v7 on). For the next fetch of a session,
    /// applies its changes and rewrites `request.topics` to every partition of the
    /// session. An error is the whole answer.
    pub fn begin(
        &self,
        version: i16,
        request: &mut FetchRequest,
        now: Instant,
    ) -> Result<Kind, ResponseError> {
        if version < 7 || self.slots == 0 && request.session_epoch <= 0 {
            return Ok(Kind::Sessionless);
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match request.session_epoch {
            -1 | 0 => {
                if request.session_id != 0 {
                    inner.close(request.session_id);
                }
                Ok(if request.session_epoch == 0 {
                    Kind::Opening
                } else {
                    Kind::Sessionless
                })
            }
            epoch if epoch < 0 => Err(ResponseError::InvalidFetchSessionEpoch),
            epoch => {
                let id = request.session_id;
                let Some(session) = inner.sessions.get_mut(&id) else {
                    return Err(ResponseError::FetchSessionIdNotFound);
                };
                if session.epoch != epoch {
                    return Err(ResponseError::InvalidFetchSessionEpoch);
                }
                session.epoch = next_epoch(epoch);
                session.last_used = now;
                let before = session.partitions.len();
                for t in std::mem::take(&mut request.topics) {
                    for p in t.partitions {
                        let (key, p) = owned(&t.topic, t.topic_id, &p);
                        match session.partitions.get_mut(&key) {
                            // A partition the client names again is answered whole
                            // once: it may have missed the last answer's offsets.
                            Some(c) => {
                                c.request = p;
                                c.answered = None;
                            }
                            None => {
                                session.order.push_back(key.clone());
                                session.partitions.insert(
                                    key,
                                    Cached {
                                        request: p,
                                        answered: None,
                                    },
                                );
                            }
                        }
                    }
                }
                for f in &request.forgotten_topics_data {
                    for p in &f.partitions {
                        session.remove(&(f.topic.clone(), f.topic_id, *p));
                    }
                }
                let after = session.partitions.len();
                request.topics = topics_of(session);
                inner.partitions = inner.partitions + after - before;
                if inner.partitions > PARTITIONS_MAX {
                    // Past the bound: the session goes; the client starts a new one.
                    inner.close(id);
                    return Err(ResponseError::FetchSessionIdNotFound);
                }
                Ok(Kind::Incremental(id))
            }
        }
    }

    /// Completes a fetch: opens the session an opening fetch asked for (if there is room)
    /// or keeps only what changed in a session's answer; sets the answer's session id.
    pub fn finish(
        &self,
        kind: Kind,
        request: &FetchRequest,
        follower: bool,
        response: &mut FetchResponse,
        now: Instant,
    ) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let opening = kind == Kind::Opening;
        response.session_id = match kind {
            Kind::Sessionless => 0,
            Kind::Opening => inner.open(self.slots, request, follower, response, now),
            Kind::Incremental(id) => match inner.sessions.get_mut(&id) {
                Some(session) => {
                    keep_changed(session, response);
                    id
                }
                // Evicted meanwhile: the answer is whole, and the next request learns it.
                None => 0,
            },
        };
        if opening {
            crate::metrics::fetch_sessions(inner.sessions.len(), inner.partitions);
        }
    }
}

impl Inner {
    fn close(&mut self, id: i32) {
        if let Some(s) = self.sessions.remove(&id) {
            self.partitions -= s.partitions.len();
        }
    }

    /// Opens a session for a full fetch and its answer; its id, or 0 when there is no
    /// room.
    fn open(
        &mut self,
        slots: usize,
        request: &FetchRequest,
        follower: bool,
        response: &FetchResponse,
        now: Instant,
    ) -> i32 {
        let mut session = Session {
            epoch: 1,
            follower,
            partitions: HashMap::new(),
            order: VecDeque::new(),
            last_used: now,
        };
        for t in &request.topics {
            for p in &t.partitions {
                let (key, p) = owned(&t.topic, t.topic_id, p);
                session.order.push_back(key.clone());
                session.partitions.insert(
                    key,
                    Cached {
                        request: p,
                        answered: None,
                    },
                );
            }
        }
        if session.partitions.is_empty()
            || self.partitions + session.partitions.len() > PARTITIONS_MAX
        {
            return 0;
        }
        if self.sessions.len() >= slots && !self.make_room(&session, now) {
            return 0;
        }
        record_answers(&mut session, response);
        let id = self.new_id();
        self.partitions += session.partitions.len();
        self.sessions.insert(id, session);
        id
    }

    /// Evicts the weakest session if `new` may take its place.
    fn make_room(&mut self, new: &Session, now: Instant) -> bool {
        let Some((&id, weakest)) = self.sessions.iter().min_by_key(|(_, s)| s.strength()) else {
            return false;
        };
        let stale = now.duration_since(weakest.last_used) >= EVICTABLE_AFTER;
        let stronger =
            (new.follower, new.partitions.len()) > (weakest.follower, weakest.partitions.len());
        if stale || stronger {
            self.close(id);
            true
        } else {
            false
        }
    }

    /// A random id no session has (as Kafka's: another client cannot guess it and
    /// spoil the session by sending its epochs).
    fn new_id(&mut self) -> i32 {
        loop {
            let id = (Uuid::new_v4().as_u128() as u32 & 0x7fff_ffff) as i32;
            if id != 0 && !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }
}

/// The epoch after `epoch` (wrapping past i32::MAX to 1, as Kafka's does).
fn next_epoch(epoch: i32) -> i32 {
    if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

/// Every partition of a session, grouped by topic in the order they were added.
fn topics_of(session: &Session) -> Vec<FetchTopic> {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for key in &session.order {
        let Some(c) = session.partitions.get(key) else {
            continue;
        };
        match topics.last_mut() {
            Some(t) if t.topic == key.0 && t.topic_id == key.1 => {
                t.partitions.push(c.request.clone())
            }
            _ => {
                let mut t = FetchTopic::default();
                t.topic = key.0.clone();
                t.topic_id = key.1;
                t.partitions = vec![c.request.clone()];
                topics.push(t);
            }
        }
    }
    topics
}

fn offsets_of(p: &kafka_protocol::messages::fetch_response::PartitionData) -> (i64, i64, i64) {
    (p.high_watermark, p.last_stable_offset, p.log_start_offset)
}

fn record_answers(session: &mut Session, response: &FetchResponse) {
    for t in &response.responses {
        for p in &t.partitions {
            if let Some(c) =
                session
                    .partitions
                    .get_mut(&(t.topic.clone(), t.topic_id, p.partition_index))
            {
                c.answered = Some(offsets_of(p));
            }
        }
    }
}

/// Keeps in an incremental answer only the partitions with something new: records, an
/// error, or offsets other than those last answered; and remembers what was answered.
///
/// The partitions that returned records move to the end of the session's order (as
/// Kafka's do), so that when the first ones fill a response the others get their turn.
fn keep_changed(session: &mut Session, response: &mut FetchResponse) {
    let mut served = std::collections::HashSet::new();
    for t in &mut response.responses {
        t.partitions.retain(|p| {
            let key = (t.topic.clone(), t.topic_id, p.partition_index);
            let Some(c) = session.partitions.get_mut(&key) else {
                return true;
            };
            let now = offsets_of(p);
            let records = p.records.as_ref().is_some_and(|r| !r.is_empty());
            let changed = p.error_code != 0 || records || c.answered != Some(now);
            c.answered = Some(now);
            if records {
                served.insert(key);
            }
            changed
        });
    }
    response.responses.retain(|t| !t.partitions.is_empty());
    if !served.is_empty() {
        let (moved, kept): (VecDeque<Key>, VecDeque<Key>) =
            session.order.drain(..).partition(|k| served.contains(k));
        session.order = kept;
        session.order.extend(moved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kafka_protocol::messages::fetch_request::ForgottenTopic;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::protocol::StrBytes;

    fn name(s: &'static str) -> TopicName {
        TopicName(StrBytes::from_static_str(s))
    }

    fn request(id: i32, epoch: i32, parts: &[(&'static str, i32, i64)]) -> FetchRequest {
        let mut r = FetchRequest::default();
        r.session_id = id;
        r.session_epoch = epoch;
        for (topic, partition, offset) in parts {
            let mut p = FetchPartition::default();
            p.partition = *partition;
            p.fetch_offset = *offset;
            match r.topics.last_mut() {
                Some(t) if t.topic == name(topic) => t.partitions.push(p),
                _ => {
                    let mut t = FetchTopic::default();
                    t.topic = name(topic);
                    t.partitions = vec![p];
                    r.topics.push(t);
                }
            }
        }
        r
    }

    /// An answer for every partition of `r`: high watermark `hw`, records where listed.
    fn answer(r: &FetchRequest, hw: i64, with_records: &[i32]) -> FetchResponse {
        let mut resp = FetchResponse::default();
        for t in &r.topics {
            let mut out = FetchableTopicResponse::default();
            out.topic = t.topic.clone();
            for p in &t.partitions {
                let mut d = PartitionData::default();
                d.partition_index = p.partition;
                d.high_watermark = hw;
                d.records = Some(if with_records.contains(&p.partition) {
                    Bytes::from_static(b"batch")
                } else {
                    Bytes::new()
                });
                out.partitions.push(d);
            }
            resp.responses.push(out);
        }
        resp
    }

    fn answered(resp: &FetchResponse) -> Vec<i32> {
        resp.responses
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.partition_index))
            .collect()
    }

    /// Runs one fetch through the sessions; returns the answer.
    fn fetch(
        s: &FetchSessions,
        r: FetchRequest,
        hw: i64,
        with_records: &[i32],
    ) -> Result<FetchResponse, ResponseError> {
        fetch_as(s, r, hw, with_records, false, Instant::now())
    }

    /// [`fetch`] by a follower or a consumer, at `now`.
    fn fetch_as(
        s: &FetchSessions,
        mut r: FetchRequest,
        hw: i64,
        with_records: &[i32],
        follower: bool,
        now: Instant,
    ) -> Result<FetchResponse, ResponseError> {
        let kind = s.begin(12, &mut r, now)?;
        let mut resp = answer(&r, hw, with_records);
        s.finish(kind, &r, follower, &mut resp, now);
        Ok(resp)
    }

    #[test]
    fn a_session_sends_only_what_changed_and_keeps_partitions_it_was_not_told_again() {
        let s = FetchSessions::new(10);
        let parts: Vec<(&str, i32, i64)> = (0..100).map(|p| ("t", p, 0)).collect();
        let full = fetch(&s, request(0, 0, &parts), 5, &[]).expect("full");
        let id = full.session_id;
        assert!(id > 0, "a full fetch with epoch 0 opens a session");
        assert_eq!(answered(&full).len(), 100, "the opening answer is whole");
        // Nothing changed: the next fetch names no partition and gets none.
        let r = fetch(&s, request(id, 1, &[]), 5, &[]).expect("incremental");
        assert_eq!(r.session_id, id);
        assert_eq!(answered(&r), Vec::<i32>::new());
        // Records for 7, and a high watermark that moved for all: all are answered once.
        let r = fetch(&s, request(id, 2, &[]), 6, &[7]).expect("incremental");
        assert_eq!(answered(&r).len(), 100);
        let r = fetch(&s, request(id, 3, &[]), 6, &[7]).expect("incremental");
        assert_eq!(answered(&r), vec![7], "only the partition with records");
        // A new offset for 7 is remembered; a forgotten partition is no longer read.
        let mut next = request(id, 4, &[("t", 7, 10)]);
        let mut f = ForgottenTopic::default();
        f.topic = name("t");
        f.partitions = vec![8];
        next.forgotten_topics_data = vec![f];
        let now = Instant::now();
        assert_eq!(s.begin(12, &mut next, now), Ok(Kind::Incremental(id)));
        let listed: Vec<(i32, i64)> = next.topics[0]
            .partitions
            .iter()
            .map(|p| (p.partition, p.fetch_offset))
            .collect();
        assert_eq!(listed.len(), 99, "the forgotten partition is gone");
        assert!(listed.contains(&(7, 10)) && !listed.iter().any(|(p, _)| *p == 8));
        assert_eq!(s.size(), (1, 99));
    }

    #[test]
    fn unknown_ids_wrong_epochs_and_closing_are_answered_as_kafka_does() {
        let s = FetchSessions::new(10);
        assert_eq!(
            fetch(&s, request(77, 1, &[]), 0, &[]).map(|_| ()),
            Err(ResponseError::FetchSessionIdNotFound)
        );
        let id = fetch(&s, request(0, 0, &[("t", 0, 0)]), 0, &[])
            .expect("open")
            .session_id;
        assert_eq!(
            fetch(&s, request(id, 5, &[]), 0, &[]).map(|_| ()),
            Err(ResponseError::InvalidFetchSessionEpoch)
        );
        // Epoch -1 closes it and is answered without a session.
        let r = fetch(&s, request(id, -1, &[("t", 0, 0)]), 0, &[]).expect("final");
        assert_eq!(r.session_id, 0);
        assert_eq!(s.size(), (0, 0));
        // Before v7 there are no sessions.
        let mut r = request(0, 0, &[("t", 0, 0)]);
        assert_eq!(s.begin(6, &mut r, Instant::now()), Ok(Kind::Sessionless));
    }

    #[test]
    fn a_full_cache_gives_way_only_to_a_stronger_or_after_two_minutes() {
        let s = FetchSessions::new(1);
        let big: Vec<(&str, i32, i64)> = (0..10).map(|p| ("t", p, 0)).collect();
        let first = fetch(&s, request(0, 0, &big), 0, &[])
            .expect("open")
            .session_id;
        assert!(first > 0);
        // A smaller consumer session does not evict a bigger one.
        let small = fetch(&s, request(0, 0, &[("t", 0, 0)]), 0, &[]).expect("full");
        assert_eq!(small.session_id, 0, "no room: answered without a session");
        // A follower's session does.
        let resp = fetch_as(
            &s,
            request(0, 0, &[("t", 0, 0)]),
            0,
            &[],
            true,
            Instant::now(),
        )
        .expect("full");
        assert!(resp.session_id > 0 && resp.session_id != first);
        assert_eq!(
            fetch(&s, request(first, 1, &[]), 0, &[]).map(|_| ()),
            Err(ResponseError::FetchSessionIdNotFound),
            "the evicted session's client is told, and starts over"
        );
        // Any session gives way once unused for two minutes.
        let later = Instant::now() + EVICTABLE_AFTER;
        let resp = fetch_as(&s, request(0, 0, &[("t", 1, 0)]), 0, &[], false, later).expect("full");
        assert!(resp.session_id > 0);
        assert_eq!(s.size(), (1, 1));
    }

    #[test]
    fn partitions_that_returned_records_go_to_the_end_of_the_order() {
        let s = FetchSessions::new(10);
        let parts: Vec<(&str, i32, i64)> = (0..5).map(|p| ("t", p, 0)).collect();
        let id = fetch(&s, request(0, 0, &parts), 0, &[])
            .expect("open")
            .session_id;
        fetch(&s, request(id, 1, &[]), 1, &[0, 1]).expect("incremental");
        let mut next = request(id, 2, &[]);
        s.begin(12, &mut next, Instant::now()).expect("begin");
        let order: Vec<i32> = next
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.partition))
            .collect();
        assert_eq!(order, vec![2, 3, 4, 0, 1]);
    }

    #[test]
    fn no_slots_means_no_sessions() {
        let s = FetchSessions::new(0);
        let r = fetch(&s, request(0, 0, &[("t", 0, 0)]), 0, &[]).expect("full");
        assert_eq!(r.session_id, 0);
    }
}
