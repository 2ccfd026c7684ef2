//! docs/compatibility.md lists every Kafka API key exactly once: served ones with the
//! version range the registry declares, the others with why not.

use std::collections::BTreeMap;

use gregor_broker::api::APIS;
use kafka_protocol::messages::ApiKey;

#[test]
fn every_api_key_is_listed_once_with_the_served_versions() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/compatibility.md");
    let doc = std::fs::read_to_string(path).expect("docs/compatibility.md is readable");
    let mut rows: BTreeMap<i16, Vec<(String, String)>> = BTreeMap::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 5 {
            continue;
        }
        if let Ok(key) = cells[2].parse::<i16>() {
            rows.entry(key)
                .or_default()
                .push((cells[1].to_string(), cells[3].to_string()));
        }
    }
    for key in ApiKey::iter() {
        let listed = rows
            .get(&(key as i16))
            .map(Vec::as_slice)
            .unwrap_or_default();
        assert_eq!(
            listed.len(),
            1,
            "{key:?} ({}) is listed {} times",
            key as i16,
            listed.len()
        );
        assert_eq!(
            listed[0].0,
            format!("{key:?}"),
            "key {} is named differently",
            key as i16
        );
        let served = APIS.iter().find(|s| s.key == key);
        let versions = &listed[0].1;
        match served {
            Some(s) => {
                let range = if s.min == s.max {
                    format!("{}", s.min)
                } else {
                    format!("{}–{}", s.min, s.max)
                };
                assert!(
                    versions.starts_with(&range),
                    "{key:?}: the doc says '{versions}', the registry {range}"
                );
            }
            None => assert!(
                !versions.starts_with(|c: char| c.is_ascii_digit()),
                "{key:?} is not served but the doc gives versions '{versions}'"
            ),
        }
    }
    assert_eq!(
        rows.len(),
        ApiKey::iter().count(),
        "the doc lists keys Kafka does not have"
    );
}
