//! The key that signs a registry topic's manifests (HMAC-SHA256), shared by the publisher and
//! the readers through a key file.

use crate::digests::hex;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The Kafka header of a manifest that holds its signature: the HMAC-SHA256 of the manifest's
/// bytes under the registry key, hex.
pub const SIGNATURE_HEADER: &str = "millrace-hmac-sha256";

/// The fewest bytes a registry key may have (the strength HMAC-SHA256 is meant for is 32).
pub const KEY_MIN_BYTES: usize = 32;

/// A registry key.
#[derive(Clone)]
pub struct RegistryKey(Vec<u8>);

impl std::fmt::Debug for RegistryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegistryKey(<secret>)")
    }
}

impl RegistryKey {
    /// A key of these bytes.
    ///
    /// # Errors
    ///
    /// When it has fewer than [`KEY_MIN_BYTES`].
    pub fn new(bytes: Vec<u8>) -> Result<Self, String> {
        if bytes.len() < KEY_MIN_BYTES {
            return Err(format!(
                "a registry key has at least {KEY_MIN_BYTES} bytes (got {})",
                bytes.len()
            ));
        }
        Ok(RegistryKey(bytes))
    }

    fn mac(&self, message: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(message);
        mac
    }

    /// The signature of `message`, hex (the [`SIGNATURE_HEADER`]'s value).
    pub fn sign(&self, message: &[u8]) -> String {
        hex(&self.mac(message).finalize().into_bytes())
    }

    /// Whether `signature` (hex) signs `message` under this key; compared in constant time.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        let Some(tag) = unhex(signature) else {
            return false;
        };
        self.mac(message).verify_slice(&tag).is_ok()
    }
}

fn unhex(text: &[u8]) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || !text.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    text.chunks_exact(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}
