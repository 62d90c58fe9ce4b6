"""A pod's monitor exiting while the next create of its group arrives.

criolib's monitor exits when idle, under the group lock a creating client holds from
connecting to sending its request (docs/conmon-design.md "Lifetime"). With the idle
time near zero, every create of a group of short-lived containers races the monitor's
exit: none may fail to reach a monitor, and every exit must be recorded.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest

from criolib.conmon import ContainerConfig, CriolibMonitor, MonitorError
from criolib.runtime_spec import RuntimeClient

from .conftest import MakeBundle, new_container_id


@pytest.mark.parametrize("runtime", ["crun"], indirect=True)
def test_creates_racing_the_idle_exit_of_the_group_monitor(
        runtime: RuntimeClient, make_bundle: MakeBundle, tmp_path: Path) -> None:
    monitor = CriolibMonitor(tmp_path / "run", idle_exit=0.01)
    bundle = make_bundle("true")
    errors: list[BaseException] = []
    codes: list[int] = []
    monitor_pids: set[int] = set()

    def worker(n: int) -> None:
        rand = random.Random(n)
        for _ in range(8):
            # Around the monitor's idle time, so creates land before, during and after
            # its exit.
            time.sleep(rand.uniform(0, 0.05))
            cid = new_container_id(f"race{n}-")
            try:
                created = monitor.create(ContainerConfig(
                    container_id=cid, bundle=bundle, runtime=runtime,
                    exit_dir=tmp_path / "exits", group="pod"))
                monitor_pids.add(created.monitor_pid)
                runtime.start(cid)
                status = monitor.wait(cid, timeout=20)
                assert status is not None
                codes.append(status.exit_code)
                runtime.delete(cid, force=True)
                monitor.forget(cid)
            except (MonitorError, AssertionError) as exc:
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert codes == [0] * 24
    # The race was real: the group's monitor came and went between creates.
    assert len(monitor_pids) > 1
