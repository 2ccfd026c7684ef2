//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka uses them (KIP-84):
//! the credential kept for a user, the server's side of the exchange, and a client side
//! for Gregor's own tools.
//!
//! Only salted keys are kept, never a password. Every message from the network is parsed
//! defensively: a malformed message is an error, never a panic.

use std::num::NonZeroU32;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use gregor_cluster::ScramCredentialMeta;
use ring::{digest, hmac, pbkdf2, rand::SecureRandom};

/// Kafka's bounds on a credential's iteration count.
pub const ITERATIONS_MIN: u32 = 4096;
pub const ITERATIONS_MAX: u32 = 16384;
/// The iteration count `gregor user create` uses.
pub const ITERATIONS_DEFAULT: u32 = 8192;
/// A SCRAM message longer than this is refused.
const MESSAGE_MAX_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Sha256,
    Sha512,
}

impl Mechanism {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "SCRAM-SHA-256" => Some(Self::Sha256),
            "SCRAM-SHA-512" => Some(Self::Sha512),
            _ => None,
        }
    }
    /// Kafka's ScramMechanism code (DescribeUserScramCredentials): 1 SHA-256, 2 SHA-512.
    pub fn from_code(code: i8) -> Option<Self> {
        match code {
            1 => Some(Self::Sha256),
            2 => Some(Self::Sha512),
            _ => None,
        }
    }
    pub fn code(self) -> i8 {
        match self {
            Self::Sha256 => 1,
            Self::Sha512 => 2,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "SCRAM-SHA-256",
            Self::Sha512 => "SCRAM-SHA-512",
        }
    }
    fn hmac(self) -> hmac::Algorithm {
        match self {
            Self::Sha256 => hmac::HMAC_SHA256,
            Self::Sha512 => hmac::HMAC_SHA512,
        }
    }
    fn digest(self) -> &'static digest::Algorithm {
        match self {
            Self::Sha256 => &digest::SHA256,
            Self::Sha512 => &digest::SHA512,
        }
    }
    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            Self::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            Self::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }
    fn len(self) -> usize {
        self.digest().output_len()
    }
}

fn mac(m: Mechanism, key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(m.hmac(), key), data)
        .as_ref()
        .to_vec()
}

fn hash(m: Mechanism, data: &[u8]) -> Vec<u8> {
    digest::digest(m.digest(), data).as_ref().to_vec()
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `Hi(password, salt, i)` of RFC 5802: PBKDF2 with the mechanism's HMAC.
pub fn salted_password(m: Mechanism, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
    let mut out = vec![0u8; m.len()];
    let n = NonZeroU32::new(iterations.max(1)).unwrap_or(NonZeroU32::MIN);
    pbkdf2::derive(m.pbkdf2(), n, salt, password, &mut out);
    out
}

/// The credential kept for a salted password (what AlterUserScramCredentials carries).
pub fn credential_from_salted(
    m: Mechanism,
    salted: &[u8],
    salt: &[u8],
    iterations: u32,
) -> ScramCredentialMeta {
    let client_key = mac(m, salted, b"Client Key");
    ScramCredentialMeta {
        salt: B64.encode(salt),
        stored_key: B64.encode(hash(m, &client_key)),
        server_key: B64.encode(mac(m, salted, b"Server Key")),
        iterations,
    }
}

/// A fresh random salt (32 bytes) or nonce material.
pub fn random_bytes(n: usize) -> Result<Vec<u8>, String> {
    let mut b = vec![0u8; n];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| "the system's random number generator failed".to_string())?;
    Ok(b)
}

/// The credential for a password, with a new random salt.
pub fn credential_from_password(
    m: Mechanism,
    password: &str,
    iterations: u32,
) -> Result<ScramCredentialMeta, String> {
    let salt = random_bytes(32)?;
    let salted = salted_password(m, password.as_bytes(), &salt, iterations);
    Ok(credential_from_salted(m, &salted, &salt, iterations))
}

/// Whether `password` is the one `cred` was made from (SASL/PLAIN checks passwords this
/// way against the stored SCRAM credential).
pub fn password_matches(m: Mechanism, cred: &ScramCredentialMeta, password: &str) -> bool {
    let (Ok(salt), Ok(stored)) = (B64.decode(&cred.salt), B64.decode(&cred.stored_key)) else {
        return false;
    };
    let salted = salted_password(m, password.as_bytes(), &salt, cred.iterations);
    same(&hash(m, &mac(m, &salted, b"Client Key")), &stored)
}

/// A credential for a user who has none, so that the server-first message does not tell
/// an unknown user from a known one (RFC 5802, section 5.1): a salt derived from the user
/// name and a secret of this process (the same user gets the same salt on every try), the
/// default iteration count, and keys no password matches.
fn decoy_credential(m: Mechanism, user: &str) -> ScramCredentialMeta {
    static SECRET: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let secret = SECRET.get_or_init(|| random_bytes(32).unwrap_or_else(|_| vec![0x5a; 32]));
    let derive = |label: &str| {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        hmac::sign(&key, format!("{label}\0{}\0{user}", m.name()).as_bytes())
            .as_ref()
            .to_vec()
    };
    let stored = derive("stored");
    let server = derive("server");
    ScramCredentialMeta {
        salt: B64.encode(derive("salt")),
        stored_key: B64.encode(&[stored.as_slice(), stored.as_slice()].concat()[..m.len()]),
        server_key: B64.encode(&[server.as_slice(), server.as_slice()].concat()[..m.len()]),
        iterations: ITERATIONS_DEFAULT,
    }
}

fn nonce() -> Result<String, String> {
    Ok(B64.encode(random_bytes(24)?))
}

/// Splits `a=1,b=2` into attributes; `None` if an item is not `x=...` with `x` an ASCII
/// letter (RFC 5802's `attr-val`). Works on bytes, so a multi-byte first character is a
/// refusal, not a slice inside a character.
fn attributes(msg: &str) -> Option<Vec<(char, &str)>> {
    msg.split(',')
        .map(|item| match item.as_bytes() {
            [key, b'=', ..] if key.is_ascii_alphabetic() => Some((char::from(*key), &item[2..])),
            _ => None,
        })
        .collect()
}

fn attr<'a>(attrs: &[(char, &'a str)], key: char) -> Option<&'a str> {
    attrs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// A SCRAM saslname to a user name: `=2C` is a comma and `=3D` an equals sign (RFC 5802).
fn decode_name(name: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = name;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3)?;
        out.push(match code {
            "2C" => ',',
            "3D" => '=',
            _ => return None,
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

fn encode_name(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

/// Why an exchange failed. Every variant is answered with SASL_AUTHENTICATION_FAILED; the
/// text goes to the log and, for malformed messages, to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScramError {
    Malformed(&'static str),
    UnknownUser(String),
    BadProof(String),
    Internal(String),
}

impl std::fmt::Display for ScramError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed(why) => write!(f, "malformed SCRAM message: {why}"),
            Self::UnknownUser(u) => write!(f, "no SCRAM credential for user '{u}'"),
            Self::BadProof(u) => write!(f, "wrong password for user '{u}'"),
            Self::Internal(e) => write!(f, "{e}"),
        }
    }
}

/// The server's side of one SCRAM exchange.
#[derive(Debug)]
// One per connection, only while it authenticates: boxing the challenge saves nothing.
#[allow(clippy::large_enum_variant)]
pub enum ScramServer {
    /// Waiting for the client-first message.
    Start(Mechanism),
    /// Sent server-first; waiting for client-final.
    Challenged {
        mechanism: Mechanism,
        user: String,
        credential: ScramCredentialMeta,
        nonce: String,
        /// The client's part of `nonce`.
        client_nonce: String,
        /// client-first-bare + "," + server-first, the start of the AuthMessage.
        transcript: String,
        gs2_header: String,
        /// Whether the user has a credential (else `credential` is a decoy).
        known: bool,
    },
    Done,
}

impl ScramServer {
    pub fn new(m: Mechanism) -> Self {
        ScramServer::Start(m)
    }

    /// The client's first message: returns the server-first message. `lookup` finds the
    /// user's credential for this mechanism.
    pub fn client_first(
        &mut self,
        msg: &[u8],
        lookup: impl FnOnce(&str) -> Option<ScramCredentialMeta>,
    ) -> Result<Vec<u8>, ScramError> {
        let ScramServer::Start(mechanism) = *self else {
            return Err(ScramError::Malformed("client-first message out of order"));
        };
        *self = ScramServer::Done;
        if msg.len() > MESSAGE_MAX_BYTES {
            return Err(ScramError::Malformed("message too long"));
        }
        let msg = std::str::from_utf8(msg).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        // gs2-header: "n," or "y," (no channel binding), an optional "a=authzid", ",".
        let (cbind, rest) = msg
            .split_once(',')
            .ok_or(ScramError::Malformed("no GS2 header"))?;
        if cbind != "n" && cbind != "y" {
            return Err(ScramError::Malformed("channel binding is not supported"));
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(ScramError::Malformed("no GS2 header"))?;
        let gs2_header = format!("{cbind},{authzid},");
        let attrs = attributes(bare).ok_or(ScramError::Malformed("bad attribute"))?;
        if attrs.first().map(|(k, _)| *k) == Some('m') {
            return Err(ScramError::Malformed(
                "mandatory extensions are not supported",
            ));
        }
        let user = attr(&attrs, 'n')
            .and_then(decode_name)
            .ok_or(ScramError::Malformed("no user name"))?;
        if let Some(a) = authzid.strip_prefix("a=") {
            if decode_name(a).as_deref() != Some(user.as_str()) {
                return Err(ScramError::Malformed(
                    "authorization id differs from the user",
                ));
            }
        } else if !authzid.is_empty() {
            return Err(ScramError::Malformed("bad GS2 header"));
        }
        let client_nonce = attr(&attrs, 'r').ok_or(ScramError::Malformed("no nonce"))?;
        if client_nonce.is_empty() || client_nonce.contains(',') {
            return Err(ScramError::Malformed("bad nonce"));
        }
        // An unknown user gets a decoy challenge and fails at the proof, as a wrong
        // password does: the first answer does not say whether the user exists.
        let (credential, known) = match lookup(&user) {
            Some(c) => (c, true),
            None => (decoy_credential(mechanism, &user), false),
        };
        let nonce = format!("{client_nonce}{}", nonce().map_err(ScramError::Internal)?);
        let server_first = format!(
            "r={nonce},s={},i={}",
            credential.salt, credential.iterations
        );
        *self = ScramServer::Challenged {
            mechanism,
            user,
            credential,
            nonce,
            client_nonce: client_nonce.to_string(),
            transcript: format!("{bare},{server_first}"),
            gs2_header,
            known,
        };
        Ok(server_first.into_bytes())
    }

    /// The client's final message: checks its proof and returns the server-final message
    /// and the authenticated user.
    pub fn client_final(&mut self, msg: &[u8]) -> Result<(Vec<u8>, String), ScramError> {
        let ScramServer::Challenged {
            mechanism: m,
            user,
            credential,
            nonce,
            client_nonce,
            transcript,
            gs2_header,
            known,
        } = std::mem::replace(self, ScramServer::Done)
        else {
            return Err(ScramError::Malformed("client-final message out of order"));
        };
        if msg.len() > MESSAGE_MAX_BYTES {
            return Err(ScramError::Malformed("message too long"));
        }
        let msg = std::str::from_utf8(msg).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = msg
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let attrs = attributes(without_proof).ok_or(ScramError::Malformed("bad attribute"))?;
        if attr(&attrs, 'c') != Some(B64.encode(gs2_header.as_bytes()).as_str()) {
            return Err(ScramError::Malformed(
                "channel binding does not match the GS2 header",
            ));
        }
        // librdkafka before 2.6.1 (Debian's 2.0.2, kcat) sends its own nonce again in front
        // of the server's (librdkafka#4895). That form still carries the whole server
        // nonce, so it defeats replay like the right one; Kafka 3.8.1-3.9 accepted it too
        // (Kafka 4 refuses it). Nothing else is accepted.
        let sent = attr(&attrs, 'r');
        let doubled = format!("{client_nonce}{nonce}");
        if sent != Some(nonce.as_str()) && sent != Some(doubled.as_str()) {
            return Err(ScramError::Malformed("nonce does not match"));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof is not base64"))?;
        let stored = B64.decode(&credential.stored_key);
        let server_key = B64.decode(&credential.server_key);
        let (Ok(stored), Ok(server_key)) = (stored, server_key) else {
            return Err(ScramError::Internal(format!(
                "the stored credential of '{user}' is damaged; set it again with gregor user create"
            )));
        };
        if proof.len() != m.len() {
            return Err(ScramError::BadProof(user));
        }
        let auth_message = format!("{transcript},{without_proof}");
        let signature = mac(m, &stored, auth_message.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        if !known {
            // For the log: the client is told only that authentication failed.
            return Err(ScramError::UnknownUser(user));
        }
        if !same(&hash(m, &client_key), &stored) {
            return Err(ScramError::BadProof(user));
        }
        let server_signature = mac(m, &server_key, auth_message.as_bytes());
        Ok((
            format!("v={}", B64.encode(server_signature)).into_bytes(),
            user,
        ))
    }
}

/// The client's side, for `gregor` tools talking to a SASL listener.
pub struct ScramClient {
    mechanism: Mechanism,
    user: String,
    password: String,
    client_nonce: String,
    state: Option<(String, Vec<u8>)>,
}

impl ScramClient {
    pub fn new(mechanism: Mechanism, user: &str, password: &str) -> Result<Self, String> {
        Ok(ScramClient {
            mechanism,
            user: user.to_string(),
            password: password.to_string(),
            client_nonce: nonce()?,
            state: None,
        })
    }

    fn first_bare(&self) -> String {
        format!("n={},r={}", encode_name(&self.user), self.client_nonce)
    }

    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.first_bare()).into_bytes()
    }

    /// Answers the server-first message with the client-final one.
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, String> {
        let m = self.mechanism;
        let text = std::str::from_utf8(server_first).map_err(|_| "server-first is not UTF-8")?;
        let attrs = attributes(text).ok_or("malformed server-first message")?;
        let nonce = attr(&attrs, 'r').ok_or("server-first has no nonce")?;
        if !nonce.starts_with(&self.client_nonce) {
            return Err("the server's nonce does not extend ours".into());
        }
        let salt = B64
            .decode(attr(&attrs, 's').ok_or("server-first has no salt")?)
            .map_err(|_| "the salt is not base64")?;
        let iterations: u32 = attr(&attrs, 'i')
            .and_then(|i| i.parse().ok())
            .ok_or("server-first has no iteration count")?;
        if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&iterations) {
            return Err(format!("the server asks for {iterations} iterations"));
        }
        let salted = salted_password(m, self.password.as_bytes(), &salt, iterations);
        let client_key = mac(m, &salted, b"Client Key");
        let stored = hash(m, &client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.first_bare());
        let signature = mac(m, &stored, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = mac(m, &salted, b"Server Key");
        self.state = Some((auth_message, server_key));
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks the server-final message: the server proves it knows the credential too.
    pub fn server_final(&self, msg: &[u8]) -> Result<(), String> {
        let (auth_message, server_key) = self.state.as_ref().ok_or("exchange out of order")?;
        let text = std::str::from_utf8(msg).map_err(|_| "server-final is not UTF-8")?;
        if let Some(e) = text.strip_prefix("e=") {
            return Err(format!("the server refused: {e}"));
        }
        let v = text
            .strip_prefix("v=")
            .ok_or("malformed server-final message")?;
        let expected = mac(self.mechanism, server_key, auth_message.as_bytes());
        if B64.decode(v).ok().is_some_and(|v| same(&v, &expected)) {
            Ok(())
        } else {
            Err("the server's signature is wrong: it does not hold this user's credential".into())
        }
    }
}

/// Parses a SASL/PLAIN message, `authzid NUL user NUL password` (RFC 4616).
pub fn parse_plain(msg: &[u8]) -> Option<(String, String)> {
    if msg.len() > MESSAGE_MAX_BYTES {
        return None;
    }
    let mut parts = msg.split(|&b| b == 0);
    let authzid = std::str::from_utf8(parts.next()?).ok()?;
    let user = std::str::from_utf8(parts.next()?).ok()?;
    let password = std::str::from_utf8(parts.next()?).ok()?;
    if parts.next().is_some() || user.is_empty() || (!authzid.is_empty() && authzid != user) {
        return None;
    }
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(m: Mechanism, stored_pw: &str, given_pw: &str) -> Result<String, ScramError> {
        let cred = credential_from_password(m, stored_pw, ITERATIONS_MIN).expect("cred");
        let mut client = ScramClient::new(m, "al,i=ce", given_pw).expect("client");
        let mut server = ScramServer::new(m);
        let first = server.client_first(&client.client_first(), |u| {
            (u == "al,i=ce").then(|| cred.clone())
        })?;
        let fin = client.client_final(&first).expect("client final");
        let (server_final, user) = server.client_final(&fin)?;
        client
            .server_final(&server_final)
            .expect("server signature");
        Ok(user)
    }

    #[test]
    fn the_right_password_authenticates_and_a_wrong_one_does_not() {
        for m in [Mechanism::Sha256, Mechanism::Sha512] {
            assert_eq!(exchange(m, "secret", "secret"), Ok("al,i=ce".to_string()));
            assert!(matches!(
                exchange(m, "secret", "Secret"),
                Err(ScramError::BadProof(_))
            ));
        }
    }

    #[test]
    fn rfc7677_test_vector_for_sha256() {
        // RFC 7677 §3: user "user", password "pencil".
        let m = Mechanism::Sha256;
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("salt");
        let cred =
            credential_from_salted(m, &salted_password(m, b"pencil", &salt, 4096), &salt, 4096);
        let client_first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO";
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let without_proof = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let mut server = ScramServer::Challenged {
            mechanism: m,
            user: "user".into(),
            credential: cred,
            nonce: "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into(),
            client_nonce: "rOprNGfwEbeRWgbNEkqO".into(),
            transcript: format!("{client_first_bare},{server_first}"),
            gs2_header: "n,,".into(),
            known: true,
        };
        let fin = format!("{without_proof},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        let (server_final, user) = server
            .client_final(fin.as_bytes())
            .expect("vector verifies");
        assert_eq!(user, "user");
        assert_eq!(
            String::from_utf8(server_final).expect("utf8"),
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    /// A client-final message for `server_first`, with `r` as the nonce it sends.
    fn final_with_nonce(m: Mechanism, pw: &str, bare: &str, server_first: &str, r: &str) -> String {
        let attrs = attributes(server_first).expect("attrs");
        let salt = B64.decode(attr(&attrs, 's').expect("s")).expect("salt");
        let i: u32 = attr(&attrs, 'i').expect("i").parse().expect("i");
        let salted = salted_password(m, pw.as_bytes(), &salt, i);
        let client_key = mac(m, &salted, b"Client Key");
        let without_proof = format!("c=biws,r={r}");
        let auth = format!("{bare},{server_first},{without_proof}");
        let sig = mac(m, &hash(m, &client_key), auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        format!("{without_proof},p={}", B64.encode(proof))
    }

    #[test]
    fn old_librdkafkas_doubled_client_nonce_is_accepted_and_nothing_else() {
        let m = Mechanism::Sha512;
        let cred = credential_from_password(m, "pw", ITERATIONS_MIN).expect("c");
        let bare = "n=alice,r=CLIENTNONCE";
        for (r, ok) in [
            ("{c}{s}", true),
            ("{c}{c}{s}", true),
            ("X{c}{s}", false),
            ("{c}", false),
        ] {
            let mut server = ScramServer::new(m);
            let first = server
                .client_first(format!("n,,{bare}").as_bytes(), |_| Some(cred.clone()))
                .expect("first");
            let first = String::from_utf8(first).expect("utf8");
            let full = attr(&attributes(&first).expect("a"), 'r')
                .expect("r")
                .to_string();
            let r = r.replace("{c}{s}", &full).replace("{c}", "CLIENTNONCE");
            let fin = final_with_nonce(m, "pw", bare, &first, &r);
            assert_eq!(server.client_final(fin.as_bytes()).is_ok(), ok, "{r}");
        }
    }

    #[test]
    fn malformed_and_unknown_are_errors_not_panics() {
        let cred = credential_from_password(Mechanism::Sha512, "pw", ITERATIONS_MIN).expect("c");
        for msg in [
            &b""[..],
            b"n",
            b"n,,",
            b"p=tls-unique,,n=a,r=x",
            b"n,,m=ext,n=a,r=x",
            b"n,,n=a",
            b"n,,n=a=zz,r=x",
            b"n,a=b,n=a,r=x",
            b"\xff\xfe",
            // A multi-byte first character of an attribute (found by the sasl_exchange
            // fuzz target: it used to slice inside the character and panic).
            "n,,n=a,\u{5783}=x,r=x".as_bytes(),
            "n,,\u{e9}".as_bytes(),
        ] {
            let mut s = ScramServer::new(Mechanism::Sha512);
            assert!(
                s.client_first(msg, |_| Some(cred.clone())).is_err(),
                "{msg:?}"
            );
        }
        // An unknown user is challenged like a known one (same shape, the same salt on
        // every try) and fails only at the proof.
        let first_of = |user: &str, lookup: Option<ScramCredentialMeta>| {
            let mut s = ScramServer::new(Mechanism::Sha512);
            let first = s
                .client_first(format!("n,,n={user},r=abc").as_bytes(), |_| lookup)
                .expect("a challenge");
            String::from_utf8(first).expect("text")
        };
        let salt_of = |first: &str| first.split(',').nth(1).expect("salt").to_string();
        let known =
            credential_from_password(Mechanism::Sha512, "pw", ITERATIONS_DEFAULT).expect("c");
        let (bob, bob_again, eve) = (
            first_of("bob", None),
            first_of("bob", None),
            first_of("eve", None),
        );
        let real = first_of("alice", Some(known.clone()));
        assert_eq!(
            salt_of(&bob),
            salt_of(&bob_again),
            "the same decoy salt each time"
        );
        assert_ne!(salt_of(&bob), salt_of(&eve));
        assert_eq!(salt_of(&bob).len(), salt_of(&real).len());
        assert_eq!(
            bob.rsplit(',').next(),
            real.rsplit(',').next(),
            "the same iterations"
        );
        let mut client = ScramClient::new(Mechanism::Sha512, "bob", "pw").expect("client");
        let mut s = ScramServer::new(Mechanism::Sha512);
        let first = s
            .client_first(&client.client_first(), |_| None)
            .expect("challenge");
        let last = client.client_final(&first).expect("final");
        assert_eq!(
            s.client_final(&last),
            Err(ScramError::UnknownUser("bob".into()))
        );
        let mut s = ScramServer::new(Mechanism::Sha512);
        s.client_first(b"n,,n=bob,r=abc", |_| Some(cred.clone()))
            .expect("first");
        assert!(s.client_final(b"c=biws,r=abc,p=AAAA").is_err());
        assert!(s.client_final(b"again").is_err(), "one final per exchange");
    }

    #[test]
    fn plain_messages_and_password_checks() {
        assert_eq!(parse_plain(b"\0u\0p"), Some(("u".into(), "p".into())));
        assert_eq!(parse_plain(b"u\0u\0p"), Some(("u".into(), "p".into())));
        assert_eq!(parse_plain(b"x\0u\0p"), None);
        assert_eq!(parse_plain(b"\0\0p"), None);
        assert_eq!(parse_plain(b"\0u\0p\0"), None);
        let cred = credential_from_password(Mechanism::Sha256, "pw", ITERATIONS_MIN).expect("c");
        assert!(password_matches(Mechanism::Sha256, &cred, "pw"));
        assert!(!password_matches(Mechanism::Sha256, &cred, "pw2"));
    }
}
