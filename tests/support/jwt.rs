//! Ed25519 keys and EdDSA JWTs for sqld's `--auth-jwt-key-file`, made by
//! hand: a JWT is two base64url JSON parts and a signature over them.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};

/// A signing key from a fixed seed: tests are reproducible, and two seeds
/// give two unrelated keys.
#[derive(Debug)]
pub struct Key(SigningKey);

impl Key {
    pub fn from_seed(seed: u8) -> Key {
        Key(SigningKey::from_bytes(&[seed; 32]))
    }

    /// The public key as sqld reads it: raw 32 bytes, URL-safe base64
    /// without padding (and no trailing newline).
    pub fn public_key(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0.verifying_key().as_bytes())
    }

    /// A JWT with `claims` (a JSON object), signed EdDSA.
    pub fn token(&self, claims: &serde_json::Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"EdDSA","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signed = format!("{header}.{body}");
        let signature = self.0.sign(signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }
}
