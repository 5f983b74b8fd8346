//! Token buckets for per-connection and per-IP limits.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Allows `per_minute` events a minute with bursts of up to `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    tokens: f64,
    per_second: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(per_minute: u32, burst: u32) -> Self {
        Self {
            capacity: burst.max(1) as f64,
            tokens: burst.max(1) as f64,
            per_second: per_minute as f64 / 60.0,
            last: Instant::now(),
        }
    }

    pub fn try_take(&mut self) -> bool {
        self.try_take_at(Instant::now())
    }

    fn try_take_at(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Connection counts and message buckets per client IP.
pub struct IpLimiter {
    connections_per_ip: u32,
    messages_per_minute: u32,
    state: Mutex<HashMap<IpAddr, IpState>>,
}

struct IpState {
    connections: u32,
    messages: TokenBucket,
}

impl IpLimiter {
    pub fn new(connections_per_ip: u32, messages_per_minute: u32) -> Self {
        Self {
            connections_per_ip,
            messages_per_minute,
            state: Mutex::new(HashMap::new()),
        }
    }

    fn entry<'a>(&self, map: &'a mut HashMap<IpAddr, IpState>, ip: IpAddr) -> &'a mut IpState {
        let per_minute = self.messages_per_minute;
        map.entry(ip).or_insert_with(|| IpState {
            connections: 0,
            messages: TokenBucket::new(per_minute, per_minute.div_ceil(4).max(1)),
        })
    }

    /// Registers a connection; false when the IP already has too many.
    pub fn connect(&self, ip: IpAddr) -> bool {
        let mut map = self.state.lock().expect("limiter lock");
        let state = self.entry(&mut map, ip);
        if state.connections >= self.connections_per_ip {
            return false;
        }
        state.connections += 1;
        true
    }

    pub fn disconnect(&self, ip: IpAddr) {
        let mut map = self.state.lock().expect("limiter lock");
        if let Some(state) = map.get_mut(&ip) {
            state.connections = state.connections.saturating_sub(1);
            // Forget idle IPs so the map does not grow without bound.
            if state.connections == 0 && state.messages.tokens >= state.messages.capacity {
                map.remove(&ip);
            }
        }
    }

    pub fn message(&self, ip: IpAddr) -> bool {
        let mut map = self.state.lock().expect("limiter lock");
        self.entry(&mut map, ip).messages.try_take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_allows_burst_then_refills() {
        let mut b = TokenBucket::new(60, 2);
        let t0 = Instant::now();
        assert!(b.try_take_at(t0));
        assert!(b.try_take_at(t0));
        assert!(!b.try_take_at(t0));
        assert!(b.try_take_at(t0 + Duration::from_millis(1100)));
    }

    #[test]
    fn ip_connection_cap() {
        let l = IpLimiter::new(2, 60);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(l.connect(ip) && l.connect(ip));
        assert!(!l.connect(ip));
        l.disconnect(ip);
        assert!(l.connect(ip));
    }
}
