//! Python's grpcio, with its default channel options, on both of its unix target forms: it
//! sends the percent-encoded socket path as `:authority`, which berthd must accept; and a
//! request over the size limit gets RESOURCE_EXHAUSTED, as from any gRPC server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_tests::{ok, Daemon};
use std::process::Command;

/// The venv `scripts/setup-deps.sh` makes.
const PYTHON: &str = "/opt/berth-test/grpcio/bin/python";

const SCRIPT: &str = r#"
import grpc, sys
sock = sys.argv[1]
ident = lambda b: b
for target in ["unix://" + sock, "unix:" + sock]:
    ch = grpc.insecure_channel(target)
    version = ch.unary_unary("/containerd.services.version.v1.Version/Version",
                             request_serializer=ident, response_deserializer=ident)
    reply = version(b"", timeout=10)
    assert b"v0." in reply, reply
    # ListNamespacesRequest{} -> ListNamespacesResponse{namespaces: [...]}
    ls = ch.unary_unary("/containerd.services.namespaces.v1.Namespaces/List",
                        request_serializer=ident, response_deserializer=ident)
    names = ls(b"", timeout=10)
    assert b"grpcio-ns" in names, names
    # A refused call keeps its status code through the same channel.
    images = ch.unary_unary("/containerd.services.images.v1.Images/Get",
                            request_serializer=ident, response_deserializer=ident)
    try:
        images(b"\n\x07missing", timeout=10, metadata=(("containerd-namespace", "grpcio-ns"),))
        raise SystemExit("Get of a missing image succeeded")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.NOT_FOUND, e
    print("ok", target)
# A request over berthd's 16 MiB limit: RESOURCE_EXHAUSTED, as gRPC servers answer it.
big = grpc.insecure_channel("unix://" + sock, options=[("grpc.max_send_message_length", 64 << 20)])
get = big.unary_unary("/containerd.services.images.v1.Images/Get",
                      request_serializer=ident, response_deserializer=ident)
name = b"x" * (17 << 20)
size, prefix = len(name), b""
while True:
    prefix += bytes([(size & 0x7f) | (0x80 if size >> 7 else 0)])
    size >>= 7
    if not size:
        break
try:
    get(b"\n" + prefix + name, timeout=20, metadata=(("containerd-namespace", "grpcio-ns"),))
    raise SystemExit("an oversized request succeeded")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (e.code(), e.details())
print("ok oversized")
"#;

#[test]
fn grpcio_with_default_options_on_both_unix_target_forms() {
    assert!(
        std::path::Path::new(PYTHON).exists(),
        "{PYTHON} is missing: run scripts/setup-deps.sh (it installs grpcio from PyPI)"
    );
    let d = Daemon::start().unwrap();
    ok(&d.berth(&["namespaces", "create", "grpcio-ns"], None));
    let out = Command::new(PYTHON)
        .arg("-c")
        .arg(SCRIPT)
        .arg(d.socket())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "grpcio failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("ok unix:").count(), 2, "{stdout}");
    assert!(stdout.contains("ok oversized"), "{stdout}");
}
