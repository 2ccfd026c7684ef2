//! The controller's decisions as pure functions over an image, and the voters' syntax.

use super::*;
use crate::image::MetadataRecord as R;

fn image_with(
    brokers: &[(i32, bool)],
    replicas: Vec<i32>,
    leader: i32,
    isr: Vec<i32>,
) -> (MetadataImage, Uuid) {
    let mut image = MetadataImage::default();
    for &(id, fenced) in brokers {
        image.apply(&R::RegisterBroker {
            node_id: id,
            host: "h".into(),
            port: 1,
            rack: None,
            endpoints: Vec::new(),
            incarnation: 0,
        });
        image.apply(&R::FenceBroker {
            node_id: id,
            fenced,
        });
    }
    let topic_id = Uuid::new_v4();
    image.apply(&R::Topic {
        name: "t".into(),
        topic_id,
        configs: BTreeMap::new(),
    });
    image.apply(&R::Partition {
        topic_id,
        partition: 0,
        replicas,
        leader,
        leader_epoch: 4,
        isr: Some(isr),
    });
    (image, topic_id)
}

fn decided(records: &[MetadataRecord]) -> Option<(i32, i32, Vec<i32>)> {
    records.iter().find_map(|r| match r {
        R::Partition {
            leader,
            leader_epoch,
            isr,
            ..
        } => Some((*leader, *leader_epoch, isr.clone().unwrap_or_default())),
        _ => None,
    })
}

#[test]
fn a_fenced_leader_is_replaced_by_the_first_live_in_sync_replica() {
    let (image, _) = image_with(
        &[(1, true), (2, false), (3, false)],
        vec![1, 2, 3],
        1,
        vec![1, 3],
    );
    assert_eq!(
        decided(&elect(&image, false, false, &[])),
        Some((3, 5, vec![3]))
    );
}

#[test]
fn a_broker_back_from_a_crash_is_not_elected_from_a_stale_isr() {
    // Every replica was fenced at once (the partition kept its ISR, leaderless); the
    // one that crashed comes back first: it leaves the ISR, and a replica that did not
    // crash is elected when it returns.
    let (image, _) = image_with(
        &[(1, false), (2, true), (3, true)],
        vec![1, 2, 3],
        -1,
        vec![1, 2, 3],
    );
    let mut after = image.clone();
    for r in leave_isrs(&image, 1) {
        after.apply(&r);
    }
    assert_eq!(decided(&leave_isrs(&image, 1)), Some((-1, 4, vec![2, 3])));
    assert_eq!(
        decided(&elect(&after, false, false, &[])),
        None,
        "nobody in sync is alive yet"
    );
    after.apply(&R::FenceBroker {
        node_id: 2,
        fenced: false,
    });
    assert_eq!(
        decided(&elect(&after, false, false, &[])),
        Some((2, 5, vec![2]))
    );
    // The last member of an ISR stays: the partition waits for it.
    let (alone, _) = image_with(&[(1, false)], vec![1, 2], -1, vec![1]);
    assert!(leave_isrs(&alone, 1).is_empty());
}

#[test]
fn no_unclean_election_unless_allowed() {
    let (image, _) = image_with(&[(1, true), (2, false)], vec![1, 2], 1, vec![1]);
    assert_eq!(
        decided(&elect(&image, false, false, &[])),
        Some((-1, 5, vec![1]))
    );
    assert_eq!(
        decided(&elect(&image, true, false, &[])),
        Some((2, 5, vec![2]))
    );
}

#[test]
fn the_preferred_leader_comes_back_only_when_in_sync() {
    let (image, _) = image_with(&[(1, false), (2, false)], vec![1, 2], 2, vec![2]);
    assert_eq!(decided(&elect(&image, false, true, &[])), None);
    let (image, _) = image_with(&[(1, false), (2, false)], vec![1, 2], 2, vec![2, 1]);
    assert_eq!(
        decided(&elect(&image, false, true, &[])),
        Some((1, 5, vec![2, 1]))
    );
    assert_eq!(decided(&elect(&image, false, false, &[])), None);
}

#[test]
fn a_stopping_broker_hands_its_leadership_over() {
    let (image, _) = image_with(&[(1, false), (2, false)], vec![1, 2], 1, vec![1, 2]);
    assert_eq!(
        decided(&elect(&image, false, false, &[1])),
        Some((2, 5, vec![1, 2]))
    );
    let (image, _) = image_with(&[(1, false), (2, false)], vec![1, 2], 1, vec![1]);
    assert_eq!(
        decided(&elect(&image, false, false, &[1])),
        None,
        "nobody else in sync"
    );
}

#[test]
fn a_move_ends_once_every_target_replica_is_in_sync() {
    let (mut image, topic_id) = image_with(
        &[(1, false), (2, false), (3, false)],
        vec![3, 1, 2],
        1,
        vec![1, 2],
    );
    image.apply(&R::Reassign {
        topic_id,
        partition: 0,
        target: Some(vec![3, 2]),
        original: vec![1, 2],
    });
    assert!(
        finish_reassignments(&image).is_empty(),
        "3 is not in sync yet"
    );
    image.apply(&R::Partition {
        topic_id,
        partition: 0,
        replicas: vec![3, 1, 2],
        leader: 1,
        leader_epoch: 4,
        isr: Some(vec![1, 2, 3]),
    });
    let records = finish_reassignments(&image);
    assert_eq!(
        decided(&records),
        Some((3, 5, vec![2, 3])),
        "leader 1 hands over to 3"
    );
    for r in &records {
        image.apply(r);
    }
    let p = &image.topic("t").expect("topic").partitions[0];
    assert_eq!(
        (p.replicas.clone(), p.reassignment.clone()),
        (vec![3, 2], None)
    );
}

#[test]
fn controllers_parse_and_bad_specs_say_why() {
    let v = parse_voters("1@127.0.0.1:9001, 2@127.0.0.1:9002").expect("parses");
    assert_eq!(v.get(&2).map(String::as_str), Some("127.0.0.1:9002"));
    assert!(parse_voters("1@a:1,1@b:2")
        .expect_err("dup")
        .contains("twice"));
    assert!(parse_voters("x@a:1")
        .expect_err("id")
        .contains("not a node id"));
    assert!(parse_voters("1@a").expect_err("port").contains("no port"));
}
