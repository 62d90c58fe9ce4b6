"""The CLI's progress output: bars redrawn in place on a terminal, plain lines elsewhere."""

from __future__ import annotations

import io

from criolib.cli._image_progress import ProgressPrinter, human_size
from criolib.image import ProgressEvent

LAYER = "sha256:" + "ab" * 32
CONFIG = "sha256:" + "cd" * 32


def events() -> list[ProgressEvent]:
    return [
        ProgressEvent("skipped", CONFIG, 300, index=None),
        ProgressEvent("started", LAYER, 2048, index=0),
        ProgressEvent("progress", LAYER, 2048, offset=1024, index=0),
        ProgressEvent("progress", LAYER, 2048, offset=2048, index=0),
        ProgressEvent("done", LAYER, 2048, offset=2048, index=0),
    ]


def test_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    printer = ProgressPrinter(out, tty=False)
    for event in events():
        printer(event)
    printer.finish("Writing manifest")
    assert out.getvalue().splitlines() == [
        f"Copying config {CONFIG[7:19]} skipped: already exists",
        f"Copying blob {LAYER[7:19]}",
        f"Copying blob {LAYER[7:19]} done   2.0KiB",
        "Writing manifest",
    ]


def test_bars_are_redrawn_in_place_on_a_terminal() -> None:
    out = io.StringIO()
    printer = ProgressPrinter(out, tty=True, interval=0)
    for event in events():
        printer(event)
    printer.finish()
    text = out.getvalue()
    assert "\x1b[F" in text  # the cursor went back up to redraw
    last_frame = text.rsplit("\x1b[F", 1)[-1]
    assert last_frame.split("\n")[-2].endswith("done   2.0KiB")
    assert "[===============>" in text  # half way: 1.0KiB of 2.0KiB


def test_human_sizes() -> None:
    assert [human_size(n) for n in (0, 1023, 1024, 5 << 20, 3 << 30)] == [
        "0B", "1023B", "1.0KiB", "5.0MiB", "3.0GiB"]
