"""``criolib spec``: generate, validate and run OCI runtime configs (like oci-runtime-tool)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

from criolib.runtime_spec import (
    Generator,
    RuntimeClient,
    RuntimeSpecError,
    apply_image_config,
    load_spec,
    validate,
)

HELP = "generate, validate and run OCI runtime configs (config.json)"


def register(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    gen = sub.add_parser("generate", help="write a config.json with CRI-O's secure defaults")
    gen.add_argument("--output", "-o", type=Path,
                     help="file or bundle directory to write (default: stdout)")
    gen.add_argument("--privileged", action="store_true", help="CRI-O's privileged profile")
    gen.add_argument("--image-config", type=Path,
                     help="apply this OCI image config (JSON file)")
    gen.add_argument("--rootfs", type=Path,
                     help="rootfs for resolving the image's user (and root.path)")
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
        apply_image_config(gen, image_config, rootfs=args.rootfs, args=command or None,
                           user=args.user, working_dir=args.cwd, volumes="ignore")
    else:
        if command:
            gen.set_args(command)
        if args.cwd:
            gen.set_cwd(args.cwd)
        if args.user:
            from criolib.runtime_spec import resolve_user

            user = resolve_user(args.user, args.rootfs)
            gen.set_user(user.uid, user.gid, additional_gids=user.additional_gids)
    _apply_options(gen, args)
    if args.output is None:
        sys.stdout.write(json.dumps(gen.config(), indent=2) + "\n")
        return 0
    target = args.output
    if target.is_dir():
        target = gen.save(target)
    else:
        Path(target).write_text(json.dumps(gen.config(), indent=2) + "\n")
    print(f"wrote {target}", file=sys.stderr)
    return 0


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
        load_spec(config.read_bytes())
    except OSError as exc:
        raise RuntimeSpecError(f"bundle {args.bundle}: cannot read config.json: "
                               f"{exc.strerror or exc}") from exc
    client = RuntimeClient(args.runtime, root=args.root)
    cid = args.id or f"criolib-{uuid.uuid4().hex[:12]}"
    return client.run(cid, args.bundle, stdin=sys.stdin.fileno() if os.isatty(0) else None,
                      stdout=sys.stdout.fileno(), stderr=sys.stderr.fileno())
