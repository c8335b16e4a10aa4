//! Base64 helpers (URL-safe without padding is the JOSE encoding).
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

pub fn url_encode(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

pub fn url_decode(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

pub fn std_encode(data: &[u8]) -> String {
    STANDARD.encode(data)
}

pub fn std_decode(s: &str) -> Option<Vec<u8>> {
    STANDARD.decode(s).ok()
}
