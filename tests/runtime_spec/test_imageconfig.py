"""Applying an OCI image config: command, env, cwd, user from /etc/passwd, volumes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from criolib.runtime_spec import (
    STOP_SIGNAL_ANNOTATION,
    Generator,
    ImageConfigError,
    UnknownUser,
    apply_image_config,
    normalize_stop_signal,
    resolve_user,
)
from criolib.testing import GROUP, PASSWD

IMAGE = {
    "architecture": "amd64",
    "os": "linux",
    "config": {
        "User": "",
        "Env": ["PATH=/usr/bin:/bin", "GREETING=hello", "EMPTY="],
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": ["echo $GREETING"],
        "WorkingDir": "/data",
        "Volumes": {"/data/volume": {}, "/cache": {}},
        "ExposedPorts": {"8080/tcp": {}},
        "StopSignal": "SIGQUIT",
        "Labels": {"org.example.label": "x"},
    },
    "rootfs": {"type": "layers", "diff_ids": []},
}


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_bytes(PASSWD)
    (root / "etc" / "group").write_bytes(GROUP)
    return root


def test_image_config_fills_the_process(rootfs: Path) -> None:
    g = Generator()
    settings = apply_image_config(g, IMAGE, rootfs=rootfs)
    proc = g.config()["process"]
    assert proc["args"] == ["/bin/sh", "-c", "echo $GREETING"]
    env = g.env()
    assert env["PATH"] == "/usr/bin:/bin"  # the image's PATH replaces the default
    assert env["GREETING"] == "hello" and env["EMPTY"] == ""
    assert env["HOME"] == "/root"
    assert proc["cwd"] == "/data"
    assert proc["user"] == {"uid": 0, "gid": 0}
    annotations = g.config()["annotations"]
    assert annotations[STOP_SIGNAL_ANNOTATION] == "SIGQUIT"
    assert annotations["org.example.label"] == "x"
    assert settings.stop_signal == "SIGQUIT"
    assert settings.volumes == ("/cache", "/data/volume")
    assert (rootfs / "data" / "volume").is_dir() and (rootfs / "cache").is_dir()
    assert settings.exposed_ports == ("8080/tcp",)


@pytest.mark.parametrize("command, args, expected", [
    (None, None, ["/bin/sh", "-c", "echo $GREETING"]),
    (None, ["date"], ["/bin/sh", "-c", "date"]),
    (["/bin/echo"], None, ["/bin/echo"]),
    (["/bin/echo"], ["a", "b"], ["/bin/echo", "a", "b"]),
])
def test_cri_command_and_args_override_entrypoint_and_cmd(
    command: list[str] | None, args: list[str] | None, expected: list[str]
) -> None:
    g = Generator()
    apply_image_config(g, IMAGE, command=command, args=args, volumes="ignore")
    assert g.config()["process"]["args"] == expected


def test_cri_env_and_working_dir_win() -> None:
    g = Generator()
    apply_image_config(g, IMAGE, env={"GREETING": "bye", "NEW": "1"}, working_dir="/tmp",
                       volumes="ignore")
    assert g.env()["GREETING"] == "bye" and g.env()["NEW"] == "1"
    assert g.config()["process"]["cwd"] == "/tmp"
    g2 = Generator()
    apply_image_config(g2, IMAGE, env=["GREETING=list-form"], volumes="ignore")
    assert g2.env()["GREETING"] == "list-form"


@pytest.mark.parametrize("spec, uid, gid, extra, home", [
    ("", 0, 0, (), "/root"),
    ("tester", 1000, 1000, (10, 29), "/home/tester"),
    ("1000", 1000, 1000, (10, 29), "/home/tester"),
    ("tester:audio", 1000, 29, (), "/home/tester"),
    ("tester:5", 1000, 5, (), "/home/tester"),
    ("4242", 4242, 0, (), None),
    ("4242:4243", 4242, 4243, (), None),
    ("nobody", 65534, 65534, (), "/nonexistent"),
])
def test_user_resolution(rootfs: Path, spec: str, uid: int, gid: int,
                         extra: tuple[int, ...], home: str | None) -> None:
    user = resolve_user(spec, rootfs)
    assert (user.uid, user.gid, user.additional_gids, user.home) == (uid, gid, extra, home)


def test_user_applied_to_the_spec(rootfs: Path) -> None:
    g = Generator()
    apply_image_config(g, {"config": {**IMAGE["config"], "User": "tester"}}, rootfs=rootfs)  # type: ignore[dict-item]
    assert g.config()["process"]["user"] == {"uid": 1000, "gid": 1000,
                                             "additionalGids": [10, 29]}
    assert g.env()["HOME"] == "/home/tester"


def test_unknown_user_and_group_are_clear_errors(rootfs: Path) -> None:
    with pytest.raises(UnknownUser, match=r"image user 'ghost' not found in .*/etc/passwd"):
        resolve_user("ghost", rootfs)
    with pytest.raises(UnknownUser, match="image group 'ghosts' not found"):
        resolve_user("tester:ghosts", rootfs)
    with pytest.raises(UnknownUser, match="no rootfs"):
        resolve_user("tester", None)
    with pytest.raises(ImageConfigError, match="out of range"):
        resolve_user("99999999999", rootfs)


def test_passwd_is_read_inside_the_rootfs_only(tmp_path: Path) -> None:
    """A hostile image whose /etc is a symlink to the host's /etc reads its own tree."""
    root = tmp_path / "hostile"
    root.mkdir()
    os.symlink("/", root / "etc")  # resolves to the rootfs's own /, never the host's
    (root / "passwd").write_text("evil:x:4321:4321::/evil:/bin/sh\n")
    assert resolve_user("evil", root).uid == 4321
    with pytest.raises(UnknownUser):
        resolve_user("root:root", root)  # host's /etc/group is never read
    looped = tmp_path / "looped"
    looped.mkdir()
    os.symlink("/etc", looped / "etc")
    with pytest.raises(ImageConfigError, match="too many levels of symbolic links"):
        resolve_user("tester", looped)
    vol_root = tmp_path / "vols"
    (vol_root).mkdir()
    os.symlink("/", vol_root / "escape")
    g = Generator()
    apply_image_config(g, {"config": {"Cmd": ["true"], "Volumes": {"/escape/criolib-x": {}}}},
                       rootfs=vol_root)
    assert (vol_root / "criolib-x").is_dir()
    assert not Path("/criolib-x").exists()


def test_no_command_is_a_clear_error() -> None:
    with pytest.raises(ImageConfigError, match="no command"):
        apply_image_config(Generator(), {"config": {"Env": []}})
    with pytest.raises(ImageConfigError, match="not absolute"):
        apply_image_config(Generator(), {"config": {"Cmd": ["x"], "WorkingDir": "rel"}})
    with pytest.raises(ImageConfigError, match="not an object"):
        apply_image_config(Generator(), {"config": ["nope"]})


# -- types of the image config's fields ---------------------------------------------


@pytest.mark.parametrize(("field", "value", "message"), [
    ("Entrypoint", "sh -c", "Entrypoint must be an array of strings, not str 'sh -c'"),
    ("Cmd", "echo hi", "Cmd must be an array of strings"),
    ("Cmd", ["echo", 1], r"Cmd\[1\] must be a string, not int 1"),
    ("Env", ["A=1", 7], r"Env\[1\] must be a string"),
    ("Env", "A=1", "Env must be an array of strings"),
    ("User", 1000, "User must be a string, not int 1000"),
    ("WorkingDir", ["/data"], "WorkingDir must be a string"),
    ("Labels", ["a=b"], "Labels must be an object, not list"),
    ("Labels", {"a": 1}, "Labels 'a': 1 is not"),
    ("Labels", {"": "x"}, "Labels '': 'x' is not"),
    ("Volumes", ["/data"], "Volumes must be an object"),
    ("ExposedPorts", "80/tcp", "ExposedPorts must be an object"),
    ("StopSignal", 9, "StopSignal must be a string"),
])
def test_a_field_of_the_wrong_type_is_an_error_naming_it(
    field: str, value: object, message: str,
) -> None:
    config = {"config": {"Cmd": ["true"], field: value}}
    with pytest.raises(ImageConfigError, match=message):
        apply_image_config(Generator(), config, volumes="ignore")


def test_null_fields_are_absent_ones() -> None:
    g = Generator()
    config = {"config": {"Entrypoint": None, "Cmd": ["true"], "Env": None, "Labels": None,
                         "Volumes": None, "User": None, "WorkingDir": None,
                         "StopSignal": None}}
    settings = apply_image_config(g, config)
    assert settings.args == ("true",) and settings.volumes == ()
    assert g.config()["process"]["cwd"] == "/"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"command": "sh -c"}, "command must be a list of strings, not 'sh -c'"),
    ({"args": "date"}, "args must be a list of strings"),
    ({"env": ["NOEQ"]}, "env entry 'NOEQ' is not NAME=VALUE"),
    ({"env": "A=1"}, "env must be a mapping or a list"),
    ({"env": {"": "x"}}, "names not empty"),
    ({"user": 1000}, "user must be a string"),
])
def test_bad_cri_overrides_are_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ImageConfigError, match=message):
        apply_image_config(Generator(), IMAGE, volumes="ignore", **kwargs)  # type: ignore[arg-type]


def test_image_env_entries_without_a_value_are_skipped_as_crio_does() -> None:
    g = Generator()
    config = {"config": {"Cmd": ["true"], "Env": ["PATH=/bin", "NOEQ", "=nameless", "A=1=2"]}}
    apply_image_config(g, config, volumes="ignore")
    env = g.config()["process"]["env"]
    assert "NOEQ" not in g.env() and "NOEQ=" not in env and "NOEQ" not in env
    assert not any(e.startswith("=") for e in env)
    assert g.env()["A"] == "1=2" and g.env()["PATH"] == "/bin"


def test_not_a_mapping_is_an_error() -> None:
    with pytest.raises(ImageConfigError, match="must be an object"):
        apply_image_config(Generator(), ["Cmd"])  # type: ignore[arg-type]


# -- StopSignal -----------------------------------------------------------------------


@pytest.mark.parametrize(("value", "normalised"), [
    ("SIGQUIT", "SIGQUIT"), ("quit", "SIGQUIT"), ("3", "SIGQUIT"), ("9", "SIGKILL"),
    ("SIGRTMIN+3", "SIGRTMIN+3"), ("RTMIN", "SIGRTMIN"),
])
def test_stop_signal_is_checked_and_normalised(value: str, normalised: str) -> None:
    assert normalize_stop_signal(value) == normalised
    g = Generator()
    settings = apply_image_config(g, {"config": {"Cmd": ["true"], "StopSignal": value}})
    assert settings.stop_signal == normalised
    assert g.config()["annotations"][STOP_SIGNAL_ANNOTATION] == normalised


@pytest.mark.parametrize("value", ["SIGBOGUS", "0", "65", "-9"])
def test_an_unknown_stop_signal_is_an_error(value: str) -> None:
    with pytest.raises(ImageConfigError, match=f"StopSignal '{value}' is not a signal"):
        apply_image_config(Generator(), {"config": {"Cmd": ["true"], "StopSignal": value}})


def test_no_label_overrides_the_stop_signal_annotation() -> None:
    labels = {STOP_SIGNAL_ANNOTATION: "SIGKILL", "other": "x"}
    g = Generator()
    apply_image_config(g, {"config": {"Cmd": ["true"], "StopSignal": "SIGQUIT",
                                      "Labels": labels}})
    annotations = g.config()["annotations"]
    assert annotations[STOP_SIGNAL_ANNOTATION] == "SIGQUIT" and annotations["other"] == "x"
    g = Generator()
    apply_image_config(g, {"config": {"Cmd": ["true"], "Labels": labels}})
    assert STOP_SIGNAL_ANNOTATION not in g.config()["annotations"]


# -- the working directory ----------------------------------------------------------------


def test_working_dir_is_created_in_the_rootfs_as_crio_does(rootfs: Path) -> None:
    old = os.umask(0o022)
    try:
        apply_image_config(Generator(), {"config": {"Cmd": ["true"], "WorkingDir": "/srv/app"}},
                           rootfs=rootfs)
        apply_image_config(Generator(), IMAGE, rootfs=rootfs, working_dir="/opt/cri/dir")
    finally:
        os.umask(old)
    for path in (rootfs / "srv", rootfs / "srv" / "app", rootfs / "opt" / "cri" / "dir"):
        st = path.stat()
        assert path.is_dir() and (st.st_mode & 0o777, st.st_uid) == (0o755, os.getuid())
    (rootfs / "escape").symlink_to("/")
    apply_image_config(Generator(), {"config": {"Cmd": ["true"],
                                                "WorkingDir": "/escape/criolib-wd"}},
                       rootfs=rootfs)
    assert (rootfs / "criolib-wd").is_dir() and not Path("/criolib-wd").exists()
    apply_image_config(Generator(), {"config": {"Cmd": ["true"], "WorkingDir": "/not/made"}},
                       rootfs=rootfs, create_workdir=False)
    assert not (rootfs / "not").exists()
    (rootfs / "file").write_text("")
    with pytest.raises(ImageConfigError, match="cannot create working directory /file"):
        apply_image_config(Generator(), {"config": {"Cmd": ["true"], "WorkingDir": "/file"}},
                           rootfs=rootfs)
