"""``criolib spec``: generate, validate and run OCI runtime configs (like oci-runtime-tool)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from criolib._atomic import atomic_write_bytes
from criolib.runtime_spec import (
    Generator,
    InvalidSpec,
    RuntimeClient,
    RuntimeSpecError,
    apply_image_config,
    check,
    resolve_user,
    validate,
)

HELP = "generate, validate and run OCI runtime configs (config.json)"


def register(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    gen = sub.add_parser("generate", help="write a config.json with CRI-O's secure defaults")
    gen.add_argument("--output", "-o", metavar="PATH",
                     help="where to write: an existing directory, or a path ending in '/' "
                     "(created), is a bundle and gets config.json; anything else is the "
                     "file to write (its directory must exist); default: stdout")
    gen.add_argument("--privileged", action="store_true", help="CRI-O's privileged profile")
    gen.add_argument("--image-config", type=Path,
                     help="apply this OCI image config (JSON file)")
    gen.add_argument("--rootfs", type=Path,
                     help="the container's root filesystem: sets root.path (relative to "
                     "the output bundle when inside it, else absolute) and is where "
                     "the image's user is looked up")
    gen.add_argument("--user", help="user[:group] to run as (names need --rootfs)")
    gen.add_argument("--cwd", help="working directory")
    gen.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    gen.add_argument("--hostname")
    gen.add_argument("--tty", action="store_true", help="give the process a terminal")
    gen.add_argument("--read-only", action="store_true", help="read-only root filesystem")
    gen.add_argument("--cap-add", action="append", default=[], metavar="CAP")
    gen.add_argument("--cap-drop", action="append", default=[], metavar="CAP")
    gen.add_argument("--bind", action="append", default=[], metavar="SRC:DST[:ro]")
    gen.add_argument("--memory", type=int, metavar="BYTES", help="memory limit")
    gen.add_argument("--pids", type=int, metavar="N", help="pids limit")
    gen.add_argument("--sysctl", action="append", default=[], metavar="KEY=VALUE")
    gen.add_argument("args", nargs=argparse.REMAINDER, help="the command (after --)")
    gen.set_defaults(verb_handler=_generate)

    val = sub.add_parser("validate", help="check a config.json against the spec")
    val.add_argument("path", type=Path, nargs="?", default=Path("."),
                     help="config.json or a bundle directory (default: .)")
    val.add_argument("--rootfs", type=Path, help="also check paths inside this rootfs")
    val.add_argument("--host", action="store_true",
                     help="also check what this host can grant (rlimits, oomScoreAdj)")
    val.add_argument("--json", action="store_true", help="print problems as JSON")
    val.set_defaults(verb_handler=_validate)

    run = sub.add_parser("run", help="run a bundle's container to completion")
    run.add_argument("bundle", type=Path)
    run.add_argument("--runtime", default="runc", help="runc, crun or a path (default: runc)")
    run.add_argument("--id", help="container id (default: a random one)")
    run.add_argument("--root", type=Path, help="the runtime's state directory")
    run.add_argument("--systemd-cgroup", action="store_true",
                     help="use systemd's cgroup manager (default: cgroupfs)")
    run.add_argument("--log", type=Path, metavar="FILE",
                     help="keep the runtime's log (JSON lines) in FILE")
    run.add_argument("--timeout", type=float, metavar="SECONDS",
                     help="kill the container after SECONDS (default: none)")
    run.add_argument("--no-validate", action="store_true",
                     help="run even if config.json does not validate")
    run.set_defaults(verb_handler=_run)
    return lambda args: int(args.verb_handler(args))


def _generate(args: argparse.Namespace) -> int:
    gen = Generator(privileged=args.privileged)
    command = [a for a in args.args if a != "--"] if args.args else []
    if args.image_config is not None:
        try:
            image_config = json.loads(args.image_config.read_bytes())
        except (OSError, ValueError) as exc:
            raise RuntimeSpecError(f"image config {args.image_config}: {exc}") from exc
        # generate writes nothing into the rootfs: no volume or workdir directories.
        apply_image_config(gen, image_config, rootfs=args.rootfs, args=command or None,
                           user=args.user, working_dir=args.cwd, volumes="ignore",
                           create_workdir=False)
    else:
        if command:
            gen.set_args(command)
        if args.cwd:
            gen.set_cwd(args.cwd)
        if args.user:
            user = resolve_user(args.user, args.rootfs)
            gen.set_user(user.uid, user.gid, additional_gids=user.additional_gids)
    _apply_options(gen, args)
    target, bundle = _output(args.output)
    if args.rootfs is not None:
        gen.set_root(_root_path(args.rootfs, bundle))
    data = (json.dumps(gen.config(), indent=2) + "\n").encode()
    if target is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return 0
    try:
        atomic_write_bytes(target, data, mode=0o600)
    except OSError as exc:
        raise RuntimeSpecError(f"cannot write {target}: {exc.strerror or exc}") from exc
    print(f"wrote {target}", file=sys.stderr)
    return 0


def _output(output: str | None) -> tuple[Path | None, Path | None]:
    """(file to write, its bundle directory) for ``-o``; (None, None) for stdout.

    An existing directory, or a path ending in "/" (created), is a bundle that
    gets config.json; any other path is the file itself, in an existing directory.
    """
    if output is None:
        return None, None
    path = Path(output)
    if output.endswith("/") or path.is_dir():
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RuntimeSpecError(f"cannot create bundle directory {output}: "
                                   f"{exc.strerror or exc}") from exc
        return path / "config.json", path
    parent = path.parent
    if not parent.is_dir():
        raise RuntimeSpecError(
            f"cannot write {output}: directory {parent} does not exist (end the path "
            "with '/' to make it a new bundle directory)")
    return path, parent


def _root_path(rootfs: Path, bundle: Path | None) -> str:
    """root.path for ``rootfs``: relative to ``bundle`` when inside it, else absolute."""
    absolute = Path(os.path.abspath(rootfs))
    if bundle is not None:
        try:
            relative = absolute.relative_to(os.path.abspath(bundle))
        except ValueError:
            pass
        else:
            return str(relative)
    return str(absolute)


def _apply_options(gen: Generator, args: argparse.Namespace) -> None:
    for entry in args.env:
        name, _, value = entry.partition("=")
        gen.set_env(name, value)
    if args.hostname:
        gen.set_hostname(args.hostname)
    gen.set_terminal(args.tty)
    if args.read_only:
        gen.set_root_readonly()
    for cap in args.cap_add:
        gen.add_capability(cap)
    for cap in args.cap_drop:
        gen.drop_capability(cap)
    for bind in args.bind:
        parts = bind.split(":")
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
            raise RuntimeSpecError(f"--bind {bind!r}: expected SRC:DST or SRC:DST:ro")
        gen.add_bind_mount(parts[0], parts[1], readonly=len(parts) == 3 and parts[2] == "ro")
    if args.memory is not None:
        gen.set_memory_limit(args.memory)
    if args.pids is not None:
        gen.set_pids_limit(args.pids)
    for entry in args.sysctl:
        key, _, value = entry.partition("=")
        gen.set_sysctl(key, value)


def _validate(args: argparse.Namespace) -> int:
    path = args.path / "config.json" if args.path.is_dir() else args.path
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RuntimeSpecError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise RuntimeSpecError(f"{path}: not JSON: {exc}") from exc
    rootfs = args.rootfs
    if rootfs is None and isinstance(doc, dict) and isinstance(doc.get("root"), dict):
        root_path = doc["root"].get("path")
        if isinstance(root_path, str):
            candidate = path.parent / root_path
            rootfs = candidate if candidate.is_dir() else None
    problems = validate(doc, rootfs=rootfs, host=args.host)
    if args.json:
        print(json.dumps([{"path": p.path, "message": p.message, "severity": p.severity}
                          for p in problems], indent=2))
    else:
        for p in problems:
            print(f"{path}: {p.severity}: {p.path}: {p.message}")
        errors = sum(1 for p in problems if p.severity == "error")
        print(f"{path}: {errors} error(s), {len(problems) - errors} warning(s)",
              file=sys.stderr)
    return 1 if any(p.severity == "error" for p in problems) else 0


def _run(args: argparse.Namespace) -> int:
    config = args.bundle / "config.json"
    try:
        doc: Any = json.loads(config.read_bytes())
    except OSError as exc:
        raise RuntimeSpecError(f"bundle {args.bundle}: cannot read config.json: "
                               f"{exc.strerror or exc}") from exc
    except ValueError as exc:
        raise RuntimeSpecError(f"{config}: not JSON: {exc}") from exc
    if not args.no_validate:
        root = doc.get("root") if isinstance(doc, dict) else None
        root_path = root.get("path") if isinstance(root, dict) else None
        rootfs = args.bundle / root_path if isinstance(root_path, str) else None
        try:
            check(doc, rootfs=rootfs if rootfs is not None and rootfs.is_dir() else None,
                  host=True)
        except InvalidSpec as exc:
            # Every problem at once; the runtime would report only its first, if any.
            raise RuntimeSpecError(f"{config}: {exc}\nnot run; --no-validate runs it anyway"
                                   ) from exc
    client = RuntimeClient(args.runtime, root=args.root, systemd_cgroup=args.systemd_cgroup,
                           log_path=args.log)
    cid = args.id or f"criolib-{uuid.uuid4().hex[:12]}"
    with client:
        return client.run(cid, args.bundle, stdin=sys.stdin.fileno() if os.isatty(0) else None,
                          stdout=sys.stdout.fileno(), stderr=sys.stderr.fileno(),
                          timeout=args.timeout)
