//! The visitor's address for limits and logs (docs/security.md, "Behind a reverse proxy").
//! `X-Forwarded-For` / `Forwarded` are believed only from configured proxy addresses; from
//! anyone else they are ignored, since any client can write them.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

#[derive(Debug, Default, Clone)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// Parses addresses or CIDR ranges ("10.0.0.0/8", "127.0.0.1").
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let mut nets = Vec::new();
        for entry in entries {
            let entry = entry.trim();
            let net = match entry.parse::<IpNet>() {
                Ok(net) => net,
                Err(_) => match entry.parse::<IpAddr>() {
                    Ok(ip) => IpNet::from(ip),
                    Err(_) => {
                        return Err(format!(
                            "security.trusted_proxies: {entry:?} is not an address or CIDR range"
                        ))
                    }
                },
            };
            nets.push(net);
        }
        Ok(Self { nets })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The client's address: the TCP peer, unless the peer is a trusted proxy; then the
    /// right-most forwarded address that is not itself a trusted proxy (the left part of
    /// the chain is whatever the client wrote and cannot be believed).
    pub fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let peer_ip = canonical(peer.ip());
        if !self.contains(peer_ip) {
            return peer_ip;
        }
        let mut chain: Vec<IpAddr> = Vec::new();
        for value in headers.get_all("forwarded") {
            let Ok(value) = value.to_str() else { continue };
            for element in value.split(',') {
                for pair in element.split(';') {
                    let Some((key, v)) = pair.trim().split_once('=') else {
                        continue;
                    };
                    if key.trim().eq_ignore_ascii_case("for") {
                        if let Some(ip) = parse_forwarded_node(v.trim()) {
                            chain.push(ip);
                        }
                    }
                }
            }
        }
        if chain.is_empty() {
            for value in headers.get_all("x-forwarded-for") {
                let Ok(value) = value.to_str() else { continue };
                chain.extend(
                    value
                        .split(',')
                        .filter_map(|s| parse_forwarded_node(s.trim())),
                );
            }
        }
        chain
            .into_iter()
            .rev()
            .find(|ip| !self.contains(*ip))
            .unwrap_or(peer_ip)
    }
}

/// IPv4-mapped IPv6 addresses count as the IPv4 address (dual-stack listeners).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// `203.0.113.7`, `"[2001:db8::1]:4711"`, `198.51.100.1:80`; obfuscated ids are ignored.
fn parse_forwarded_node(node: &str) -> Option<IpAddr> {
    let node = node.trim_matches('"');
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(canonical(addr.ip()));
    }
    let inner = node.strip_prefix('[')?.split(']').next()?;
    inner.parse::<IpAddr>().ok().map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn forwarded_headers_are_ignored_from_untrusted_peers() {
        let proxies = TrustedProxies::parse(&["10.0.0.0/8".into()]).unwrap();
        let peer: SocketAddr = "198.51.100.9:5000".parse().unwrap();
        let h = headers(&[("x-forwarded-for", "203.0.113.1")]);
        assert_eq!(proxies.client_ip(peer, &h), peer.ip());
        let none = TrustedProxies::default();
        assert_eq!(none.client_ip(peer, &h), peer.ip());
    }

    #[test]
    fn the_rightmost_untrusted_forwarded_address_is_the_client() {
        let proxies = TrustedProxies::parse(&["10.0.0.0/8".into(), "127.0.0.1".into()]).unwrap();
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        // The client wrote a fake first entry; the proxy appended the real one.
        let h = headers(&[("x-forwarded-for", "1.2.3.4, 203.0.113.7, 10.0.0.5")]);
        assert_eq!(
            proxies.client_ip(peer, &h),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        let h = headers(&[(
            "forwarded",
            r#"for=192.0.2.60;proto=http, for="[2001:db8::1]:4711""#,
        )]);
        assert_eq!(
            proxies.client_ip(peer, &h),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        // Nothing forwarded: the proxy itself.
        assert_eq!(proxies.client_ip(peer, &HeaderMap::new()), peer.ip());
    }

    #[test]
    fn bad_entries_are_refused() {
        assert!(TrustedProxies::parse(&["not-an-ip".into()]).is_err());
        assert!(TrustedProxies::parse(&["::1".into(), "fd00::/8".into()]).is_ok());
    }
}
