//! Optional per-vault throttling in Azure Key Vault's style (`--vault-throttle`; off by
//! default), so that clients' retry behaviour can be exercised.
//!
//! Azure limits each vault to a weighted sum of transactions per 10 seconds: for software
//! keys, 4,000 "all other transactions" on RSA-2048 and EC keys, 1,000 on RSA-3072, 500 on
//! RSA-4096, and 20 key creations; HSM keys half of each. Here every request costs
//! 4,000 / (its limit) units, and a vault's units over the last 10 seconds may not exceed
//! 4,000. A request that would exceed it gets 429 with `Retry-After` (the seconds until enough
//! units expire) and, as in Azure, does not count. The window follows the server's clock, so a
//! test clock moves it.
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Units a vault may spend per window (Azure: 4,000 RSA-2048 operations per 10 s).
pub const BUDGET: u32 = 4000;
/// The window, in seconds.
pub const WINDOW: i64 = 10;

/// What a request is, for its weight.
pub enum Cost<'a> {
    /// Creating a key of this `kty` (as requested).
    Create { kty: &'a str },
    /// An operation on a key of this type and size.
    Key { kty: &'a str, size: Option<u32> },
    /// Anything else (lists, restore, random bytes).
    Other,
}

impl Cost<'_> {
    /// 4,000 / Azure's per-10-second limit for this kind of request.
    pub fn units(&self) -> u32 {
        let hsm = |kty: &str| kty.to_ascii_uppercase().ends_with("-HSM");
        match self {
            Cost::Create { kty } if hsm(kty) => BUDGET / 10,
            Cost::Create { .. } => BUDGET / 20,
            Cost::Key { kty, size } => {
                let base = if kty.to_ascii_uppercase().starts_with("RSA") {
                    match size {
                        Some(s) if *s >= 4096 => 8,
                        Some(s) if *s >= 3072 => 4,
                        _ => 1,
                    }
                } else {
                    1
                };
                if hsm(kty) { base * 2 } else { base }
            }
            Cost::Other => 1,
        }
    }
}

/// The units each vault spent, by second, over the current window.
#[derive(Default)]
pub struct Throttle {
    vaults: Mutex<HashMap<String, VecDeque<(i64, u32)>>>,
}

impl Throttle {
    /// Take `units` for `vault` at `now` (seconds), or say how many seconds to wait.
    pub fn take(&self, vault: &str, units: u32, now: i64) -> Result<(), u64> {
        let Ok(mut vaults) = self.vaults.lock() else {
            return Ok(()); // a poisoned lock must not stop the vault
        };
        let spent = vaults.entry(vault.to_ascii_lowercase()).or_default();
        while spent.front().is_some_and(|(t, _)| *t <= now - WINDOW) {
            spent.pop_front();
        }
        let used: u32 = spent.iter().map(|(_, u)| u).sum();
        if used.saturating_add(units) <= BUDGET {
            match spent.back_mut() {
                Some((t, u)) if *t == now => *u = u.saturating_add(units),
                _ => spent.push_back((now, units)),
            }
            return Ok(());
        }
        // Wait until enough of the oldest units have left the window.
        let mut freed = 0u32;
        for (t, u) in spent.iter() {
            freed = freed.saturating_add(*u);
            if used - freed + units <= BUDGET {
                return Err(u64::try_from(t + WINDOW - now).unwrap_or(1).max(1));
            }
        }
        Err(WINDOW as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_follow_azures_limits() {
        let k = |kty, size| Cost::Key { kty, size }.units();
        assert_eq!(k("RSA", Some(2048)), 1);
        assert_eq!(k("RSA", Some(3072)), 4);
        assert_eq!(k("RSA", Some(4096)), 8);
        assert_eq!(k("RSA-HSM", Some(2048)), 2);
        assert_eq!(k("EC", None), 1);
        assert_eq!(Cost::Create { kty: "EC" }.units(), 200);
        assert_eq!(Cost::Create { kty: "RSA-HSM" }.units(), 400);
    }

    #[test]
    fn a_window_of_ten_seconds_per_vault() {
        let t = Throttle::default();
        for _ in 0..20 {
            assert_eq!(t.take("kv", 200, 100), Ok(()));
        }
        assert_eq!(
            t.take("kv", 200, 105),
            Err(5),
            "the first units leave at 110"
        );
        assert_eq!(t.take("KV", 1, 109), Err(1), "names are case-insensitive");
        assert_eq!(t.take("other", 200, 105), Ok(()), "per vault");
        assert_eq!(t.take("kv", 200, 110), Ok(()));
        assert_eq!(
            t.take("kv", 5000, 200),
            Err(10),
            "more than a window never fits"
        );
    }
}
