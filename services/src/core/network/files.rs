//! The files a networked container sees at /etc/hosts, /etc/resolv.conf and /etc/hostname.

/// What becomes of the host's resolv.conf (and its loopback nameservers) in a container's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loopback {
    /// A container on a network of its own (`berth run`): the host's loopback nameservers
    /// answer only on the host, so they are dropped (see [`resolv_conf`]).
    Drop,
    /// A pod (the CRI): the kubelet decides its DNS, so with no DNS config the host's file is
    /// copied as it is, loopback nameservers included, as containerd does.
    Keep,
}

/// The DNS a caller asks for: nameservers, search domains and options.
#[derive(Debug, Clone, Copy, Default)]
pub struct Dns<'a> {
    pub servers: &'a [String],
    pub searches: &'a [String],
    pub options: &'a [String],
}

impl Dns<'_> {
    fn is_empty(&self) -> bool {
        self.servers.is_empty() && self.searches.is_empty() && self.options.is_empty()
    }
}

/// resolv.conf for a container, by `loopback`'s rule: [`Loopback::Drop`] as
/// [`resolv_conf`]; [`Loopback::Keep`] writes `dns` when it names anything (search,
/// nameservers, options, in that order) and otherwise the host's file unchanged.
pub fn resolv_conf_for(
    host: &str,
    upstream: Option<&str>,
    dns: Dns<'_>,
    loopback: Loopback,
) -> String {
    match loopback {
        Loopback::Drop => resolv_conf(host, upstream, dns.servers),
        Loopback::Keep if dns.is_empty() => host.to_string(),
        Loopback::Keep => {
            let mut s = String::new();
            if !dns.searches.is_empty() {
                s.push_str(&format!("search {}\n", dns.searches.join(" ")));
            }
            for ns in dns.servers {
                s.push_str(&format!("nameserver {ns}\n"));
            }
            if !dns.options.is_empty() {
                s.push_str(&format!("options {}\n", dns.options.join(" ")));
            }
            s
        }
    }
}

/// resolv.conf for a container: `dns` when given; otherwise the host's, without loopback
/// nameservers (they answer only on the host) — systemd-resolved's upstream file when the
/// host's points at its stub — and Google's public resolvers when nothing is left, as Docker
/// does.
pub fn resolv_conf(host: &str, upstream: Option<&str>, dns: &[String]) -> String {
    let loopback = |ns: &str| ns.starts_with("127.") || ns == "::1";
    let nameservers = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.trim().strip_prefix("nameserver"))
            .map(|ns| ns.trim().to_string())
            .filter(|ns| !ns.is_empty() && !loopback(ns))
            .collect()
    };
    let base = match upstream {
        Some(u) if nameservers(host).is_empty() => u,
        _ => host,
    };
    let mut out = String::new();
    for l in base.lines() {
        let t = l.trim();
        if t.starts_with("search") || t.starts_with("options") || t.starts_with("domain") {
            out.push_str(t);
            out.push('\n');
        }
    }
    let mut servers: Vec<String> = if dns.is_empty() {
        nameservers(base)
    } else {
        dns.to_vec()
    };
    if servers.is_empty() {
        servers = vec!["8.8.8.8".into(), "8.8.4.4".into()];
    }
    for s in servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    out
}

/// /etc/hosts: loopback names, then the container's addresses under its hostname.
pub fn hosts(hostname: &str, ips: &[String]) -> String {
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    for ip in ips {
        out.push_str(&format!("{ip}\t{hostname}\n"));
    }
    out
}

/// A hostname from a container id: at most 63 bytes of letters, digits and '-'.
pub fn hostname(id: &str) -> String {
    let h: String = id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(63)
        .collect();
    let h = h.trim_matches('-').to_string();
    if h.is_empty() {
        "container".into()
    } else {
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_drops_loopback_and_keeps_search() {
        let host = "# generated\nnameserver 127.0.0.53\nsearch example.org\noptions edns0\n";
        let upstream = "nameserver 192.0.2.1\nsearch corp\n";
        assert_eq!(
            resolv_conf(host, Some(upstream), &[]),
            "search corp\nnameserver 192.0.2.1\n"
        );
        assert_eq!(
            resolv_conf(host, None, &[]),
            "search example.org\noptions edns0\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
        assert_eq!(
            resolv_conf("nameserver 10.0.0.2\nnameserver 127.0.0.1\n", None, &[]),
            "nameserver 10.0.0.2\n"
        );
        assert_eq!(
            resolv_conf(host, None, &["1.1.1.1".into()]),
            "search example.org\noptions edns0\nnameserver 1.1.1.1\n"
        );
    }

    #[test]
    fn dropping_loopback_is_resolv_conf() {
        let host = "nameserver 127.0.0.53\nsearch example.org\n";
        let servers = ["1.1.1.1".to_string()];
        let dns = Dns {
            servers: &servers,
            ..Default::default()
        };
        assert_eq!(
            resolv_conf_for(host, None, dns, Loopback::Drop),
            resolv_conf(host, None, &servers)
        );
        assert_eq!(
            resolv_conf_for(host, None, Dns::default(), Loopback::Drop),
            "search example.org\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
    }

    #[test]
    fn keeping_loopback_copies_the_host_or_writes_the_config() {
        let host = "# generated\nnameserver 127.0.0.53\nsearch example.org\n";
        assert_eq!(
            resolv_conf_for(
                host,
                Some("nameserver 192.0.2.1\n"),
                Dns::default(),
                Loopback::Keep
            ),
            host
        );
        let (servers, searches, options) = (
            ["10.96.0.10".to_string(), "127.0.0.1".to_string()],
            ["svc.cluster.local".to_string(), "cluster.local".to_string()],
            ["ndots:5".to_string()],
        );
        let dns = Dns {
            servers: &servers,
            searches: &searches,
            options: &options,
        };
        assert_eq!(
            resolv_conf_for(host, None, dns, Loopback::Keep),
            "search svc.cluster.local cluster.local\nnameserver 10.96.0.10\nnameserver 127.0.0.1\noptions ndots:5\n"
        );
        let dns = Dns {
            options: &options,
            ..Default::default()
        };
        assert_eq!(
            resolv_conf_for(host, None, dns, Loopback::Keep),
            "options ndots:5\n"
        );
    }

    #[test]
    fn hosts_name_the_container() {
        let h = hosts("web", &["10.213.0.2".into()]);
        assert!(h.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(h.ends_with("10.213.0.2\tweb\n"));
        assert_eq!(hostname("my_app.1"), "my-app-1");
        assert_eq!(hostname("__"), "container");
        assert_eq!(hostname(&"a".repeat(80)).len(), 63);
    }
}
