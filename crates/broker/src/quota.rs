//! Client quotas, as Kafka has them (KIP-13, KIP-55, KIP-124, KIP-219): a produce byte
//! rate, a fetch byte rate and a share of request-handling time, for a user, a client id,
//! or both, each with a `<default>`. The quotas are cluster metadata
//! (`MetadataRecord::ClientQuota`, set with AlterClientQuotas); each broker measures and
//! throttles on its own, as Kafka's brokers do.
//!
//! A client over its quota is not refused: its response carries `throttle_time_ms`, and
//! its connection reads nothing more for that long (the channel is muted), so a client
//! that backs off as the response asks (all since KIP-219) and one that does not are held
//! to the same rate. A throttled Fetch is answered without records (and its bytes are not
//! counted), as Kafka does.
//!
//! Rates are measured as Kafka's are: over `quota.window.num` (11) samples of
//! `quota.window.size.seconds` (1 s), and a client over its bound by a fraction `f` of it
//! is throttled for `f` times the measured window, at most the window. Only clients that
//! a quota applies to are measured, and a client not seen for an hour is forgotten.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gregor_cluster::{MetadataImage, QuotaEntity};
use tokio::time::Instant;

/// The quota keys Gregor enforces (Kafka's names).
pub const PRODUCE_KEY: &str = "producer_byte_rate";
pub const FETCH_KEY: &str = "consumer_byte_rate";
pub const REQUEST_KEY: &str = "request_percentage";
pub const KEYS: &[&str] = &[PRODUCE_KEY, FETCH_KEY, REQUEST_KEY];

/// What a quota bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Bytes of Produce requests per second.
    Produce,
    /// Bytes of Fetch responses per second.
    Fetch,
    /// Time handling requests, as a percentage of one thread.
    Request,
}

impl Kind {
    pub fn key(self) -> &'static str {
        match self {
            Kind::Produce => PRODUCE_KEY,
            Kind::Fetch => FETCH_KEY,
            Kind::Request => REQUEST_KEY,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::Produce => "produce",
            Kind::Fetch => "fetch",
            Kind::Request => "request",
        }
    }
}

/// Who a request is from, for quotas: the user (the principal's name without `User:`)
/// and the client id.
#[derive(Debug, Clone)]
pub struct Client<'a> {
    pub user: &'a str,
    pub client_id: &'a str,
}

/// The quotas in one image, by entity: (user part, client-id part) as in [`QuotaEntity`].
type Table = HashMap<(Option<Option<String>>, Option<Option<String>>), BTreeMap<String, f64>>;

/// The broker's measurements, and the quotas of the image it last looked at.
pub struct Quotas {
    window: Duration,
    samples: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The image the table was built from (held weakly: an address alone could be
    /// reused by a later image) and the table.
    table: Option<(std::sync::Weak<MetadataImage>, Arc<Table>)>,
    /// One sensor per quota kind and entity tags (the user and client id the matched
    /// entity names, "" for a part it does not have).
    sensors: HashMap<(Kind, String, String), Sensor>,
    last_pruned: Option<Instant>,
}

/// Sensors not recorded to for this long are dropped (Kafka: an hour).
const SENSOR_EXPIRY: Duration = Duration::from_secs(3600);

impl std::fmt::Debug for Quotas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Quotas")
    }
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas::new(Duration::from_secs(1), 11)
    }
}

impl Quotas {
    pub fn new(window: Duration, samples: usize) -> Self {
        Quotas {
            window,
            samples: samples.max(2),
            state: Mutex::new(State::default()),
        }
    }

    /// Whether the cluster has any quota: without one, a request needs no measuring (the
    /// connection checks this once per request, before it gathers who the client is).
    pub fn any(image: &MetadataImage) -> bool {
        image.client_quotas().next().is_some()
    }

    /// Counts `amount` (bytes, or percent-seconds of handling time for
    /// [`Kind::Request`]) for `client`, and says how long it is to be throttled; zero
    /// when no quota applies or it is within it. `unrecord_if_throttled`: a throttled
    /// amount is taken back (a throttled Fetch returns no records).
    pub fn record(
        &self,
        image: &Arc<MetadataImage>,
        kind: Kind,
        client: &Client<'_>,
        amount: f64,
        now: Instant,
        unrecord_if_throttled: bool,
    ) -> Duration {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let table = state.table_for(image);
        let Some((bound, user_tag, client_tag)) = resolve(&table, kind, client) else {
            return Duration::ZERO;
        };
        state.prune(now);
        let (window, samples) = (self.window, self.samples);
        let sensor = state
            .sensors
            .entry((kind, user_tag.clone(), client_tag.clone()))
            .or_insert_with(|| Sensor::new(now));
        sensor.record(amount, now, window, samples);
        let throttle = sensor.throttle(bound, now, window, samples);
        if !throttle.is_zero() {
            if unrecord_if_throttled {
                sensor.record(-amount, now, window, samples);
            }
            crate::metrics::client_throttled(kind.label(), &user_tag, &client_tag, throttle);
        }
        throttle
    }
}

impl State {
    fn table_for(&mut self, image: &Arc<MetadataImage>) -> Arc<Table> {
        if let Some((seen, table)) = &self.table {
            if seen.upgrade().is_some_and(|seen| Arc::ptr_eq(&seen, image)) {
                return table.clone();
            }
        }
        let mut table = Table::new();
        for (entity, values) in image.client_quotas() {
            let parsed = values
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.parse::<f64>().ok()?)))
                .collect();
            table.insert((entity.user.clone(), entity.client_id.clone()), parsed);
        }
        let table = Arc::new(table);
        self.table = Some((Arc::downgrade(image), table.clone()));
        table
    }

    fn prune(&mut self, now: Instant) {
        if self
            .last_pruned
            .is_some_and(|at| now.duration_since(at) < Duration::from_secs(60))
        {
            return;
        }
        self.last_pruned = Some(now);
        self.sensors
            .retain(|_, s| now.duration_since(s.last_recorded) < SENSOR_EXPIRY);
    }
}

/// The quota of `kind` that applies to `client`, with the tags of its sensor: the most
/// specific entity that sets it, in Kafka's order (user and client id; user and default
/// client id; user; default user and client id; default user and default client id;
/// default user; client id; default client id).
fn resolve(table: &Table, kind: Kind, client: &Client<'_>) -> Option<(f64, String, String)> {
    let user = Some(Some(client.user.to_string()));
    let client_id = Some(Some(client.client_id.to_string()));
    let default = Some(None);
    let order = [
        (user.clone(), client_id.clone()),
        (user.clone(), default.clone()),
        (user, None),
        (default.clone(), client_id.clone()),
        (default.clone(), default.clone()),
        (default.clone(), None),
        (None, client_id),
        (None, default),
    ];
    order.into_iter().find_map(|entity| {
        let bound = *table.get(&entity)?.get(kind.key())?;
        let user_tag = if entity.0.is_some() { client.user } else { "" };
        let client_tag = if entity.1.is_some() {
            client.client_id
        } else {
            ""
        };
        Some((bound, user_tag.to_string(), client_tag.to_string()))
    })
}

/// A rate over the last `samples` windows.
struct Sensor {
    /// (start of the sample, amount in it), oldest first.
    samples: VecDeque<(Instant, f64)>,
    last_recorded: Instant,
}

impl Sensor {
    fn new(now: Instant) -> Self {
        Sensor {
            samples: VecDeque::from([(now, 0.0)]),
            last_recorded: now,
        }
    }

    fn record(&mut self, amount: f64, now: Instant, window: Duration, samples: usize) {
        self.last_recorded = now;
        let current_start = self.samples.back().map(|s| s.0).unwrap_or(now);
        if now.duration_since(current_start) >= window {
            self.samples.push_back((now, 0.0));
        }
        // Samples older than the whole window are gone.
        let horizon = window * samples as u32;
        while self.samples.len() > 1
            && self
                .samples
                .front()
                .is_some_and(|s| now.duration_since(s.0) >= horizon)
        {
            self.samples.pop_front();
        }
        while self.samples.len() > samples {
            self.samples.pop_front();
        }
        if let Some(last) = self.samples.back_mut() {
            last.1 = (last.1 + amount).max(0.0);
        }
    }

    /// The time the rate is taken over: since the oldest sample, but at least all
    /// samples but one (so that a new client's first burst is not a huge rate).
    fn elapsed(&self, now: Instant, window: Duration, samples: usize) -> Duration {
        let oldest = self.samples.front().map(|s| s.0).unwrap_or(now);
        now.duration_since(oldest)
            .max(window * (samples as u32 - 1))
    }

    fn throttle(&self, bound: f64, now: Instant, window: Duration, samples: usize) -> Duration {
        let longest = window * samples as u32;
        if bound <= 0.0 || !bound.is_finite() {
            // A quota of 0 lets nothing through: the longest throttle.
            return longest;
        }
        let elapsed = self.elapsed(now, window, samples);
        let total: f64 = self.samples.iter().map(|s| s.1).sum();
        let rate = total / elapsed.as_secs_f64();
        if rate <= bound {
            return Duration::ZERO;
        }
        // In seconds, capped before it becomes a Duration (a tiny bound would overflow).
        let seconds = elapsed.as_secs_f64() * ((rate - bound) / bound);
        Duration::from_secs_f64(seconds.min(longest.as_secs_f64()))
    }
}

/// Checks a quota value set through AlterClientQuotas: a known key, and a rate of at
/// least 1 byte a second or a percentage of at least 0.01.
pub fn check_value(key: &str, value: f64) -> Result<(), String> {
    if !KEYS.contains(&key) {
        return Err(format!(
            "unknown or unsupported quota '{key}'; Gregor enforces {}",
            KEYS.join(", ")
        ));
    }
    let least = if key == REQUEST_KEY { 0.01 } else { 1.0 };
    if !value.is_finite() || value < least {
        return Err(format!("{key} must be at least {least}, not {value}"));
    }
    Ok(())
}

/// The user of a principal for quotas (`User:alice` → `alice`).
pub fn user_of(principal: &str) -> &str {
    principal.strip_prefix("User:").unwrap_or(principal)
}

/// An entity for display: `user=alice, client-id=<default>`.
pub fn describe(entity: &QuotaEntity) -> String {
    let part = |name: &str, v: &Option<Option<String>>| {
        v.as_ref()
            .map(|v| format!("{name}={}", v.as_deref().unwrap_or("<default>")))
    };
    [
        part("user", &entity.user),
        part("client-id", &entity.client_id),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use gregor_cluster::MetadataRecord;

    fn image_with(quotas: &[(QuotaEntity, &str, &str)]) -> Arc<MetadataImage> {
        let mut image = MetadataImage::default();
        for (entity, key, value) in quotas {
            image.apply(&MetadataRecord::ClientQuota {
                entity: entity.clone(),
                key: key.to_string(),
                value: Some(value.to_string()),
            });
        }
        Arc::new(image)
    }

    fn entity(user: Option<Option<&str>>, client: Option<Option<&str>>) -> QuotaEntity {
        QuotaEntity {
            user: user.map(|u| u.map(str::to_string)),
            client_id: client.map(|c| c.map(str::to_string)),
        }
    }

    #[test]
    fn the_most_specific_entity_that_sets_a_key_applies() {
        let image = image_with(&[
            (entity(None, Some(None)), PRODUCE_KEY, "100"),
            (entity(None, Some(Some("app"))), PRODUCE_KEY, "200"),
            (entity(Some(None), None), PRODUCE_KEY, "300"),
            (entity(Some(Some("alice")), None), PRODUCE_KEY, "400"),
            (
                entity(Some(Some("alice")), Some(Some("app"))),
                FETCH_KEY,
                "500",
            ),
        ]);
        let mut state = State::default();
        let table = state.table_for(&image);
        let q = |user, client_id, kind| resolve(&table, kind, &Client { user, client_id });
        // alice+app sets only the fetch rate: her produce rate is her user quota's.
        assert_eq!(
            q("alice", "app", Kind::Produce),
            Some((400.0, "alice".into(), "".into()))
        );
        assert_eq!(
            q("alice", "app", Kind::Fetch),
            Some((500.0, "alice".into(), "app".into()))
        );
        // bob: the default user's quota, measured for him alone.
        assert_eq!(
            q("bob", "app", Kind::Produce),
            Some((300.0, "bob".into(), "".into()))
        );
        assert_eq!(q("bob", "app", Kind::Request), None);
        let image = image_with(&[
            (entity(None, Some(None)), PRODUCE_KEY, "100"),
            (entity(None, Some(Some("app"))), PRODUCE_KEY, "200"),
        ]);
        let table = state.table_for(&image);
        let q = |client_id| {
            resolve(
                &table,
                Kind::Produce,
                &Client {
                    user: "x",
                    client_id,
                },
            )
        };
        assert_eq!(q("app"), Some((200.0, "".into(), "app".into())));
        assert_eq!(q("other"), Some((100.0, "".into(), "other".into())));
    }

    #[test]
    fn a_client_over_its_rate_is_throttled_in_proportion_and_one_within_is_not() {
        let start = Instant::now();
        let quotas = Quotas::default();
        let image = image_with(&[(entity(None, Some(Some("fast"))), PRODUCE_KEY, "1000")]);
        let fast = Client {
            user: "ANONYMOUS",
            client_id: "fast",
        };
        let other = Client {
            user: "ANONYMOUS",
            client_id: "other",
        };
        // 5,000 bytes in the first second: over a 10 s window that is 500 bytes/s, within.
        let d = quotas.record(&image, Kind::Produce, &fast, 5000.0, start, false);
        assert_eq!(d, Duration::ZERO);
        // 15,000 more: 2,000 bytes/s over 10 s, twice the bound: throttled for 10 s.
        let d = quotas.record(&image, Kind::Produce, &fast, 15000.0, start, false);
        assert_eq!(d, Duration::from_secs(10));
        // Without a quota, nothing is measured.
        let d = quotas.record(&image, Kind::Produce, &other, 1e9, start, false);
        assert_eq!(d, Duration::ZERO);
        assert_eq!(
            quotas.state.lock().expect("lock").sensors.len(),
            1,
            "only the client with a quota has a sensor"
        );
    }

    #[test]
    fn a_throttled_amount_taken_back_leaves_the_rate_as_it_was() {
        let start = Instant::now();
        let quotas = Quotas::default();
        let image = image_with(&[(entity(None, Some(None)), FETCH_KEY, "100")]);
        let c = Client {
            user: "u",
            client_id: "c",
        };
        let d = quotas.record(&image, Kind::Fetch, &c, 100_000.0, start, true);
        assert!(d > Duration::ZERO);
        // Taken back: a small fetch right after is within the rate.
        let d = quotas.record(&image, Kind::Fetch, &c, 10.0, start, true);
        assert_eq!(d, Duration::ZERO);
    }

    #[test]
    fn a_huge_overshoot_is_capped_not_a_panic() {
        let start = Instant::now();
        let mut sensor = Sensor::new(start);
        sensor.record(1e300, start, Duration::from_secs(1), 11);
        assert_eq!(
            sensor.throttle(1e-300, start, Duration::from_secs(1), 11),
            Duration::from_secs(11)
        );
    }

    #[test]
    fn values_are_checked() {
        assert!(check_value(PRODUCE_KEY, 1024.0).is_ok());
        assert!(check_value(PRODUCE_KEY, 0.0).is_err());
        assert!(check_value(PRODUCE_KEY, 1e-20).is_err());
        assert!(check_value(REQUEST_KEY, f64::NAN).is_err());
        let e = check_value("controller_mutation_rate", 1.0).expect_err("not enforced");
        assert!(e.contains("producer_byte_rate"), "{e}");
    }
}
