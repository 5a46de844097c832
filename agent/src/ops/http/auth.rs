//! Who may read a UI bound beyond loopback: HTTP Basic authentication against a
//! users file (`[ui] users_file`), one `name:pbkdf2-sha256:ITERATIONS:SALT:HASH`
//! line per user (salt and hash in hex), written by `edge-agent ui-password NAME`.
//! Passwords never appear in the TOML, the log or the process list.
//!
//! PBKDF2 is slow on purpose; a verified `Authorization` header is remembered (by
//! its SHA-256, at most [`REMEMBERED`] of them) so that the UI's requests do not
//! each pay for it. Basic credentials only travel inside TLS: `check-config`
//! refuses a remote bind without `tls_cert`/`tls_key`.

use std::sync::Mutex;

use base64::Engine as _;
use hyper::header::{self, HeaderValue};
use hyper::{HeaderMap, StatusCode};
use sha2::{Digest, Sha256};

use super::routes::{Response, text};

/// Iterations for new passwords (`edge-agent ui-password`).
pub const ITERATIONS: u32 = 100_000;
/// Verified headers remembered.
const REMEMBERED: usize = 16;

#[derive(Debug)]
struct User {
    name: String,
    iterations: u32,
    salt: Vec<u8>,
    hash: Vec<u8>,
}

/// The users of a UI.
#[derive(Debug)]
pub struct Users {
    users: Vec<User>,
    verified: Mutex<Vec<[u8; 32]>>,
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn derive(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
    out
}

/// Equal without an early exit (the time does not tell how much matched).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The users-file line for `name` with `password` and a fresh random salt.
pub fn hash_line(name: &str, password: &str) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut salt = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut salt)?;
    let hash = derive(password.as_bytes(), &salt, ITERATIONS);
    Ok(format!(
        "{name}:pbkdf2-sha256:{ITERATIONS}:{}:{}",
        to_hex(&salt),
        to_hex(&hash)
    ))
}

impl Users {
    /// Parses a users file; the error names the line and what is wrong with it.
    pub fn parse(text: &str) -> Result<Users, String> {
        let mut users = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |what: &str| {
                format!(
                    "line {}: {what}; expected `name:pbkdf2-sha256:ITERATIONS:SALT:HASH` as written by `edge-agent ui-password NAME`",
                    i + 1
                )
            };
            let f: Vec<&str> = line.split(':').collect();
            let [name, scheme, iterations, salt, hash] = f.as_slice() else {
                return Err(bad("not five fields separated by `:`"));
            };
            if *scheme != "pbkdf2-sha256" {
                return Err(bad(&format!("unknown scheme `{scheme}`")));
            }
            let iterations = iterations
                .parse::<u32>()
                .ok()
                .filter(|n| *n >= 10_000)
                .ok_or_else(|| bad("iterations must be a number of at least 10000"))?;
            let salt = hex(salt)
                .filter(|s| s.len() >= 8)
                .ok_or_else(|| bad("bad salt"))?;
            let hash = hex(hash)
                .filter(|h| h.len() == 32)
                .ok_or_else(|| bad("bad hash"))?;
            if name.is_empty() {
                return Err(bad("empty user name"));
            }
            users.push(User {
                name: name.to_string(),
                iterations,
                salt,
                hash,
            });
        }
        if users.is_empty() {
            return Err("no users in the file; add one with `edge-agent ui-password NAME`".into());
        }
        Ok(Users {
            users,
            verified: Mutex::new(Vec::new()),
        })
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// `Ok` when the request carries valid Basic credentials, else the 401 to send.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Response> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(challenge("authentication required\n"));
        };
        let key: [u8; 32] = Sha256::digest(value.as_bytes()).into();
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.iter().any(|k| same(k, &key)) {
            return Ok(());
        }
        if !self.verify(value.as_bytes()) {
            tracing::info!("ui: a request with wrong credentials was refused");
            return Err(challenge("wrong user name or password\n"));
        }
        if verified.len() == REMEMBERED {
            verified.remove(0);
        }
        verified.push(key);
        Ok(())
    }

    fn verify(&self, header: &[u8]) -> bool {
        let Some(b64) = header.strip_prefix(b"Basic ") else {
            return false;
        };
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64) else {
            return false;
        };
        let Ok(raw) = std::str::from_utf8(&raw) else {
            return false;
        };
        let Some((name, password)) = raw.split_once(':') else {
            return false;
        };
        self.users.iter().any(|u| {
            u.name == name && same(&derive(password.as_bytes(), &u.salt, u.iterations), &u.hash)
        })
    }
}

fn challenge(msg: &'static str) -> Response {
    let mut r = text(StatusCode::UNAUTHORIZED, msg);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"edge-agent\", charset=\"UTF-8\""),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, pw: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {v}")).expect("header"),
        );
        h
    }

    #[test]
    fn only_the_right_password_opens_and_a_verified_header_is_remembered() {
        let file = hash_line("ops", "s3cret pass").expect("urandom") + "\n# comment\n";
        let users = Users::parse(&file).expect("parses");
        assert_eq!(users.len(), 1);
        assert!(users.check(&basic("ops", "s3cret pass")).is_ok());
        assert!(
            users.check(&basic("ops", "s3cret pass")).is_ok(),
            "from memory"
        );
        for (u, p) in [("ops", "wrong"), ("root", "s3cret pass"), ("ops", "")] {
            let r = users.check(&basic(u, p)).expect_err("refused");
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
            assert!(r.headers().contains_key(header::WWW_AUTHENTICATE));
        }
        let mut garbage = HeaderMap::new();
        garbage.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic %%%"));
        assert!(users.check(&garbage).is_err());
        assert!(users.check(&HeaderMap::new()).is_err());
    }

    #[test]
    fn a_bad_users_file_says_which_line_and_how_to_write_it() {
        for (text, says) in [
            ("", "no users"),
            ("ops:plain", "line 1: not five fields"),
            ("# c\nops:md5:1:00:00", "line 2: unknown scheme"),
            ("ops:pbkdf2-sha256:10:0011223344556677:00", "at least 10000"),
            ("ops:pbkdf2-sha256:10000:zz:00", "bad salt"),
        ] {
            let e = Users::parse(text).expect_err(text);
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
