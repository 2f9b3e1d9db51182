"""Output routing on its own: which cell a chunk of remote output is published under, and how
it is prefixed. The kernel tests show it end to end; these pin the edge cases (lines split
across chunks, work that no cell launched) with a recording stand-in for the kernel."""

from __future__ import annotations

from typing import Any

import pytest

from nbcluster.kernel.routing import CellTag, OutputRouter, plain_submissions


class RecordingKernel:
    """Just what the router uses of an ipykernel Kernel: a parent and a session to send on."""

    def __init__(self) -> None:
        self.parent: dict[str, Any] = {}
        self.sent: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        self.session = self
        self.iopub_socket = object()

    def get_parent(self, channel: str | None = None) -> dict[str, Any]:
        return self.parent

    def send(self, socket: object, msg_type: str, content: dict[str, Any], **kw: Any) -> None:
        self.sent.append((msg_type, content, kw["parent"]))


def test_submissions_are_tagged_with_the_running_request() -> None:
    kernel = RecordingKernel()
    router = OutputRouter(kernel)
    assert router.current_tag() is None  # no request yet: nothing to attribute work to
    kernel.parent = {"header": {"msg_id": "cell-1", "msg_type": "execute_request"}}
    tag = router.current_tag()
    assert tag == CellTag("cell-1") and tag is not None and not tag.plain
    with plain_submissions():
        plain = router.current_tag()
    assert plain == CellTag("cell-1") and plain is not None and plain.plain


def test_output_is_published_under_its_tag_with_one_prefix_per_line() -> None:
    kernel = RecordingKernel()
    router = OutputRouter(kernel)
    header = {"msg_id": "cell-1"}
    tag = CellTag("cell-1", header)
    router.publish(tag, "stdout", "hel", "(f pid=1)")
    router.publish(tag, "stdout", "lo\nworld\n", "(f pid=1)")
    router.publish(CellTag("cell-2", {"msg_id": "cell-2"}, plain=True), "stderr", "as is\n", "(g)")
    texts = [(c["name"], c["text"], parent["msg_id"]) for _, c, parent in kernel.sent]
    assert texts == [
        ("stdout", "(f pid=1) hel", "cell-1"),
        ("stdout", "lo\n(f pid=1) world\n", "cell-1"),
        ("stderr", "as is\n", "cell-2"),
    ]


def test_output_of_work_no_cell_launched_goes_to_the_log(capfd: pytest.CaptureFixture[str]) -> None:
    kernel = RecordingKernel()
    OutputRouter(kernel).publish(None, "stderr", "orphan\n", "(h pid=2)")
    assert kernel.sent == []
    assert "(h pid=2) orphan" in capfd.readouterr().err
