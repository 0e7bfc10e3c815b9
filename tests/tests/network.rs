//! Container networks: `berth run -p` reached from the host, two containers talking over a
//! bridge, `berth network create|ls|inspect|rm`, the files a networked container sees, bad
//! input, and teardown that leaves no veth, lease or rule — after an exit, and after a
//! berthd SIGKILL during which the container died.
//!
//! Conformance (STYLE rule 17): berth's own networks are joined in-process (netlink and
//! netfilter rules of berth's own), a user conflist through the CNI bridge, portmap and
//! firewall plugins; the same checks run on both side by side — the container's addresses,
//! links, routes and files, identical once addresses are named; a published port from the
//! host; a second container by address; a container reaching itself through its published
//! port (hairpin); egress masqueraded to an address in a test namespace; no veth, lease or
//! rule after exit — and `berthd cleanup` after a SIGKILL takes the in-process rules away.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_tests::{daemon_with_busybox, ok, require_tool, stderr, Daemon};
use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

const IMAGE: &str = "test.local/net:latest";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `path` from 127.0.0.1:`port`, retried for up to 10 s while the server comes up.
fn http_get(port: u16, path: &str) -> String {
    // The server in the container comes up when it does: on a loaded 2-core CI machine that
    // has taken over 10 s. The wait is for readiness, not a bound on speed.
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let got = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)).and_then(
            |mut s| {
                s.set_read_timeout(Some(Duration::from_secs(3)))?;
                write!(s, "GET {path} HTTP/1.0\r\n\r\n")?;
                let mut out = String::new();
                s.read_to_string(&mut out)?;
                Ok(out)
            },
        );
        match got {
            Ok(body) if body.contains("200 OK") => return body,
            other if Instant::now() > deadline => panic!("GET {path} on port {port}: {other:?}"),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn inspect(d: &Daemon, network: &str) -> serde_json::Value {
    let out = ok(&d.berth(&["network", "inspect", network], None));
    serde_json::from_str::<serde_json::Value>(&out).unwrap()[0].clone()
}

/// The container's first address on `network`.
fn ip_of(d: &Daemon, network: &str, id: &str) -> String {
    let n = inspect(d, network);
    let c = n["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("{id} is not on {network}: {n}"));
    c["ips"][0].as_str().unwrap().to_string()
}

/// iptables lines naming container `id` of the default namespace: in the CNI plugins' ids
/// (`default-ID-tag`) or the in-process bridge's comments (`ctr:default/ID:`).
fn rules_naming(id: &str) -> usize {
    iptables_lines(&format!("default-{id}-")) + iptables_lines(&format!("ctr:default/{id}:"))
}

fn iptables_lines(needle: &str) -> usize {
    iptables_matching(needle).len()
}

/// The host's iptables rules that hold `needle`.
fn iptables_matching(needle: &str) -> Vec<String> {
    let out = std::process::Command::new(require_tool("iptables-save"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// veths on `bridge` (the host ends of containers' interfaces).
fn ports_of(bridge: &str) -> usize {
    let out = std::process::Command::new("ip")
        .args(["-o", "link", "show", "master", bridge])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

fn leases(d: &Daemon, network: &str) -> Vec<String> {
    let dir = d.state().join("io.berth.network.v1/ipam").join(network);
    std::fs::read_dir(dir)
        .map(|e| {
            e.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                .collect()
        })
        .unwrap_or_default()
}

fn attachments(d: &Daemon) -> usize {
    std::fs::read_dir(d.state().join("io.berth.network.v1/attachments/default"))
        .map(|e| e.count())
        .unwrap_or(0)
}

/// Waits up to 10 s for `cond`.
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn bridge_of(d: &Daemon, network: &str) -> String {
    inspect(d, network)["bridge"].as_str().unwrap().to_string()
}

fn httpd(d: &Daemon, id: &str, extra: &[&str]) {
    let mut args = vec!["containers", "run", "-d"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[
        IMAGE,
        id,
        "/bin/busybox",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/etc",
    ]);
    ok(&d.berth(&args, None));
}

fn kill_and_remove(d: &Daemon, id: &str) {
    ok(&d.berth(&["tasks", "kill", "-s", "KILL", id], None));
    eventually(&format!("{id} stopped"), || {
        ok(&d.berth(&["tasks", "ls"], None))
            .lines()
            .any(|l| l.starts_with(id) && l.contains("STOPPED"))
    });
    ok(&d.berth(&["tasks", "rm", id], None));
    ok(&d.berth(&["containers", "rm", id], None));
}

#[test]
fn published_port_two_containers_and_clean_teardown() {
    require_tool("/usr/lib/cni/bridge");
    let (d, _img) = daemon_with_busybox("test.local/net");
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:80");
    httpd(&d, "web", &["-p", &publish]);

    // The host reaches the container's httpd through the published port.
    assert!(http_get(port, "/passwd").contains("root:x:0:0"));
    let net = inspect(&d, "bridge");
    assert_eq!(net["managed"], true);
    let web_ip = ip_of(&d, "bridge", "web");
    let subnet = net["subnet"].as_str().unwrap().to_string();
    assert!(
        web_ip.starts_with(subnet.rsplit_once('.').unwrap().0),
        "{web_ip} in {subnet}"
    );
    assert_eq!(net["containers"][0]["ports"][0]["host_port"], port);
    let bridge = bridge_of(&d, "bridge");
    assert_eq!(ports_of(&bridge), 1);
    assert!(rules_naming("web") > 0, "its port rules name it");
    assert!(
        iptables_lines(&format!("--dport {port} ")) > 0,
        "portmap's DNAT rule"
    );
    let listed = ok(&d.berth(&["network", "ls"], None));
    assert!(
        listed.contains("bridge") && listed.contains(&subnet),
        "{listed}"
    );

    // A second container on the same network reaches the first by address, and sees its
    // own name in /etc/hosts and the nameserver it was given.
    let out = ok(&d.berth(
        &[
            "containers", "run", "--rm", "--dns", "192.0.2.53", IMAGE, "client", "/bin/sh", "-c",
            &format!("/bin/busybox wget -qO- http://{web_ip}/group; cat /etc/hosts /etc/resolv.conf /etc/hostname"),
        ],
        None,
    ));
    assert!(out.contains("root:x:0:"), "{out}");
    assert!(out.contains("\tclient\n"), "{out}");
    assert!(out.contains("nameserver 192.0.2.53\n"), "{out}");
    assert!(out.ends_with("client\n"), "{out}");
    // --rm: its veth, lease and rules went with it.
    eventually("the client left", || ports_of(&bridge) == 1);
    assert_eq!(rules_naming("client"), 0);

    // --network none: loopback only, no attachment.
    let out = ok(&d.berth(
        &[
            "containers",
            "run",
            "--rm",
            "--network",
            "none",
            IMAGE,
            "iso",
            "cat",
            "/proc/net/dev",
        ],
        None,
    ));
    assert!(!out.contains("eth0"), "{out}");

    // Its init exits: veth, lease, rules and records go, without anyone deleting the task.
    assert_eq!(leases(&d, "bridge"), vec![web_ip.clone()]);
    ok(&d.berth(&["tasks", "kill", "-s", "KILL", "web"], None));
    eventually("web's network is gone", || attachments(&d) == 0);
    assert_eq!(ports_of(&bridge), 0);
    assert!(leases(&d, "bridge").is_empty());
    assert_eq!(rules_naming("web"), 0);
    assert_eq!(
        iptables_lines(&format!("{web_ip}:80")),
        0,
        "a DNAT rule to it is left"
    );
    assert_eq!(
        iptables_lines(&format!("--dport {port} ")),
        0,
        "its host port is still mapped"
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());

    ok(&d.berth(&["tasks", "rm", "web"], None));
    ok(&d.berth(&["containers", "rm", "web"], None));
}

#[test]
fn user_networks_and_bad_input() {
    require_tool("/usr/lib/cni/bridge");
    let (d, _img) = daemon_with_busybox("test.local/net");
    let third = 100 + std::process::id() % 100;
    let subnet = format!("10.214.{third}.0/24");
    ok(&d.berth(
        &[
            "network", "create", "backend", "--subnet", &subnet, "-l", "tier=db",
        ],
        None,
    ));
    let n = inspect(&d, "backend");
    assert_eq!(n["subnet"], subnet.as_str());
    assert_eq!(n["gateway"], format!("10.214.{third}.1").as_str());
    assert_eq!(n["labels"]["tier"], "db");
    let bridge = n["bridge"].as_str().unwrap().to_string();
    assert!(bridge.starts_with("br-"), "{bridge}");

    // Refused: the same name, an overlapping subnet, reserved or malformed names and subnets,
    // a label past the size every record keeps to.
    let big_label = format!("k={}", "v".repeat(5000));
    for (args, says) in [
        (vec!["backend"], "exists"),
        (vec!["other", "--subnet", &subnet], "overlaps"),
        (vec!["host"], "network name"),
        (vec!["../x"], "network name"),
        (vec!["x1", "--subnet", "10.214.0.5/24"], "host bits"),
        (vec!["x2", "--subnet", "nonsense"], "IPv4 prefix"),
        (
            vec!["x3", "--subnet", "10.215.0.0/24", "--gateway", "10.9.9.9"],
            "not a host address",
        ),
        (vec!["x4", "-l", &big_label], "exceed"),
    ] {
        let mut a = vec!["network", "create"];
        a.extend(args.iter().copied());
        let out = d.berth(&a, None);
        assert!(!out.status.success(), "{a:?} succeeded");
        assert!(stderr(&out).contains(says), "{a:?}: {}", stderr(&out));
    }

    httpd(&d, "db", &["--network", "backend"]);
    let db_ip = ip_of(&d, "backend", "db");
    assert!(db_ip.starts_with(&format!("10.214.{third}.")), "{db_ip}");
    let out = ok(&d.berth(
        &[
            "containers",
            "run",
            "--rm",
            "--network",
            "backend",
            IMAGE,
            "app",
            "/bin/busybox",
            "wget",
            "-qO-",
            &format!("http://{db_ip}/passwd"),
        ],
        None,
    ));
    assert!(out.contains("root:x:0:0"), "{out}");

    // In use: not removable.
    let out = d.berth(&["network", "rm", "backend"], None);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("in use by container db"),
        "{}",
        stderr(&out)
    );

    // Bad run flags fail before anything is made; an unknown network leaves nothing behind.
    for (args, says) in [
        (vec!["--network", "nosuch"], "does not exist"),
        (vec!["-p", "80"], "HOST_PORT:CONTAINER_PORT"),
        (vec!["-p", "70000:80"], "not a port"),
        (
            vec!["--network", "none", "-p", "8080:80"],
            "needs a network",
        ),
        (vec!["--dns", "not-an-ip"], "not an IP address"),
    ] {
        let mut a = vec!["containers", "run", "--rm"];
        a.extend(args.iter().copied());
        a.extend([IMAGE, "bad", "/bin/true"]);
        let out = d.berth(&a, None);
        assert!(!out.status.success(), "{a:?} succeeded");
        assert!(stderr(&out).contains(says), "{a:?}: {}", stderr(&out));
    }
    let listed = ok(&d.berth(&["containers", "ls", "-q"], None));
    assert_eq!(listed.trim(), "db");

    kill_and_remove(&d, "db");
    ok(&d.berth(&["network", "rm", "backend"], None));
    let out = std::process::Command::new("ip")
        .args(["link", "show", &bridge])
        .output()
        .unwrap();
    assert!(!out.status.success(), "bridge {bridge} is still there");
    let out = d.berth(&["network", "inspect", "backend"], None);
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
}

#[test]
fn a_container_that_dies_while_berthd_is_down_leaves_nothing() {
    require_tool("/usr/lib/cni/bridge");
    let (mut d, _img) = daemon_with_busybox("test.local/net");
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:80");
    httpd(&d, "dies", &[]);
    httpd(&d, "lives", &["-p", &publish]);
    let dies_ip = ip_of(&d, "bridge", "dies");
    let bridge = bridge_of(&d, "bridge");
    assert_eq!(ports_of(&bridge), 2);
    let pid: i32 = ok(&d.berth(&["tasks", "ls"], None))
        .lines()
        .find(|l| l.starts_with("dies "))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();

    d.kill().unwrap();
    // SAFETY: SIGKILL to the container's init, a process this test's daemon started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    std::thread::sleep(Duration::from_millis(300));
    d.restart().unwrap();

    eventually("the dead container's network is gone", || {
        attachments(&d) == 1 && ports_of(&bridge) == 1
    });
    assert_eq!(leases(&d, "bridge").len(), 1);
    assert!(!leases(&d, "bridge").contains(&dies_ip));
    assert_eq!(rules_naming("dies"), 0);
    assert_eq!(iptables_lines(&format!("{dies_ip}/32")), 0);
    // The one that lived through the restart keeps its network and published port.
    assert!(http_get(port, "/group").contains("root:x:0:"));
    kill_and_remove(&d, "lives");
    ok(&d.berth(&["tasks", "rm", "dies"], None));
    ok(&d.berth(&["containers", "rm", "dies"], None));
    assert_eq!(attachments(&d), 0);
    assert_eq!(rules_naming("lives"), 0);
}

struct Net {
    name: String,
    subnet_prefix: String,
    gateway: String,
    bridge: String,
}

/// The test's own addresses: a third octet and a /30 no other run of it uses at once.
fn slot() -> u32 {
    std::process::id() % 60
}

/// A network berth defines: joined in-process.
fn own_network(d: &Daemon) -> Net {
    let third = 100 + slot();
    let name = format!("own{}", std::process::id());
    ok(&d.berth(
        &[
            "network",
            "create",
            &name,
            "--subnet",
            &format!("10.216.{third}.0/24"),
        ],
        None,
    ));
    let v: serde_json::Value =
        serde_json::from_str(&ok(&d.berth(&["network", "inspect", &name], None))).unwrap();
    Net {
        name,
        subnet_prefix: format!("10.216.{third}."),
        gateway: format!("10.216.{third}.1"),
        bridge: v[0]["bridge"].as_str().unwrap().to_string(),
    }
}

/// The same network as a conflist berth did not write: joined through the CNI plugins.
fn plugin_network(d: &Daemon) -> Net {
    let third = 100 + slot();
    let name = format!("cni{}", std::process::id());
    let bridge = format!("bcni{}", std::process::id() % 100_000);
    let conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {
                "type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": format!("10.217.{third}.0/24"), "gateway": format!("10.217.{third}.1")}]],
                    "routes": [{"dst": "0.0.0.0/0"}]
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "firewall"}
        ]
    });
    let dir = d.root().join("io.berth.network.v1/net.d");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("{name}.conflist")),
        serde_json::to_vec_pretty(&conf).unwrap(),
    )
    .unwrap();
    Net {
        name,
        subnet_prefix: format!("10.217.{third}."),
        gateway: format!("10.217.{third}.1"),
        bridge,
    }
}

/// A namespace standing for the world beyond the host: a veth pair, the host end
/// `.1/30`, the far end `.2/30` serving HTTP and logging who asked.
struct Outside {
    ns: String,
    host_link: String,
    far: String,
    near: String,
    log: std::path::PathBuf,
    server: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Outside {
    fn start() -> Outside {
        let (ns, host_link) = (
            format!("bt-out-{}", std::process::id()),
            format!("bto{}", std::process::id() % 100_000),
        );
        let base = slot() * 4;
        let (near, far) = (
            format!("198.51.100.{}", base + 1),
            format!("198.51.100.{}", base + 2),
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hello"), "from outside\n").unwrap();
        let run = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().unwrap();
            assert!(out.status.success(), "ip {args:?}: {out:?}");
        };
        run(&["netns", "add", &ns]);
        run(&[
            "link", "add", &host_link, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        run(&["addr", "add", &format!("{near}/30"), "dev", &host_link]);
        run(&["link", "set", &host_link, "up"]);
        run(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{far}/30"),
            "dev",
            "eth0",
        ]);
        run(&["-n", &ns, "link", "set", "eth0", "up"]);
        run(&["-n", &ns, "link", "set", "lo", "up"]);
        let log = dir.path().join("httpd.log");
        let server = Command::new("ip")
            .args(["netns", "exec", &ns, "/bin/busybox", "httpd", "-f", "-vv"])
            .args(["-p", &format!("{far}:8000"), "-h"])
            .arg(dir.path())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Outside {
            ns,
            host_link,
            far,
            near,
            log,
            server,
            _dir: dir,
        }
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = Command::new("ip")
            .args(["link", "delete", &self.host_link])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.ns])
            .status();
    }
}

/// What a container on the network sees of it, with the addresses named rather than given.
fn view(d: &Daemon, net: &Net, id: &str, server_ip: &str, port: u16, out: &Outside) -> String {
    let script = format!(
        "b=/bin/busybox; $b ip -4 -o addr show | $b sed 's/ valid_lft.*//'; $b ip -4 route show; \
         $b ip -o link show | $b awk '{{print $2, $3, $4, $5}}' | $b sed 's/@if[0-9]*//'; \
         cat /etc/hosts /etc/resolv.conf /etc/hostname; \
         echo peer: $($b timeout 10 $b wget -qO- http://{server_ip}/passwd | $b head -1); \
         echo published: $($b timeout 10 $b wget -qO- http://{gw}:{port}/group | $b head -1); \
         echo outside: $($b timeout 10 $b wget -qO- http://{far}:8000/hello)",
        gw = net.gateway,
        far = out.far,
    );
    let text = ok(&d.berth(
        &[
            "containers",
            "run",
            "--rm",
            "--network",
            &net.name,
            "--dns",
            "192.0.2.53",
            IMAGE,
            id,
            "/bin/sh",
            "-c",
            &script,
        ],
        None,
    ));
    let own = text
        .lines()
        .find_map(|l| l.split_whitespace().skip_while(|w| *w != "inet").nth(1))
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("no address in {text}"))
        .to_string();
    // The broadcast address first: it begins as a host address of the subnet does.
    text.replace(&format!("{}255", net.subnet_prefix), "<NET>.255")
        .replace(&own, "<SELF>")
        .replace(server_ip, "<PEER>")
        .replace(&net.gateway, "<GW>")
        .replace(&net.subnet_prefix, "<NET>.")
}

/// The same checks on one network; returns what its containers saw.
fn exercise(d: &Daemon, net: &Net, out: &Outside) -> String {
    let (local_port, any_port) = (free_port(), free_port());
    let srv = format!("srv-{}", net.name);
    let (local, any) = (
        format!("127.0.0.1:{local_port}:80"),
        format!("{any_port}:80"),
    );
    httpd(d, &srv, &["--network", &net.name, "-p", &local, "-p", &any]);
    let server_ip = ip_of(d, &net.name, &srv);
    assert!(server_ip.starts_with(&net.subnet_prefix), "{server_ip}");
    assert_eq!(ports_of(&net.bridge), 1, "{}", net.name);
    assert_eq!(leases(d, &net.name).len(), 1);

    // The host reaches the published port; the server reaches itself through it (hairpin).
    let got = std::panic::catch_unwind(|| http_get(local_port, "/passwd"));
    let got = got.unwrap_or_else(|_| {
        let rules = iptables_matching(&format!("{local_port}"));
        panic!(
            "{}: no answer from {server_ip} through port {local_port}: {rules:#?}",
            net.name
        )
    });
    assert!(got.contains("root:x:0:0"));
    let hairpin = ok(&d.berth(
        &[
            "tasks",
            "exec",
            &srv,
            "/bin/busybox",
            "timeout",
            "10",
            "/bin/busybox",
            "wget",
            "-qO-",
            &format!("http://{}:{any_port}/group", net.gateway),
        ],
        None,
    ));
    assert!(hairpin.contains("root:x:0:"), "{}: {hairpin}", net.name);

    let seen = view(d, net, "cli", &server_ip, any_port, out);
    assert!(seen.contains("peer: root:x:0:0"), "{seen}");
    assert!(seen.contains("published: root:x:0:"), "{seen}");
    assert!(seen.contains("outside: from outside"), "{seen}");
    // The world beyond saw the host's address, not the container's: masqueraded.
    let log = std::fs::read_to_string(&out.log).unwrap();
    let last = log
        .lines()
        .rfind(|l| l.contains("/hello"))
        .unwrap_or_default()
        .to_string();
    assert!(last.contains(&out.near), "{}: {log}", net.name);
    assert!(!log.contains(&net.subnet_prefix), "{}: {log}", net.name);

    // Its init exits: veth, lease and every rule naming it go.
    ok(&d.berth(&["tasks", "kill", "-s", "KILL", &srv], None));
    eventually("the server's network is gone", || {
        ports_of(&net.bridge) == 0 && leases(d, &net.name).is_empty()
    });
    assert_eq!(
        iptables_lines(&format!("{server_ip}/32")),
        0,
        "{}",
        net.name
    );
    assert_eq!(
        iptables_lines(&format!("{server_ip}:80")),
        0,
        "{}",
        net.name
    );
    // Waited for a little: twice in CI a rule of the port was still there when the veth and
    // lease had gone (its text is printed if that happens again).
    for p in [local_port, any_port] {
        let needle = format!("--dport {p} ");
        let deadline = Instant::now() + Duration::from_secs(2);
        while !iptables_matching(&needle).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(
            iptables_matching(&needle),
            Vec::<String>::new(),
            "{}",
            net.name
        );
    }
    ok(&d.berth(&["tasks", "rm", &srv], None));
    ok(&d.berth(&["containers", "rm", &srv], None));
    seen
}

#[test]
fn in_process_bridge_behaves_as_the_cni_plugins() {
    require_tool("/usr/lib/cni/bridge");
    let (d, _img) = daemon_with_busybox("test.local/net");
    let out = Outside::start();
    let own = own_network(&d);
    let plugins = plugin_network(&d);
    // The conflist's bridge is not berth's: the test removes it, whether it passes or not (one
    // left behind keeps its subnet's route, and a later run on the same slot reaches nothing).
    struct BridgeGone(String);
    impl Drop for BridgeGone {
        fn drop(&mut self) {
            let _ = Command::new("ip")
                .args(["link", "delete", &self.0])
                .status();
        }
    }
    let _bridge = BridgeGone(plugins.bridge.clone());
    let by_plugins = exercise(&d, &plugins, &out);
    let in_process = exercise(&d, &own, &out);
    assert_eq!(in_process, by_plugins, "what a container sees differs");
    // The record says which path joined; a user conflist is never joined in-process.
    ok(&d.berth(&["network", "rm", &own.name], None));
    assert!(
        !std::path::Path::new("/sys/class/net")
            .join(&own.bridge)
            .exists(),
        "bridge {} is still there",
        own.bridge
    );
    assert_eq!(iptables_lines(&format!("net:{}:", own.name)), 0);
}

#[test]
fn cleanup_takes_the_in_process_rules_away() {
    require_tool("/usr/lib/cni/bridge");
    let (mut d, _img) = daemon_with_busybox("test.local/net");
    let port = free_port();
    httpd(&d, "conf-left", &["-p", &format!("127.0.0.1:{port}:80")]);
    assert!(http_get(port, "/passwd").contains("root:x:0:0"));
    let ip = ip_of(&d, "bridge", "conf-left");
    assert!(iptables_lines(&format!("{ip}:80")) > 0, "the DNAT rule");
    d.kill().unwrap();
    let report = ok(&d.cleanup());
    assert!(report.contains("removed bridge"), "{report}");
    assert_eq!(iptables_lines(&format!("{ip}:80")), 0, "{report}");
    assert_eq!(iptables_lines(&format!("--dport {port} ")), 0, "{report}");
    let tag = {
        let dir = d.state().join("io.berth.network.v1");
        berth_tests::sha256(dir.as_os_str().as_encoded_bytes())["sha256:".len()..][..8].to_string()
    };
    assert_eq!(iptables_lines(&format!("berth:{tag}:")), 0, "{report}");
}

#[test]
fn a_network_made_again_replaces_the_rules_of_the_one_before() {
    require_tool("/usr/lib/cni/bridge");
    let (mut d, _img) = daemon_with_busybox("test.local/net");
    // A container on the default network; the network's subnet, masqueraded.
    let run_one = |d: &Daemon, id: &str| {
        ok(&d.berth(&["containers", "run", "--rm", IMAGE, id, "/bin/true"], None));
        let subnet = inspect(d, "bridge")["subnet"].as_str().unwrap().to_string();
        assert!(
            iptables_lines(&format!("-s {subnet} ")) > 0,
            "its masquerade"
        );
        subnet
    };
    let before = run_one(&d, "first");
    // The root's networks go while berthd is down (the state stays): the default network
    // is made again on first use, on another bridge and subnet.
    d.kill().unwrap();
    std::fs::remove_file(d.root().join("io.berth.network.v1/net.d/bridge.conflist")).unwrap();
    d.restart().unwrap();
    let after = run_one(&d, "second");
    assert_ne!(after, before);
    assert_eq!(
        iptables_lines(&format!("-s {before} ")),
        0,
        "the rules of the network before"
    );
}

/// A `--rm` container `id` on the default network: its eth0's IPv4 addresses as `ip -o` shows them.
fn eth0_of_a_run(d: &Daemon, id: &str) -> String {
    let cmd = ["/bin/busybox", "ip", "-4", "-o", "addr", "show", "eth0"];
    let mut args = vec!["containers", "run", "--rm", IMAGE, id];
    args.extend(cmd);
    ok(&d.berth(&args, None))
}

/// A bridge some other owner made on the host, deleted when the test ends.
struct ForeignBridge(String);

impl ForeignBridge {
    fn make(name: &str, gateway: &str, len: &str) -> ForeignBridge {
        let out = Command::new("ip")
            .args(["link", "add", name, "type", "bridge"])
            .output()
            .unwrap();
        assert!(out.status.success(), "ip link add {name}: {}", stderr(&out));
        let b = ForeignBridge(name.to_string());
        let addr = format!("{gateway}/{len}");
        for args in [
            &["link", "set", name, "alias", "berth:someone-else"][..],
            &["addr", "add", &addr, "dev", name][..],
            &["link", "set", name, "up"][..],
        ] {
            let out = Command::new("ip").args(args).output().unwrap();
            assert!(out.status.success(), "ip {args:?}: {}", stderr(&out));
        }
        b
    }

    fn alias(&self) -> String {
        std::fs::read_to_string(format!("/sys/class/net/{}/ifalias", self.0))
            .unwrap_or_default()
            .trim()
            .to_string()
    }
}

/// The lock every berthd on the host takes to choose a subnet and a bridge.
struct HostLock {
    _held: std::fs::File,
}

impl HostLock {
    fn take() -> HostLock {
        use std::os::fd::AsRawFd;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open("/run/berth-networks.lock")
            .unwrap();
        // SAFETY: flock on a descriptor this function owns; released when it closes.
        assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) }, 0);
        HostLock { _held: f }
    }
}

impl Drop for ForeignBridge {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "delete", &self.0])
            .output();
    }
}

#[test]
fn a_network_whose_bridge_and_subnet_another_took_moves_to_free_ones() {
    require_tool("/usr/lib/cni/bridge");
    let (mut d, _img) = daemon_with_busybox("test.local/net");
    eth0_of_a_run(&d, "first");
    let before = inspect(&d, "bridge");
    let bridge = before["bridge"].as_str().unwrap().to_string();
    let subnet = before["subnet"].as_str().unwrap().to_string();
    let gateway = before["gateway"].as_str().unwrap().to_string();
    // A reboot: berthd and what it put on the host are gone; its root stays. Meanwhile
    // another owner's bridge took the name, the gateway and so the subnet. Under the host's
    // network lock, so that no other test's daemon claims the name first.
    d.kill().unwrap();
    let len = subnet.split('/').nth(1).unwrap();
    let foreign = {
        let _lock = HostLock::take();
        ok(&d.cleanup());
        ForeignBridge::make(&bridge, &gateway, len)
    };
    std::fs::remove_dir_all(d.state()).unwrap();
    d.restart().unwrap();
    let addr = eth0_of_a_run(&d, "second");
    let after = inspect(&d, "bridge");
    let (new_bridge, new_subnet) = (
        after["bridge"].as_str().unwrap(),
        after["subnet"].as_str().unwrap(),
    );
    assert_ne!(new_bridge, bridge, "{after}");
    assert_ne!(new_subnet, subnet, "{after}");
    let prefix = new_subnet.rsplit_once('.').unwrap().0;
    assert!(
        addr.contains(&format!("inet {prefix}.")),
        "{addr} not in {after}"
    );
    // The other's bridge is untouched and has no port of ours; ours carries our alias.
    assert_eq!(foreign.alias(), "berth:someone-else");
    assert_eq!(ports_of(&bridge), 0);
    let ours = std::fs::read_to_string(format!("/sys/class/net/{new_bridge}/ifalias")).unwrap();
    assert!(ours.trim().starts_with("berth:"), "{ours}");
    assert_ne!(ours.trim(), "berth:someone-else");
    let link = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", &bridge])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&link.stdout).contains(&format!("{gateway}/{len}")),
        "{}",
        String::from_utf8_lossy(&link.stdout)
    );
}

#[test]
fn a_bridge_deleted_while_berthd_runs_is_made_again_for_the_next_container() {
    require_tool("/usr/lib/cni/bridge");
    let (d, _img) = daemon_with_busybox("test.local/net");
    eth0_of_a_run(&d, "before");
    let bridge = bridge_of(&d, "bridge");
    let alias = std::fs::read_to_string(format!("/sys/class/net/{bridge}/ifalias")).unwrap();
    let out = Command::new("ip")
        .args(["link", "delete", &bridge])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // Made again (or, had another test's daemon claimed the name meanwhile, moved): the
    // network's bridge is there with this daemon's alias, and the container is on it.
    let addr = eth0_of_a_run(&d, "after");
    let now = inspect(&d, "bridge");
    let (bridge, subnet) = (
        now["bridge"].as_str().unwrap(),
        now["subnet"].as_str().unwrap(),
    );
    let again = std::fs::read_to_string(format!("/sys/class/net/{bridge}/ifalias")).unwrap();
    assert_eq!(again, alias);
    let prefix = subnet.rsplit_once('.').unwrap().0;
    assert!(addr.contains(&format!("inet {prefix}.")), "{addr}");
    assert!(
        iptables_lines(&format!("-s {subnet} ")) > 0,
        "its masquerade"
    );
}

/// berth's own network is left in two steps: the published port's rules go before the task's
/// deletion returns, the veth (whose deletion waits for an RCU grace period), lease and record
/// in the background. Right after `run --rm` returns, no rule names the container and the
/// network lists it no more; `network rm` at once waits for the rest and leaves nothing.
#[test]
fn a_container_leaves_its_network_in_the_background_its_ports_first() {
    require_tool("/usr/lib/cni/bridge");
    let (d, _img) = daemon_with_busybox("test.local/net");
    ok(&d.berth(&["network", "create", "quick"], None));
    let bridge = bridge_of(&d, "quick");
    let publish = format!("127.0.0.1:{}:80", free_port());
    let run = [
        "containers",
        "run",
        "--rm",
        "--network",
        "quick",
        "-p",
        &publish,
    ];
    let run_one = |id| {
        let args: Vec<&str> = run
            .iter()
            .copied()
            .chain([IMAGE, id, "/bin/true"])
            .collect();
        ok(&d.berth(&args, None));
    };
    run_one("q1");
    assert_eq!(rules_naming("q1"), 0, "q1's port rules outlived its task");
    assert_eq!(inspect(&d, "quick")["containers"], serde_json::json!([]));
    run_one("q2");
    ok(&d.berth(&["network", "rm", "quick"], None));
    assert_eq!(rules_naming("q2"), 0, "q2's port rules outlived its task");
    assert_eq!(
        attachments(&d),
        0,
        "an attachment record outlived network rm"
    );
    assert_eq!(leases(&d, "quick"), Vec::<String>::new());
    let link = Command::new("ip")
        .args(["link", "show", &bridge])
        .output()
        .unwrap();
    assert!(
        !link.status.success(),
        "bridge {bridge} outlived network rm"
    );
}
