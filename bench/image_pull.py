"""Pulling from a registry into containers-storage: criolib against skopeo and podman.

The test bed's large image (busybox's layer plus four gzip layers holding 300 MiB
in 20,000 files: ``build_test_images(~/.cache/criolib/testbed, large=True,
large_size=300 MiB, large_files=20000)``, built on first use) is pushed into the
distribution registry, whose storage lives on a tmpfs mounted for the run, as do
the stores (MACHINE-NOTES.md: the root ext4 measures the disk).
Each peer pulls it N times into a fresh store, interleaved (default 3,
``python bench/image_pull.py N``):

criolib
    ``copy_image(docker://…, containers-storage:[overlay@G+R]large:latest)``:
    six parallel downloads, each verified while it streams, layers applied in
    order by :class:`criolib.storage.Store` while later ones still download.
criolib-cli
    ``criolib image pull --root G --runroot R …`` as a subprocess: the same work
    plus a process start and imports, like for like with skopeo's and podman's
    process starts.
skopeo
    ``skopeo copy --src-tls-verify=false docker://… containers-storage:[overlay@G+R]large:latest``
podman
    ``podman --root G --runroot R --storage-driver overlay pull --tls-verify=false …``

Then the pull of an image already present, into the store of the last run: its
time, and the HTTP requests each tool sent (counted by a small forwarding proxy
placed in front of the registry for that one extra pull only).

Prints the median seconds and the ratios of criolib in process and of
``criolib image pull`` to skopeo and to podman.
Needs root, the registry (docker-registry), skopeo and podman.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from criolib.image import Policy, RegistriesConf, SystemContext, copy_image
from criolib.testing import build_test_images, serving_test_images

CACHE = Path.home() / ".cache" / "criolib" / "testbed"
IMAGE = "testbed/large:latest"

#: A pull of ``host``'s large image into the store at ``where`` (graph + run roots).
Puller = Callable[[str, Path], None]


@contextlib.contextmanager
def tmpfs(size: str = "4g") -> Iterator[Path]:
    where = Path(tempfile.mkdtemp(prefix="criolib-bench-pull-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                   check=True)
    try:
        yield where
    finally:
        unmount_under(where)
        subprocess.run(["umount", "-l", str(where)], check=False)
        shutil.rmtree(where, ignore_errors=True)


def unmount_under(path: Path) -> None:
    """Unmount what a store left mounted below ``path`` (deepest first), not ``path``."""
    root = str(path.resolve()).rstrip("/") + "/"
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        points = [line.split(" ")[4] for line in f]
    for point in sorted((p for p in points if p.startswith(root)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


class CountingProxy(ThreadingHTTPServer):
    """Forwards every request to ``upstream`` (host:port) as sent, and records it."""

    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _Forward)
        self.upstream = upstream
        self.requests: list[str] = []
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> CountingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


class _Forward(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: CountingProxy

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _any(self) -> None:
        self.server.requests.append(f"{self.command} {self.path.split('?')[0]}")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        conn = http.client.HTTPConnection(self.server.upstream, timeout=120)
        conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for key, value in self.headers.items():  # repeated headers stay repeated
            if key.lower() not in _HOP:
                conn.putheader(key, value)
        conn.endheaders(body)
        resp = conn.getresponse()
        self.send_response_only(resp.status, resp.reason)
        for key, value in resp.getheaders():
            if key.lower() not in _HOP:
                self.send_header(key, value)
        data = resp.read()
        if "content-length" not in {k.lower() for k, _ in resp.getheaders()}:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        conn.close()

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _any


def criolib_pull(host: str, where: Path) -> None:
    ctx = SystemContext(registries_conf=RegistriesConf.from_text(""), insecure=True)
    copy_image(f"docker://{host}/{IMAGE}",
               f"containers-storage:[overlay@{where}/graph+{where}/run]large:latest",
               policy=Policy.insecure_accept_anything(), ctx=ctx)


def criolib_cli_pull(host: str, where: Path) -> None:
    conf = where.parent / "empty-registries.conf"
    conf.write_text("")
    run_tool(sys.executable, "-m", "criolib", "image", "pull", "--quiet", "--insecure-policy",
             "--registries-conf", str(conf), "--tls-verify=false", "--root", f"{where}/graph",
             "--runroot", f"{where}/run", "--storage-driver", "overlay",
             f"docker://{host}/{IMAGE}")


def run_tool(*argv: str) -> None:
    proc = subprocess.run(argv, capture_output=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.decode()}")


def skopeo_pull(host: str, where: Path) -> None:
    run_tool("skopeo", "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false",
             f"docker://{host}/{IMAGE}",
             f"containers-storage:[overlay@{where}/graph+{where}/run]large:latest")


def podman_pull(host: str, where: Path) -> None:
    run_tool("podman", "--root", f"{where}/graph", "--runroot", f"{where}/run",
             "--storage-driver", "overlay", "pull", "--quiet", "--tls-verify=false",
             f"{host}/{IMAGE}")


PEERS: dict[str, Puller] = {"criolib": criolib_pull, "criolib-cli": criolib_cli_pull,
                            "skopeo": skopeo_pull, "podman": podman_pull}


def fresh(where: Path) -> Path:
    unmount_under(where)
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    return where


def timed(pull: Puller, host: str, where: Path) -> float:
    start = time.perf_counter()
    pull(host, where)
    return time.perf_counter() - start


def report(times: dict[str, list[float]], what: str) -> dict[str, float]:
    print(what)
    median = {name: statistics.median(t) for name, t in times.items()}
    for name, value in median.items():
        runs = ", ".join(f"{t:.3f}" for t in times[name])
        print(f"  {name:11s} {value:8.3f} s  (runs: {runs})")
    for ours in ("criolib", "criolib-cli"):
        for peer in ("skopeo", "podman"):
            print(f"  ratio {ours:11s} / {peer:6s} {median[ours] / median[peer]:6.2f}")
    return median


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    for tool in ("skopeo", "podman", "docker-registry"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed")
    logging.basicConfig(level=logging.WARNING)
    images = build_test_images(CACHE, large=True, large_size=300 << 20, large_files=20000)
    size = sum(d.size for d in images["large"].layers)
    with tmpfs() as disk:
        (disk / "registry").mkdir()
        with serving_test_images(images, names=["large"], workdir=disk / "registry") as reg:
            print(f"pulling {reg.host}/{IMAGE}: {len(images['large'].layers)} layers, "
                  f"{size / (1 << 20):.0f} MiB compressed; stores on a tmpfs; {runs} runs")
            cold: dict[str, list[float]] = {name: [] for name in PEERS}
            warm: dict[str, list[float]] = {name: [] for name in PEERS}
            requests: dict[str, list[str]] = {}
            for i in range(runs):
                for name, pull in PEERS.items():
                    where = fresh(disk / "stores" / name)
                    cold[name].append(timed(pull, reg.host, where))
                    warm[name].append(timed(pull, reg.host, where))
                    if i == runs - 1:
                        with CountingProxy(reg.host) as proxy:
                            pull(proxy.host, where)
                            requests[name] = proxy.requests
                    fresh(where)
            report(cold, "pull into an empty store:")
            report(warm, "pull of an image already present:")
            print("HTTP requests of a pull of an image already present:")
            for name, sent in requests.items():
                blobs = sum("/blobs/" in r for r in sent)
                manifests = sum("/manifests/" in r for r in sent)
                print(f"  {name:8s} {len(sent):3d} requests: {manifests} manifest, "
                      f"{blobs} blob, {len(sent) - blobs - manifests} other "
                      f"({'; '.join(sent)})")


if __name__ == "__main__":
    main()
