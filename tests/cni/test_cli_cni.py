"""``criolib cni``: cnitool's verbs over the library."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from criolib.cli import main
from tests.cni.test_libcni import Bed, bed, sh

__all__ = ["bed"]  # the fixture, shared with test_libcni


def test_ls_lists_networks_and_reports_bad_files(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "10-a.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "a", "plugins": [{"type": "bridge"}]}))
    (tmp_path / "20-b.conf").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "b", "type": "ptp"}))
    (tmp_path / "30-bad.conflist").write_text("{")
    assert main(["cni", "--conf-dir", str(tmp_path), "ls", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["default"] == "a"
    assert doc["networks"]["b"]["plugins"] == ["ptp"]
    assert list(doc["errors"]) == [str(tmp_path / "30-bad.conflist")]
    assert main(["cni", "--conf-dir", str(tmp_path), "ls"]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("* a\t1.0.0\tbridge")
    assert "30-bad.conflist" in out.err


def test_unknown_network_is_an_error(tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cni", "--conf-dir", str(tmp_path), "del", "nosuch", "/x"]) == 1
    assert "no network 'nosuch'" in capsys.readouterr().err


def test_bad_input_is_a_one_line_error(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "10-a.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "a", "plugins": [{"type": "bridge"}]}))
    base = ["cni", "--conf-dir", str(tmp_path), "--cache-dir", str(tmp_path / "cache")]
    cases = [
        (["add", "a", str(tmp_path / "no-such-netns")], "does not exist"),
        (["check", "a", str(tmp_path / "no-such-netns")], "does not exist"),
        (["add", "a", "/proc/self/ns/net", "--cap-args", "{nope"], "--cap-args is not JSON"),
        (["add", "a", "/proc/self/ns/net", "--cap-args", "[1]"], "must be a JSON object"),
        (["add", "nosuch", "/proc/self/ns/net"], "no network 'nosuch'"),
    ]
    for argv, message in cases:
        assert main([*base, *argv]) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith("criolib: error: ") and message in err, (argv, err)
        assert err.count("\n") == 1, err
    assert not (tmp_path / "cache" / "results").exists()  # no plugin ran


def test_add_check_del_with_real_plugins(bed: Bed, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    (conf_dir / "10-test.conflist").write_text(json.dumps(bed.net))
    _, path = bed.make_netns()
    common = ["cni", "--conf-dir", str(conf_dir), "--plugin-dir", str(bed.plugin_dir),
              "--cache-dir", str(tmp_path / "cache")]
    name = bed.net["name"]
    args = ["--args", "IgnoreUnknown=1;K8S_POD_NAME=p", "--cap-args",
            '{"portMappings": [{"hostPort": 38999, "containerPort": 80, "protocol": "tcp"}]}']
    assert main([*common, "add", name, path, *args]) == 0
    result = json.loads(capsys.readouterr().out)
    address = result["ips"][0]["address"].split("/")[0]
    assert address.startswith(bed.prefix)
    assert address in sh("ip", "netns", "exec", bed.netns[0], "ip", "-o", "addr")
    assert main([*common, "check", name, path]) == 0
    assert main([*common, "del", name, path]) == 0
    assert main([*common, "del", name, path]) == 0
    assert bed.host_state()[1:] == ([], [])
    assert not list((tmp_path / "cache" / "results").iterdir())
