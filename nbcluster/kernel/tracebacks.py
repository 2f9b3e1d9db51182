"""Remote exceptions shown like local ones, with the source lines of notebook cells.

A ``TaskError`` carries the remote traceback as text. The worker cannot show the lines of
code that came from notebook cells: those live only in the kernel's ``linecache``, and
functions pickled by value even lose their filename (cloudpickle renames it
``<dynamic-code>``). So the kernel re-renders the remote frames: a frame in a cell (or in a
``%%remote`` body, compiled under its cell's name) gets its line from ``linecache``; a
``<dynamic-code>`` frame is matched to the latest cell defining a function of that name
around that line. Frames are labelled ``Cell In[n]`` as IPython labels local ones.
"""

from __future__ import annotations

import ast
import linecache
import re
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from nbcluster.exceptions import NbclusterError, TaskError

_FRAME = re.compile(r'^  File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<name>.+)$')
_DYNAMIC = "<dynamic-code>"
#: Frames of the machinery that runs a ``%%remote`` body: noise to the reader.
_HIDDEN_FILES = {str(Path(__file__).with_name("cell_task.py"))}
#: A local traceback through this file is a ``%%remote`` cell's: its local frame (the
#: transformed ``run_cell_magic`` call) says nothing the remote frames do not.
_MAGICS_FILE = str(Path(__file__).with_name("magics.py"))
_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent) + "/"
_RED, _GREEN, _CYAN, _RESET = "\x1b[31m", "\x1b[32m", "\x1b[36m", "\x1b[39m"
_RULE = "-" * 75

#: Code-object names for nodes that have no ``name`` of their own.
_ANONYMOUS: dict[str, tuple[type[ast.AST], ...]] = {
    "<lambda>": (ast.Lambda,),
    "<listcomp>": (ast.ListComp,),
    "<setcomp>": (ast.SetComp,),
    "<dictcomp>": (ast.DictComp,),
    "<genexpr>": (ast.GeneratorExp,),
}


class CellSources:
    """The notebook's cells as the kernel's compiler registered them: filename -> In[n]."""

    def __init__(self, filename_map: dict[str, int]) -> None:
        self._map = filename_map
        self._trees: dict[str, ast.Module | None] = {}

    def label(self, filename: str) -> str | None:
        number = self._map.get(filename)
        return f"Cell In[{number}]" if number is not None else None

    def find_definition(self, name: str, line: int) -> str | None:
        """The latest cell that defines ``name`` so that it spans ``line``."""
        for filename, _ in sorted(self._map.items(), key=lambda kv: kv[1], reverse=True):
            tree = self._tree(filename)
            if tree is not None and _defines(tree, name, line):
                return filename
        return None

    def _tree(self, filename: str) -> ast.Module | None:
        if filename not in self._trees:
            try:
                self._trees[filename] = ast.parse("".join(linecache.getlines(filename)))
            except SyntaxError:
                self._trees[filename] = None
        return self._trees[filename]


def _defines(tree: ast.Module, name: str, line: int) -> bool:
    kinds = _ANONYMOUS.get(name)
    for node in ast.walk(tree):
        if kinds is not None:
            if not isinstance(node, kinds):
                continue
        elif not (
            isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and node.name == name
        ):
            continue
        end = getattr(node, "end_lineno", None) or node.lineno  # type: ignore[attr-defined]
        if node.lineno <= line <= end:  # type: ignore[attr-defined]
            return True
    return False


def render_remote_frames(traceback_text: str, cells: CellSources) -> list[str]:
    """The remote traceback's lines, with cell frames labelled and their sources filled in."""
    lines = traceback_text.rstrip("\n").splitlines()
    if lines and lines[0].startswith("Traceback (most recent call last)"):
        lines = lines[1:]  # the header above already says it
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _FRAME.match(lines[i])
        if match is None:
            out.append(lines[i])
            i += 1
            continue
        body_end = i + 1
        while body_end < len(lines) and lines[body_end].startswith("    "):
            body_end += 1
        body = lines[i + 1 : body_end]
        i = body_end
        filename, line, name = match["file"], int(match["line"]), match["name"]
        if filename in _HIDDEN_FILES:
            continue
        if filename == _DYNAMIC:
            filename = cells.find_definition(name, line) or filename
        label = cells.label(filename)
        where = f"{label}, line {line}" if label else f'File "{filename}", line {line}'
        out.append(f"  {_GREEN}{where}{_RESET}, in {_CYAN}{name}{_RESET}")
        if not body:
            source = linecache.getline(filename, line).strip()
            body = [f"    {source}"] if source else []
        out.extend(body)
    return out


def structured_traceback(
    error: TaskError, local_tb: types.TracebackType | None, cells: CellSources
) -> list[str]:
    """IPython's structured traceback (a list of text blocks) for a remote error."""
    cause = error.cause
    ename = type(cause).__name__ if cause is not None else type(error).__name__
    where = f" (pid={error.pid}, ip={error.ip})" if error.pid is not None else ""
    stb = [
        f"{_RED}{_RULE}{_RESET}",
        f"{_RED}{ename}{_RESET}{' ' * max(1, 42 - len(ename))}"
        f"Traceback (most recent call last)",
    ]
    local = _last_cell_frame(local_tb, cells)
    if local is not None:
        stb.append(local)
    frames = render_remote_frames(error.traceback_str, cells)
    stb.append(f"Remote traceback from {error.function_name or 'a task'}{where}:")
    stb.append("\n".join(frames) if frames else f"{_RED}{ename}{_RESET}: {cause}")
    return stb


def _last_cell_frame(tb: types.TracebackType | None, cells: CellSources) -> str | None:
    """``Cell In[n], line k`` and its source: where the notebook received the error."""
    found = None
    for frame_tb in _walk(tb):
        code = frame_tb.tb_frame.f_code
        if code.co_filename == _MAGICS_FILE:
            return None
        label = cells.label(code.co_filename)
        if label is not None:
            source = linecache.getline(code.co_filename, frame_tb.tb_lineno).rstrip()
            found = f"{_GREEN}{label}, line {frame_tb.tb_lineno}{_RESET}\n{source}"
    return found


def _walk(tb: types.TracebackType | None) -> Iterator[types.TracebackType]:
    while tb is not None:
        yield tb
        tb = tb.tb_next


def _until_last_cell_frame(
    tb: types.TracebackType | None, cells: CellSources
) -> types.TracebackType | None:
    """A cell interrupted while nbcluster waits: the frames past the cell's own are the
    runtime's waiting, which say nothing to the user and take IPython most of a second to
    render, so the traceback ends at the cell's last frame. Any other traceback is kept."""
    frames = list(_walk(tb))
    if not any(f.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR) for f in frames):
        return tb
    last_cell = None
    for frame_tb in frames:
        if cells.label(frame_tb.tb_frame.f_code.co_filename) is not None:
            last_cell = frame_tb
    if last_cell is not None:
        last_cell.tb_next = None
    return tb


def _until_last_user_frame(tb: types.TracebackType | None) -> types.TracebackType | None:
    """An error nbcluster raised for a user's call (an unpicklable argument, a full store):
    the traceback ends where the user's code called into nbcluster; the frames below (the
    runtime's, and the standard library's it waits in) say nothing the message does not."""
    caller = None
    for frame_tb in _walk(tb):
        if frame_tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
            break
        caller = frame_tb
    if caller is not None:
        caller.tb_next = None
    return tb


def short_traceback(
    shell: Any, etype: type[BaseException], value: BaseException,
    tb: types.TracebackType | None, tb_offset: int | None,
) -> list[str]:  # fmt: skip
    """IPython's traceback of an nbcluster error, without nbcluster's frames and without the
    internal errors chained to it (``NBCLUSTER_TRACEBACK_INTERNALS=1`` shows them all)."""
    from nbcluster.runtime.config import CONFIG

    if CONFIG.traceback_internals:
        stb: list[str] = shell.InteractiveTB.structured_traceback(etype, value, tb, tb_offset)
        return stb
    chain = (value.__cause__, value.__context__, value.__suppress_context__)
    value.__cause__ = value.__context__ = None
    value.__suppress_context__ = True
    try:
        stb = shell.InteractiveTB.structured_traceback(
            etype, value, _until_last_user_frame(tb), tb_offset
        )
    finally:
        value.__cause__, value.__context__, value.__suppress_context__ = chain
    return stb


def make_handler(cells: Callable[[], CellSources]) -> Callable[..., list[str]]:
    """A handler for IPython's ``set_custom_exc((NbclusterError, KeyboardInterrupt), ...)``."""

    def handler(
        shell: Any,
        etype: type[BaseException],
        value: BaseException,
        tb: types.TracebackType | None,
        tb_offset: int | None = None,
    ) -> list[str]:
        sources = cells()
        if isinstance(value, TaskError):
            stb = structured_traceback(value, tb, sources)
        elif isinstance(value, NbclusterError):
            stb = short_traceback(shell, etype, value, tb, tb_offset)
        else:
            stb = shell.InteractiveTB.structured_traceback(
                etype, value, _until_last_cell_frame(tb, sources), tb_offset
            )
        # IPython's wrapper only returns the traceback; showing it is ours to do, and
        # _showtraceback is what ipykernel overrides to publish an "error" message.
        shell._showtraceback(etype, value, stb)
        return stb

    return handler

