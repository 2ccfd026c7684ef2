//! Every API in the registry answers a request at every version it declares, and the
//! answer encodes at that version. Fields a version lacks must hold their defaults or the
//! codec refuses, so this catches a handler that fills a field too new for the client.

mod common;

use bytes::{BufMut, BytesMut};
use gregor_broker::api::{self, APIS};
use gregor_protocol::batch::build_batch;
use gregor_protocol::frame;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

fn request_for(key: ApiKey, version: i16, topic_id: uuid::Uuid) -> RequestKind {
    let name = TopicName(StrBytes::from_static_str("t"));
    match key {
        ApiKey::Produce => {
            let mut data = PartitionProduceData::default();
            data.records = Some(build_batch(0, 1, &[b"v".to_vec()]).into());
            let mut topic = TopicProduceData::default();
            topic.name = name;
            topic.partition_data = vec![data];
            let mut r = ProduceRequest::default();
            r.acks = 1;
            r.topic_data = vec![topic];
            r.into()
        }
        ApiKey::Fetch => {
            let mut p = FetchPartition::default();
            p.partition_max_bytes = 1 << 20;
            let mut topic = FetchTopic::default();
            if version >= 13 {
                topic.topic_id = topic_id;
            } else {
                topic.topic = name;
            }
            topic.partitions = vec![p];
            let mut r = FetchRequest::default();
            r.max_bytes = 1 << 20;
            r.topics = vec![topic];
            r.into()
        }
        ApiKey::ListOffsets => {
            let mut p = ListOffsetsPartition::default();
            p.timestamp = -3;
            let mut topic = ListOffsetsTopic::default();
            topic.name = name;
            topic.partitions = vec![p];
            let mut r = ListOffsetsRequest::default();
            r.topics = vec![topic];
            r.into()
        }
        ApiKey::Metadata => MetadataRequest::default().into(),
        ApiKey::ApiVersions => ApiVersionsRequest::default().into(),
        ApiKey::CreateTopics => {
            let mut t = CreatableTopic::default();
            t.name = TopicName(StrBytes::from_string(format!("new-{version}")));
            t.num_partitions = 2;
            t.replication_factor = 1;
            let mut r = CreateTopicsRequest::default();
            r.topics = vec![t];
            r.into()
        }
        ApiKey::DeleteTopics => DeleteTopicsRequest::default().into(),
        ApiKey::DescribeConfigs => {
            let mut res = describe_configs_request::DescribeConfigsResource::default();
            res.resource_type = 2;
            res.resource_name = StrBytes::from_static_str("t");
            let mut r = DescribeConfigsRequest::default();
            r.resources = vec![res];
            r.include_synonyms = version >= 1;
            r.include_documentation = version >= 3;
            r.into()
        }
        ApiKey::CreatePartitions => CreatePartitionsRequest::default().into(),
        ApiKey::DescribeCluster => DescribeClusterRequest::default().into(),
        ApiKey::InitProducerId => {
            let mut r = InitProducerIdRequest::default();
            r.transactional_id = Some(TransactionalId(StrBytes::from_static_str("tx")));
            r.transaction_timeout_ms = 60_000;
            r.producer_id = ProducerId(-1);
            r.producer_epoch = -1;
            r.into()
        }
        ApiKey::FindCoordinator => {
            let mut r = FindCoordinatorRequest::default();
            if version >= 4 {
                r.coordinator_keys = vec![StrBytes::from_static_str("g")];
            } else {
                r.key = StrBytes::from_static_str("g");
            }
            r.into()
        }
        // Group requests for a group with no members answer at once (no rebalance wait).
        ApiKey::JoinGroup => {
            let mut r = JoinGroupRequest::default();
            r.group_id = GroupId(StrBytes::from_static_str("g"));
            r.session_timeout_ms = 1; // below the minimum: refused at once
            r.into()
        }
        ApiKey::SyncGroup => SyncGroupRequest::default().into(),
        ApiKey::Heartbeat => HeartbeatRequest::default().into(),
        ApiKey::LeaveGroup => LeaveGroupRequest::default().into(),
        ApiKey::OffsetCommit => {
            let mut p = offset_commit_request::OffsetCommitRequestPartition::default();
            p.committed_offset = 1;
            let mut t = offset_commit_request::OffsetCommitRequestTopic::default();
            t.name = name;
            t.partitions = vec![p];
            let mut r = OffsetCommitRequest::default();
            r.group_id = GroupId(StrBytes::from_static_str("g"));
            r.generation_id_or_member_epoch = -1;
            r.topics = vec![t];
            r.into()
        }
        ApiKey::OffsetFetch => {
            let mut r = OffsetFetchRequest::default();
            if version >= 8 {
                let mut g = offset_fetch_request::OffsetFetchRequestGroup::default();
                g.group_id = GroupId(StrBytes::from_static_str("g"));
                g.topics = None;
                r.groups = vec![g];
            } else {
                r.group_id = GroupId(StrBytes::from_static_str("g"));
                r.topics = if version >= 2 { None } else { Some(vec![]) };
            }
            r.into()
        }
        ApiKey::DescribeGroups => {
            let mut r = DescribeGroupsRequest::default();
            r.groups = vec![GroupId(StrBytes::from_static_str("g"))];
            r.into()
        }
        ApiKey::ListGroups => ListGroupsRequest::default().into(),
        ApiKey::DeleteGroups => DeleteGroupsRequest::default().into(),
        ApiKey::AlterConfigs => {
            let mut c = alter_configs_request::AlterableConfig::default();
            c.name = StrBytes::from_static_str("retention.ms");
            c.value = Some(StrBytes::from_static_str("1000"));
            let mut res = alter_configs_request::AlterConfigsResource::default();
            res.resource_type = 2;
            res.resource_name = StrBytes::from_static_str("t");
            res.configs = vec![c];
            let mut r = AlterConfigsRequest::default();
            r.resources = vec![res];
            r.validate_only = true;
            r.into()
        }
        ApiKey::IncrementalAlterConfigs => {
            let mut c = incremental_alter_configs_request::AlterableConfig::default();
            c.name = StrBytes::from_static_str("no.such.setting");
            c.value = Some(StrBytes::from_static_str("1"));
            let mut res = incremental_alter_configs_request::AlterConfigsResource::default();
            res.resource_type = 2;
            res.resource_name = StrBytes::from_static_str("t");
            res.configs = vec![c];
            let mut r = IncrementalAlterConfigsRequest::default();
            r.resources = vec![res];
            r.into()
        }
        ApiKey::DeleteRecords => {
            let mut p = delete_records_request::DeleteRecordsPartition::default();
            p.offset = 0;
            let mut t = delete_records_request::DeleteRecordsTopic::default();
            t.name = name;
            t.partitions = vec![p];
            let mut r = DeleteRecordsRequest::default();
            r.topics = vec![t];
            r.into()
        }
        ApiKey::OffsetDelete => {
            let mut r = OffsetDeleteRequest::default();
            r.group_id = GroupId(StrBytes::from_static_str("g"));
            r.into()
        }
        ApiKey::AddPartitionsToTxn => {
            let mut t = add_partitions_to_txn_request::AddPartitionsToTxnTopic::default();
            t.name = name;
            t.partitions = vec![0];
            let mut r = AddPartitionsToTxnRequest::default();
            if version >= 4 {
                let mut x = add_partitions_to_txn_request::AddPartitionsToTxnTransaction::default();
                x.transactional_id = TransactionalId(StrBytes::from_static_str("tx"));
                x.verify_only = true;
                x.topics = vec![t];
                r.transactions = vec![x];
            } else {
                r.v3_and_below_transactional_id = TransactionalId(StrBytes::from_static_str("tx"));
                r.v3_and_below_topics = vec![t];
            }
            r.into()
        }
        ApiKey::AddOffsetsToTxn => {
            let mut r = AddOffsetsToTxnRequest::default();
            r.transactional_id = TransactionalId(StrBytes::from_static_str("tx"));
            r.group_id = GroupId(StrBytes::from_static_str("g"));
            r.into()
        }
        ApiKey::EndTxn => {
            let mut r = EndTxnRequest::default();
            r.transactional_id = TransactionalId(StrBytes::from_static_str("tx"));
            r.into()
        }
        ApiKey::TxnOffsetCommit => {
            let mut p = txn_offset_commit_request::TxnOffsetCommitRequestPartition::default();
            p.committed_offset = 1;
            let mut t = txn_offset_commit_request::TxnOffsetCommitRequestTopic::default();
            t.name = name;
            t.partitions = vec![p];
            let mut r = TxnOffsetCommitRequest::default();
            r.transactional_id = TransactionalId(StrBytes::from_static_str("tx"));
            r.group_id = GroupId(StrBytes::from_static_str("g"));
            r.topics = vec![t];
            r.into()
        }
        ApiKey::DescribeTransactions => {
            let mut r = DescribeTransactionsRequest::default();
            r.transactional_ids = vec![
                TransactionalId(StrBytes::from_static_str("tx")),
                TransactionalId(StrBytes::from_static_str("unknown")),
            ];
            r.into()
        }
        ApiKey::ListTransactions => ListTransactionsRequest::default().into(),
        ApiKey::AlterPartitionReassignments => {
            let mut p = alter_partition_reassignments_request::ReassignablePartition::default();
            p.replicas = Some(vec![BrokerId(0)]);
            let mut t = alter_partition_reassignments_request::ReassignableTopic::default();
            t.name = name;
            t.partitions = vec![p];
            let mut r = AlterPartitionReassignmentsRequest::default();
            r.topics = vec![t];
            r.into()
        }
        ApiKey::ListPartitionReassignments => ListPartitionReassignmentsRequest::default().into(),
        ApiKey::WriteTxnMarkers => {
            let mut t = write_txn_markers_request::WritableTxnMarkerTopic::default();
            t.name = name;
            t.partition_indexes = vec![0];
            let mut m = write_txn_markers_request::WritableTxnMarker::default();
            m.producer_id = ProducerId(7);
            m.topics = vec![t];
            let mut r = WriteTxnMarkersRequest::default();
            r.markers = vec![m];
            r.into()
        }
        ApiKey::OffsetForLeaderEpoch => {
            let mut p = offset_for_leader_epoch_request::OffsetForLeaderPartition::default();
            p.current_leader_epoch = -1;
            let mut t = offset_for_leader_epoch_request::OffsetForLeaderTopic::default();
            t.topic = name;
            t.partitions = vec![p];
            let mut r = OffsetForLeaderEpochRequest::default();
            r.topics = vec![t];
            r.into()
        }
        ApiKey::SaslHandshake => {
            let mut r = SaslHandshakeRequest::default();
            r.mechanism = StrBytes::from_static_str("PLAIN");
            r.into()
        }
        ApiKey::SaslAuthenticate => SaslAuthenticateRequest::default().into(),
        ApiKey::CreateAcls => {
            let mut c = create_acls_request::AclCreation::default();
            c.resource_type = 2;
            c.resource_name = StrBytes::from_static_str("t");
            c.resource_pattern_type = 3;
            c.principal = StrBytes::from_static_str("User:alice");
            c.host = StrBytes::from_static_str("*");
            c.operation = 3;
            c.permission_type = 3;
            let mut r = CreateAclsRequest::default();
            r.creations = vec![c];
            r.into()
        }
        ApiKey::DescribeAcls => {
            let mut r = DescribeAclsRequest::default();
            r.resource_type_filter = 1;
            r.pattern_type_filter = 1;
            r.operation = 1;
            r.permission_type = 1;
            r.into()
        }
        ApiKey::DeleteAcls => {
            let mut f = delete_acls_request::DeleteAclsFilter::default();
            f.resource_type_filter = 2;
            f.resource_name_filter = Some(StrBytes::from_static_str("none"));
            f.pattern_type_filter = 3;
            f.operation = 1;
            f.permission_type = 1;
            let mut r = DeleteAclsRequest::default();
            r.filters = vec![f];
            r.into()
        }
        ApiKey::DescribeUserScramCredentials => {
            DescribeUserScramCredentialsRequest::default().into()
        }
        ApiKey::AlterUserScramCredentials => {
            let mut u = alter_user_scram_credentials_request::ScramCredentialUpsertion::default();
            u.name = StrBytes::from_static_str("alice");
            u.mechanism = 2;
            u.iterations = 4096;
            u.salt = bytes::Bytes::from_static(b"salt");
            u.salted_password = bytes::Bytes::from_static(&[7u8; 64]);
            let mut r = AlterUserScramCredentialsRequest::default();
            r.upsertions = vec![u];
            r.into()
        }
        ApiKey::DescribeClientQuotas => DescribeClientQuotasRequest::default().into(),
        ApiKey::AlterClientQuotas => {
            let mut e = alter_client_quotas_request::EntityData::default();
            e.entity_type = StrBytes::from_static_str("client-id");
            e.entity_name = Some(StrBytes::from_static_str("app"));
            let mut op = alter_client_quotas_request::OpData::default();
            op.key = StrBytes::from_static_str("producer_byte_rate");
            op.value = 1024.0;
            let mut entry = alter_client_quotas_request::EntryData::default();
            entry.entity = vec![e];
            entry.ops = vec![op];
            let mut r = AlterClientQuotasRequest::default();
            r.entries = vec![entry];
            r.into()
        }
        other => panic!("add a request for {other:?} to this test"),
    }
}

#[tokio::test]
async fn every_api_answers_every_declared_version() {
    let (broker, _dir) = common::open_broker();
    let topic = broker
        .create_topic("t", 1, Default::default())
        .await
        .expect("create");
    let (_tx, rx) = tokio::sync::watch::channel(false);
    for spec in APIS {
        for version in spec.min..=spec.max {
            let request = request_for(spec.key, version, topic.topic_id);
            // The request itself must encode at this version (sanity of the test).
            let mut buf = BytesMut::new();
            request
                .encode(&mut buf, version)
                .unwrap_or_else(|e| panic!("{:?} v{version} request: {e}", spec.key));
            let ctx = common::context(&broker, spec.key, version, rx.clone());
            let response = api::dispatch(&ctx, request)
                .await
                .unwrap_or_else(|| panic!("{:?} v{version}: no response", spec.key));
            let bytes = frame::encode_response(spec.key, version, 7, &response)
                .unwrap_or_else(|e| panic!("{:?} v{version}: {e}", spec.key));
            let mut size = BytesMut::new();
            size.put_i32(bytes.len() as i32 - 4);
            assert_eq!(
                &bytes[..4],
                &size[..],
                "{:?} v{version}: size prefix",
                spec.key
            );
        }
    }
    // Produce at every version appended one record each time, WriteTxnMarkers a marker.
    let versions = |key| {
        let s = APIS.iter().find(|s| s.key == key).expect("registered");
        i64::from(s.max - s.min + 1)
    };
    let log_end = broker
        .partitions
        .get("t", 0)
        .expect("partition")
        .log()
        .log_end();
    assert_eq!(
        log_end,
        versions(ApiKey::Produce) + versions(ApiKey::WriteTxnMarkers)
    );
}
