//! The settings table, validation, listeners, files and environment variables.

use super::*;

fn config() -> BrokerConfig {
    BrokerConfig::new(
        PathBuf::from("/tmp/x"),
        "127.0.0.1:9092".parse().expect("addr"),
        None,
        0,
    )
}

#[test]
fn topic_values_come_from_override_then_broker_then_default() {
    let mut c = config();
    let def = topic_def("retention.ms").expect("known");
    assert_eq!(
        c.topic_value(def, &BTreeMap::new()),
        ("604800000".into(), ConfigSource::Default)
    );
    c.set("log.retention.ms", "1000").expect("valid");
    assert_eq!(
        c.topic_value(def, &BTreeMap::new()),
        ("1000".into(), ConfigSource::StaticBroker)
    );
    let o = BTreeMap::from([("retention.ms".to_string(), "5".to_string())]);
    assert_eq!(
        c.topic_value(def, &o),
        ("5".into(), ConfigSource::DynamicTopic)
    );
}

#[test]
fn unknown_and_invalid_settings_are_refused_with_a_reason() {
    let mut c = config();
    assert!(c
        .set("num.partitoins", "3")
        .expect_err("must be refused")
        .contains("unknown setting"));
    assert!(c
        .set("num.partitions", "zero")
        .expect_err("must be refused")
        .contains("expected an integer"));
    assert!(c
        .set("auto.create.topics.enable", "yes")
        .expect_err("must be refused")
        .contains("true or false"));
    let def = topic_def("message.timestamp.type").expect("known");
    assert!(validate(def, "LogAppendTime").is_ok());
    assert!(validate(def, "Wallclock").is_err());
}

#[test]
fn unknown_settings_suggest_the_nearest_known_one() {
    let mut c = config();
    let e = c.set("num.partitoins", "3").expect_err("refused");
    assert!(e.contains("did you mean 'num.partitions'"), "{e}");
    let e = c.set("log.retention.hour", "3").expect_err("refused");
    assert!(
        e.contains("did you mean 'log.retention.ms'") || e.contains("did you mean"),
        "{e}"
    );
    // A topic setting at broker level points at its broker synonym.
    let e = c.set("retention.ms", "3").expect_err("refused");
    assert!(e.contains("did you mean 'log.retention.ms'"), "{e}");
    let e = c
        .set("completely.unrelated.thing.here", "3")
        .expect_err("refused");
    assert!(!e.contains("did you mean"), "{e}");
}

#[test]
fn layers_apply_file_then_environment_then_flags() {
    let dir = std::env::temp_dir().join(format!("gregor-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("gregor.toml");
    std::fs::write(
        &file,
        "num.partitions = 4\n\"log.retention.ms\" = 1000\nlisteners = \"PLAINTEXT://127.0.0.1:19092\"\n[auto.create.topics]\nenable = false\n",
    )
    .expect("write");
    let env = vec![
        ("GREGOR_LOG_RETENTION_MS".to_string(), "2000".to_string()),
        ("GREGOR_NODE_ID".to_string(), "7".to_string()),
        ("GREGOR_LOG".to_string(), "debug".to_string()),
        ("PATH".to_string(), "/bin".to_string()),
    ];
    let flags = [("node.id", "9".to_string(), "--node-id")];
    let c = BrokerConfig::from_layers(Some(&file), &env, &flags).expect("valid");
    let effective: BTreeMap<&str, (String, String)> = c
        .effective()
        .into_iter()
        .map(|(k, v, o)| (k, (v, o)))
        .collect();
    assert_eq!(effective["num.partitions"].0, "4");
    assert!(effective["num.partitions"].1.starts_with("file "));
    assert_eq!(effective["auto.create.topics.enable"].0, "false");
    assert_eq!(
        effective["log.retention.ms"],
        (
            "2000".to_string(),
            "env GREGOR_LOG_RETENTION_MS".to_string()
        )
    );
    assert_eq!(
        effective["node.id"],
        ("9".to_string(), "flag --node-id".to_string())
    );
    assert_eq!(effective["log.segment.bytes"].1, "default");
    assert_eq!(c.node_id, 9);
    assert_eq!(c.listen, SocketAddr::from(([127, 0, 0, 1], 19092)));
    assert_eq!(c.metrics, Some(SocketAddr::from(([127, 0, 0, 1], 9644))));
    let bad_env = vec![("GREGOR_NUM_PARTITONS".to_string(), "3".to_string())];
    let e = BrokerConfig::from_layers(None, &bad_env, &[]).expect_err("unknown");
    assert!(
        e.contains("GREGOR_NUM_PARTITONS") && e.contains("num.partitions"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn environment_names_map_to_settings_and_back() {
    for def in BROKER_CONFIGS.iter() {
        assert_eq!(env_key(&env_var(def.name)).as_deref(), Some(def.name));
    }
    assert_eq!(env_key("GREGOR_LOG"), None);
    assert_eq!(env_key("HOME"), None);
}
