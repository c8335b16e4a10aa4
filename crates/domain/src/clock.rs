//! Time sources. Production uses the system clock; tests can shift time forward
//! ([`Clock::advance`] is only honoured when the clock was built shiftable).
use std::sync::atomic::{AtomicI64, Ordering};

#[derive(Debug, Default)]
pub struct Clock {
    shiftable: bool,
    offset: AtomicI64,
}

impl Clock {
    pub fn system() -> Self {
        Self::default()
    }

    pub fn shiftable() -> Self {
        Self {
            shiftable: true,
            offset: AtomicI64::new(0),
        }
    }

    pub fn is_shiftable(&self) -> bool {
        self.shiftable
    }

    /// Seconds since the Unix epoch.
    pub fn now(&self) -> i64 {
        let real = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        real + self.offset.load(Ordering::Relaxed)
    }

    /// Move time forward; returns false (and does nothing) on a non-shiftable clock.
    pub fn advance(&self, seconds: i64) -> bool {
        if !self.shiftable || seconds < 0 {
            return false;
        }
        self.offset.fetch_add(seconds, Ordering::Relaxed);
        true
    }
}

/// RFC 3339 rendering of a Unix time, as ARM shows times.
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_shiftable_clocks_move() {
        let c = Clock::system();
        assert!(!c.advance(10));
        let s = Clock::shiftable();
        let before = s.now();
        assert!(s.advance(3600));
        assert!(s.now() >= before + 3600);
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
