//! Group state as records of the internal compacted topic `__consumer_offsets`, in Kafka's
//! own key and value schemas, so the topic reads the same as Kafka's:
//!
//! - offset commit: key v1 `(group, topic, partition)`, value v3
//!   `(offset, leader epoch, metadata, commit timestamp)`;
//! - group metadata: key v2 `(group)`, value v3 `(protocol type, generation, protocol,
//!   leader, state timestamp, members[...])`;
//! - a null value (tombstone) deletes the key.
//!
//! A group lives in partition `abs(java_hash(group)) % offsets.topic.num.partitions`.

use bytes::Bytes;

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The longest string the record schemas hold (an int16 length, as in Kafka's): a longer
/// group id could not be stored whole, so it is refused before anything is written.
pub const STRING_MAX_BYTES: usize = i16::MAX as usize;

/// Whether a group id can name a group: not empty, and short enough for its key.
pub fn valid_group_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= STRING_MAX_BYTES
}

/// Java's `String.hashCode` (over UTF-16 code units), as Kafka uses to place a group.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// The `__consumer_offsets` partition that holds a group's state.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    (java_string_hash(group) & 0x7fff_ffff) % partitions.max(1)
}

/// A committed offset as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

/// A member as stored in group metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// Group metadata as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredGroup {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp_ms: i64,
    pub members: Vec<StoredMember>,
}

/// One decoded record of the topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRecord {
    Offset {
        group: String,
        topic: String,
        partition: i32,
        value: Option<CommittedOffset>,
    },
    Group {
        group: String,
        value: Option<StoredGroup>,
    },
}

struct Writer(Vec<u8>);

impl Writer {
    fn i16(&mut self, v: i16) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i32(&mut self, v: i32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i64(&mut self, v: i64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn string(&mut self, s: &str) -> &mut Self {
        let len = s.len().min(STRING_MAX_BYTES);
        self.i16(len as i16);
        self.0.extend_from_slice(&s.as_bytes()[..len]);
        self
    }
    fn nullable_string(&mut self, s: Option<&str>) -> &mut Self {
        match s {
            Some(s) => self.string(s),
            None => self.i16(-1),
        }
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.i32(b.len() as i32);
        self.0.extend_from_slice(b);
        self
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(out)
    }
    fn i16(&mut self) -> Option<i16> {
        self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn i64(&mut self) -> Option<i64> {
        self.take(8)
            .map(|b| i64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    }
    fn nullable_string(&mut self) -> Option<Option<String>> {
        let n = self.i16()?;
        if n < 0 {
            return Some(None);
        }
        Some(Some(
            String::from_utf8_lossy(self.take(n as usize)?).into_owned(),
        ))
    }
    fn string(&mut self) -> Option<String> {
        self.nullable_string()?
    }
    fn bytes(&mut self) -> Option<Bytes> {
        let n = self.i32()?;
        if n < 0 {
            return Some(Bytes::new());
        }
        Some(Bytes::copy_from_slice(self.take(n as usize)?))
    }
}

pub fn offset_key(group: &str, topic: &str, partition: i32) -> Vec<u8> {
    let mut w = Writer(Vec::new());
    w.i16(1).string(group).string(topic).i32(partition);
    w.0
}

pub fn offset_value(v: &CommittedOffset) -> Vec<u8> {
    let mut w = Writer(Vec::new());
    w.i16(3)
        .i64(v.offset)
        .i32(v.leader_epoch)
        .string(&v.metadata)
        .i64(v.commit_timestamp_ms);
    w.0
}

pub fn group_key(group: &str) -> Vec<u8> {
    let mut w = Writer(Vec::new());
    w.i16(2).string(group);
    w.0
}

pub fn group_value(g: &StoredGroup) -> Vec<u8> {
    let mut w = Writer(Vec::new());
    w.i16(3)
        .string(&g.protocol_type)
        .i32(g.generation)
        .nullable_string(g.protocol.as_deref())
        .nullable_string(g.leader.as_deref())
        .i64(g.state_timestamp_ms)
        .i32(g.members.len() as i32);
    for m in &g.members {
        w.string(&m.member_id)
            .nullable_string(m.group_instance_id.as_deref())
            .string(&m.client_id)
            .string(&m.client_host)
            .i32(m.rebalance_timeout_ms)
            .i32(m.session_timeout_ms)
            .bytes(&m.subscription)
            .bytes(&m.assignment);
    }
    w.0
}

/// The (key, value-or-tombstone) bytes of one record.
pub fn encode(record: &GroupRecord) -> (Vec<u8>, Option<Vec<u8>>) {
    match record {
        GroupRecord::Offset {
            group,
            topic,
            partition,
            value,
        } => (
            offset_key(group, topic, *partition),
            value.as_ref().map(offset_value),
        ),
        GroupRecord::Group { group, value } => (group_key(group), value.as_ref().map(group_value)),
    }
}

/// Decodes one record; `None` for keys or values Gregor does not know (they are skipped
/// with a log line by the caller, never fatal).
pub fn decode(key: &[u8], value: Option<&[u8]>) -> Option<GroupRecord> {
    let mut k = Reader { buf: key, pos: 0 };
    match k.i16()? {
        0 | 1 => {
            let (group, topic, partition) = (k.string()?, k.string()?, k.i32()?);
            let value = match value {
                None => None,
                Some(v) => {
                    let mut r = Reader { buf: v, pos: 0 };
                    let version = r.i16()?;
                    let offset = r.i64()?;
                    let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
                    let metadata = r.string()?;
                    let commit_timestamp_ms = r.i64()?;
                    Some(CommittedOffset {
                        offset,
                        leader_epoch,
                        metadata,
                        commit_timestamp_ms,
                    })
                }
            };
            Some(GroupRecord::Offset {
                group,
                topic,
                partition,
                value,
            })
        }
        2 => {
            let group = k.string()?;
            let value = match value {
                None => None,
                Some(v) => {
                    let mut r = Reader { buf: v, pos: 0 };
                    let version = r.i16()?;
                    let protocol_type = r.string()?;
                    let generation = r.i32()?;
                    let protocol = r.nullable_string()?;
                    let leader = r.nullable_string()?;
                    let state_timestamp_ms = if version >= 2 { r.i64()? } else { -1 };
                    let n = r.i32()?.max(0);
                    let mut members = Vec::new();
                    for _ in 0..n {
                        let member_id = r.string()?;
                        let group_instance_id = if version >= 3 {
                            r.nullable_string()?
                        } else {
                            None
                        };
                        let client_id = r.string()?;
                        let client_host = r.string()?;
                        let rebalance_timeout_ms = if version >= 1 { r.i32()? } else { 0 };
                        let session_timeout_ms = r.i32()?;
                        let subscription = r.bytes()?;
                        let assignment = r.bytes()?;
                        members.push(StoredMember {
                            member_id,
                            group_instance_id,
                            client_id,
                            client_host,
                            rebalance_timeout_ms,
                            session_timeout_ms,
                            subscription,
                            assignment,
                        });
                    }
                    Some(StoredGroup {
                        protocol_type,
                        generation,
                        protocol,
                        leader,
                        state_timestamp_ms,
                        members,
                    })
                }
            };
            Some(GroupRecord::Group { group, value })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_hash_matches_known_values() {
        // Well-known values of Java's String.hashCode.
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("hello"), 99_162_322);
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
        // Kafka's Utils.abs maps MIN_VALUE to 0, not to a negative partition.
        assert_eq!(partition_for("polygenelubricants", 50), 0);
        assert_eq!(partition_for("hello", 50), 99_162_322 % 50);
        // Non-ASCII text hashes UTF-16 code units, as Java does.
        assert_eq!(java_string_hash("é"), 0xe9);
        assert_eq!(java_string_hash("😀"), 0xd83d * 31 + 0xde00);
    }

    #[test]
    fn records_round_trip() {
        let off = CommittedOffset {
            offset: 42,
            leader_epoch: 3,
            metadata: "m".into(),
            commit_timestamp_ms: 9,
        };
        let rec = decode(&offset_key("g", "t", 7), Some(&offset_value(&off)));
        assert_eq!(
            rec,
            Some(GroupRecord::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 7,
                value: Some(off)
            })
        );
        let g = StoredGroup {
            protocol_type: "consumer".into(),
            generation: 5,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            state_timestamp_ms: 11,
            members: vec![StoredMember {
                member_id: "m1".into(),
                group_instance_id: Some("i1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: 10_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        assert_eq!(
            decode(&group_key("g"), Some(&group_value(&g))),
            Some(GroupRecord::Group {
                group: "g".into(),
                value: Some(g)
            })
        );
        assert_eq!(
            decode(&group_key("g"), None),
            Some(GroupRecord::Group {
                group: "g".into(),
                value: None
            })
        );
        assert_eq!(decode(b"\x00\x09junk", Some(b"x")), None);
        assert_eq!(decode(b"\x00", None), None);
    }
}
