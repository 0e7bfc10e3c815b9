#!/usr/bin/env bash
# berth's main job: start berthd on its default root, state and socket (if it is not
# running already), import an OCI image (made here from Debian's static busybox), run
# containers from it, push it to a docker-registry on loopback and pull it back (berthd
# talks to the registry itself), and run it again.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release
SOCK=/run/berth/berth.sock

if ! "$BIN/berth" version >/dev/null 2>&1; then
  echo "demo: starting berthd (log: /run/berth/berthd.log)"
  mkdir -p /run/berth
  nohup "$BIN/berthd" >/run/berth/berthd.log 2>&1 &
  for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
fi
"$BIN/berth" version

# A one-layer OCI image archive, made here from scratch.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/rootfs/etc" "$work/rootfs/bin" "$work/rootfs/proc" "$work/rootfs/sys" "$work/rootfs/dev" "$work/rootfs/tmp" "$work/oci/blobs/sha256"
echo "hello from berth" > "$work/rootfs/etc/motd"
echo "root:x:0:0:root:/root:/bin/sh" > "$work/rootfs/etc/passwd"
echo "root:x:0:" > "$work/rootfs/etc/group"
cp /bin/busybox "$work/rootfs/bin/busybox"
for a in sh cat echo ls id hostname uname; do ln -s busybox "$work/rootfs/bin/$a"; done
tar --sort=name --mtime=@0 --owner=0 --group=0 -C "$work/rootfs" -cf - . | gzip -n > "$work/layer.tgz"
blob() { # file media-type -> stores it, prints a descriptor
  local d s; d=$(sha256sum "$1" | cut -d' ' -f1); s=$(stat -c %s "$1")
  cp "$1" "$work/oci/blobs/sha256/$d"
  printf '{"mediaType":"%s","digest":"sha256:%s","size":%d}' "$2" "$d" "$s"
}
diff_id=$(gunzip -c "$work/layer.tgz" | sha256sum | cut -d' ' -f1)
layer=$(blob "$work/layer.tgz" application/vnd.oci.image.layer.v1.tar+gzip)
printf '{"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/cat","/etc/motd"],"Env":["PATH=/bin"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$diff_id" > "$work/config.json"
config=$(blob "$work/config.json" application/vnd.oci.image.config.v1+json)
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":%s,"layers":[%s]}' "$config" "$layer" > "$work/manifest.json"
manifest=$(blob "$work/manifest.json" application/vnd.oci.image.manifest.v1+json)
manifest=${manifest%\}}
printf '{"schemaVersion":2,"manifests":[%s,"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}' "$manifest" > "$work/oci/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' > "$work/oci/oci-layout"
tar -C "$work/oci" -cf "$work/hello.tar" oci-layout index.json blobs

echo
echo "== berth images import (the archive's blobs into berthd's content store, then unpacked)"
"$BIN/berth" images import --base-name demo.local/hello "$work/hello.tar"
echo
echo "== berth images ls"
"$BIN/berth" images ls
echo
echo "== berth snapshots tree"
"$BIN/berth" snapshots tree
echo
echo "== berth run --rm demo.local/hello:latest (the image's own command)"
"$BIN/berth" run --rm demo.local/hello:latest
echo
echo "== berth run --rm --hostname demo-sh ... /bin/sh -c 'id; hostname; uname -r; exit 3'"
set +e
"$BIN/berth" run --rm --hostname demo-sh demo.local/hello:latest /bin/sh -c 'id; hostname; uname -r; exit 3'
echo "exit code: $?"
set -e

echo
echo "== berth run -d --name demo-web -p 127.0.0.1:PORT:80 (busybox httpd on the default bridge network), reached from here"
web=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN/berth" rm -f demo-web >/dev/null 2>&1 || true
"$BIN/berth" run -d --name demo-web -p "127.0.0.1:$web:80" demo.local/hello:latest /bin/busybox httpd -f -p 80 -h /etc
"$BIN/berth" ps
python3 - "$web" <<'PY'
import sys, time, urllib.request
for _ in range(50):
    try:
        print("GET /motd ->", urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/motd", timeout=2).read().decode().strip())
        break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit("the published port never answered")
PY
"$BIN/berth" network ls
"$BIN/berth" rm -f demo-web

echo
echo "== a docker-registry on loopback; berth images push, rm, pull (server-side), run"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' "$work/registry" "$port" > "$work/registry.yml"
docker-registry serve "$work/registry.yml" >/dev/null 2>&1 &
reg_pid=$!
trap 'kill $reg_pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
remote="127.0.0.1:$port/demo/hello:v1"
"$BIN/berth" images push --plain-http demo.local/hello:latest "$remote"
"$BIN/berth" images rm "$remote" >/dev/null 2>&1 || true
"$BIN/berth" images pull --plain-http "$remote"
"$BIN/berth" run --rm "$remote" /bin/echo "pulled from $remote and running"
echo
echo "demo: berthd keeps running; stop it with: kill \$(cat /var/lib/berth/berthd.lock)"
