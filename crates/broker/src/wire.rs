//! Small builders of `kafka-protocol` values, shared by the API handlers and the
//! coordinators.

use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;

pub fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub fn topic_name(s: &str) -> TopicName {
    TopicName(str_bytes(s))
}
