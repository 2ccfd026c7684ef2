//! Any bytes as the SASL messages of one connection: the first byte picks the mechanism
//! (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, or one not served), the rest is split at 0xFF
//! into SaslAuthenticate payloads, sent in order. Must never panic, and must never
//! authenticate without the password (the image holds users alice and bob with random
//! passwords the input cannot know).
#![no_main]

use std::sync::OnceLock;

use bytes::Bytes;
use gregor_broker::config::{BrokerConfig, Listener, SecurityProtocol};
use gregor_broker::security::scram::{self, Mechanism};
use gregor_broker::security::{SaslOutcome, Security, Session};
use gregor_cluster::{MetadataImage, MetadataRecord};
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::StrBytes;
use libfuzzer_sys::fuzz_target;

struct Fixture {
    security: Security,
    image: MetadataImage,
    listener: Listener,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let addr = "127.0.0.1:9092".parse().expect("addr");
        let mut config = BrokerConfig::new("/nonexistent".into(), addr, None, 0);
        config
            .set("sasl.enabled.mechanisms", "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512")
            .expect("mechanisms");
        config.set("connection.failed.authentication.delay.ms", "0").expect("delay");
        let mut image = MetadataImage::default();
        let password = hex(&scram::random_bytes(16).expect("random"));
        for user in ["alice", "bob"] {
            for m in [Mechanism::Sha256, Mechanism::Sha512] {
                image.apply(&MetadataRecord::ScramCredential {
                    user: user.into(),
                    mechanism: m.name().into(),
                    credential: scram::credential_from_password(m, &password, scram::ITERATIONS_MIN)
                        .expect("credential"),
                });
            }
        }
        Fixture {
            security: Security::new(&config).expect("security"),
            image,
            listener: Listener {
                name: "SASL_PLAINTEXT".into(),
                protocol: SecurityProtocol::SaslPlaintext,
                addr,
                advertised_host: "127.0.0.1".into(),
                advertised_port: 9092,
            },
        }
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let mechanism = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI"][usize::from(pick % 4)];
    let mut session = Session::new(&f.listener, "127.0.0.1".parse().expect("ip"), None);
    let mut hs = SaslHandshakeRequest::default();
    hs.mechanism = StrBytes::from_static_str(mechanism);
    let _ = session.handshake(&f.security, &hs);
    for message in rest.split(|&b| b == 0xFF).take(4) {
        let mut r = SaslAuthenticateRequest::default();
        r.auth_bytes = Bytes::copy_from_slice(message);
        match session.authenticate(&f.security, &f.image, &r) {
            SaslOutcome::Reply(_) => {}
            SaslOutcome::Fail(resp, _, _) => {
                assert_ne!(resp.error_code, 0);
                break;
            }
        }
    }
    assert!(!session.authenticated(), "authenticated without the password");
});
