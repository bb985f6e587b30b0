//! The SSRF guard: webhook targets are `http(s)` URLs whose addresses are public, unless the
//! configuration ([`TargetPolicy`]) allows loopback or every address. Checked when an endpoint is
//! registered (scheme, literal addresses, `localhost`) and again at every connection: the
//! dispatcher's HTTP client resolves names through [`GuardedResolver`], which drops refused
//! addresses (so a name that later resolves to a private address is refused too), and follows no
//! redirects.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use url::Url;

pub use crate::config::TargetPolicy;

/// Why an address is not public, if it is not.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return non_public_v4(v4);
            }
            let s = v6.segments();
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if (s[0] & 0xfe00) == 0xfc00 {
                Some("private (unique local)")
            } else if (s[0] & 0xffc0) == 0xfe80 {
                Some("link-local")
            } else if (s[0] & 0xff00) == 0xff00 {
                Some("multicast")
            } else if s[0] == 0x64 && s[1] == 0xff9b {
                // NAT64: the embedded IPv4 address decides.
                let v4 =
                    Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
                non_public_v4(v4)
            } else if s[0] == 0x2001 && s[1] == 0x0db8 {
                Some("documentation")
            } else {
                None
            }
        }
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.is_unspecified() || o[0] == 0 {
        Some("unspecified")
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        Some("shared (CGNAT)")
    } else if ip.is_multicast() || ip.is_broadcast() || o[0] >= 240 {
        Some("multicast or reserved")
    } else if (o[0] == 192 && o[1] == 0 && o[2] == 0)
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
        || ip.is_documentation()
    {
        Some("reserved")
    } else {
        None
    }
}

/// Whether `ip` may be a target under `policy`.
pub fn ip_allowed(ip: IpAddr, policy: TargetPolicy) -> Result<(), String> {
    match (non_public(ip), policy) {
        (None, _) | (Some(_), TargetPolicy::All) => Ok(()),
        (Some("loopback"), TargetPolicy::Loopback) => Ok(()),
        (Some(why), _) => Err(format!(
            "{ip} is a {why} address; webhook targets must be public \
             (WEBHOOK_ALLOW_PRIVATE_TARGETS allows loopback or all)"
        )),
    }
}

/// Checks a target URL without resolving it: `http`/`https`, a host, no credentials, and a
/// literal address (or `localhost`) allowed by the policy.
pub fn check_url(raw: &str, policy: TargetPolicy) -> Result<Url, String> {
    let url = Url::parse(raw.trim()).map_err(|e| format!("`{raw}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "scheme `{}` is not allowed: webhook targets are http or https",
            url.scheme()
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials in the URL are not allowed".into());
    }
    match url.host() {
        None => return Err(format!("`{raw}` has no host")),
        Some(url::Host::Ipv4(ip)) => ip_allowed(IpAddr::V4(ip), policy)?,
        Some(url::Host::Ipv6(ip)) => ip_allowed(IpAddr::V6(ip), policy)?,
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            if d == "localhost" || d.ends_with(".localhost") {
                ip_allowed(IpAddr::V4(Ipv4Addr::LOCALHOST), policy)?;
            }
        }
    }
    Ok(url)
}

/// A DNS resolver for the dispatcher's client that keeps only allowed addresses.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub policy: TargetPolicy,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let ok: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| match ip_allowed(a.ip(), policy) {
                    Ok(()) => true,
                    Err(e) => {
                        refused = Some(e);
                        false
                    }
                })
                .collect();
            if ok.is_empty() {
                let why = refused.unwrap_or_else(|| format!("`{host}` has no address"));
                return Err(format!("refused target `{host}`: {why}").into());
            }
            let it: reqwest::dns::Addrs = Box::new(ok.into_iter());
            Ok(it)
        })
    }
}

/// The resolver as the client builder takes it.
pub fn resolver(policy: TargetPolicy) -> Arc<GuardedResolver> {
    Arc::new(GuardedResolver { policy })
}

/// Checks the literal address of a URL about to be requested (names go through the resolver).
pub fn check_literal(url: &Url, policy: TargetPolicy) -> Result<(), String> {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip_allowed(IpAddr::V4(ip), policy),
        Some(url::Host::Ipv6(ip)) => ip_allowed(IpAddr::V6(ip), policy),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_non_public_targets() {
        let none = TargetPolicy::None;
        for bad in [
            "ftp://example.com/x",
            "http://127.0.0.1:8080/hook",
            "http://localhost/hook",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
            "http://[::1]/",
            "http://[fe80::1]/",
            "http://[fd00::1]/",
            "http://[::ffff:10.0.0.1]/",
            "http://user:pw@example.com/",
            "file:///etc/passwd",
        ] {
            assert!(check_url(bad, none).is_err(), "{bad} accepted");
        }
        assert!(check_url("https://hooks.example.com/fluxora", none).is_ok());
        assert!(check_url("http://8.8.8.8/", none).is_ok());
    }

    #[test]
    fn policy_allows_loopback_or_all() {
        let lb = TargetPolicy::Loopback;
        assert!(check_url("http://127.0.0.1:9/", lb).is_ok());
        assert!(check_url("http://localhost:9/", lb).is_ok());
        assert!(check_url("http://[::1]:9/", lb).is_ok());
        assert!(check_url("http://10.0.0.1/", lb).is_err());
        assert!(check_url("http://169.254.169.254/", lb).is_err());
        assert!(check_url("http://10.0.0.1/", TargetPolicy::All).is_ok());
    }

    #[tokio::test]
    async fn resolver_drops_refused_addresses() {
        use reqwest::dns::Resolve;
        let r = GuardedResolver {
            policy: TargetPolicy::None,
        };
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        assert!(r.resolve(name).await.is_err());
        let r = GuardedResolver {
            policy: TargetPolicy::Loopback,
        };
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let addrs: Vec<_> = r.resolve(name).await.unwrap().collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()));
    }
}
