"""``runtime_env``, as Ray defines it, for the keys that need no installing.

nbcluster runs tasks in the Python environment its nodes were started with: it sets
environment variables (``env_vars``), a working directory (``working_dir``) and extra import
paths (``py_modules``), and refuses every key that would install something (``pip``,
``conda``, ``uv``, ``container``, ``image_uri``...) or that it does not know, where the user
wrote it, rather than run the task in an environment it was not asked for.

Directories are used in place, not copied: a node on another machine must see them at the
same path (a shared filesystem); a worker that does not fails the task with an error that
says so (``execute/runtime_env.py``).

Where an environment applies, as in Ray: ``init(runtime_env=...)`` is the job's; a task or an
actor inherits its parent's (the job's for the driver); one given in ``@remote``/``.options``
is merged over the inherited one, key by key, except ``env_vars``, merged variable by variable.
"""

from __future__ import annotations

import json
import os
import types
from typing import Any

#: What nbcluster does with each key it accepts is described in the module docstring.
SUPPORTED = ("env_vars", "working_dir", "py_modules", "excludes", "config")
#: Ray's keys that install or isolate an environment: refused, naming the key.
INSTALLING = (
    "pip", "conda", "uv", "container", "image_uri", "py_executable", "java_jars", "nsight",
    "_nsight", "_rocprof_sys", "mpi", "worker_process_setup_hook", "plugins",
)  # fmt: skip
_CONFIG_KEYS = ("setup_timeout_seconds", "eager_install", "log_files")

def normalize(env: Any) -> dict[str, Any] | None:
    """Check ``env`` and return the form tasks carry (paths made absolute, empty parts
    dropped); None for no environment. TypeError/ValueError say what is wrong, as Ray's."""
    if env is None:
        return None
    if not isinstance(env, dict):
        raise TypeError(f"runtime_env must be a dict, got {type(env).__name__}")
    out: dict[str, Any] = {}
    for key, value in env.items():
        if key in INSTALLING:
            raise ValueError(
                f"runtime_env[{key!r}] is not supported: nbcluster does not install "
                "environments. Install the packages on every node (the Python environment "
                "the nodes run in), or start the nodes in that environment; runtime_env "
                "supports env_vars, working_dir and py_modules."
            )
        if key not in SUPPORTED:
            raise ValueError(
                f"runtime_env has an unknown key {key!r}; nbcluster supports "
                f"{', '.join(SUPPORTED)}"
            )
        if value is None:
            continue
        if key == "env_vars":
            if vars_ := _env_vars(value):
                out[key] = vars_
        elif key == "working_dir":
            out[key] = _directory(value, "working_dir")
        elif key == "py_modules":
            if mods := _py_modules(value):
                out[key] = mods
        elif key == "excludes":
            if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                raise TypeError("runtime_env['excludes'] must be a list of strings")
            out[key] = list(value)
        else:
            out[key] = _config(value)
    return out or None


def _env_vars(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise TypeError(
            f"runtime_env['env_vars'] must be of type Dict[str, str], got {type(value)}"
        )
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(
                "runtime_env['env_vars'] must be of type Dict[str, str], got the item "
                f"{k!r}: {v!r} ({type(k).__name__}: {type(v).__name__})"
            )
    return dict(value)


def _directory(value: Any, key: str) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise TypeError(f"runtime_env[{key!r}] must be a string, got {type(value)}")
    if "://" in value:
        raise ValueError(
            f"runtime_env[{key!r}]={value!r}: nbcluster does not download {key} from URIs; "
            "give a local directory (on a shared filesystem for nodes on other machines)"
        )
    path = os.path.abspath(os.path.expanduser(value))
    if not os.path.isdir(path):
        raise ValueError(f"runtime_env[{key!r}]={value!r}: {path} is not a directory")
    return path


def _py_modules(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise TypeError(f"runtime_env['py_modules'] must be a list, got {type(value)}")
    paths = []
    for m in value:
        if isinstance(m, types.ModuleType):  # as Ray: a module object stands for its files
            file = getattr(m, "__file__", None)
            if file is None:
                raise ValueError(f"runtime_env['py_modules']: module {m.__name__} has no file")
            m = os.path.dirname(file) if os.path.basename(file) == "__init__.py" else file
        if isinstance(m, os.PathLike):
            m = os.fspath(m)
        if not isinstance(m, str):
            raise TypeError(f"runtime_env['py_modules'] entries must be paths, got {type(m)}")
        if "://" in m or m.endswith(".whl"):
            raise ValueError(
                f"runtime_env['py_modules'] entry {m!r}: nbcluster does not download or "
                "install modules; give the local path of a package directory or a .py file"
            )
        path = os.path.abspath(os.path.expanduser(m))
        if not (os.path.isdir(path) or (os.path.isfile(path) and path.endswith(".py"))):
            raise ValueError(
                f"runtime_env['py_modules'] entry {m!r}: {path} is neither a package "
                "directory nor a .py file"
            )
        paths.append(path)
    return paths


def _config(value: Any) -> dict[str, Any]:
    """Ray's RuntimeEnvConfig: about installing, so it changes nothing here; checked all the
    same, so a typo is not ignored."""
    if not isinstance(value, dict):
        raise TypeError(f"runtime_env['config'] must be a dict, got {type(value)}")
    unknown = set(value) - set(_CONFIG_KEYS)
    if unknown:
        raise ValueError(
            f"runtime_env['config'] has unknown keys {sorted(unknown)}; known: {_CONFIG_KEYS}"
        )
    return dict(value)


def merge(parent: dict[str, Any] | None, child: dict[str, Any] | None) -> dict[str, Any] | None:
    """``child`` over ``parent``, as Ray merges a task's environment over its parent's: key
    by key, except ``env_vars``, variable by variable."""
    if not parent:
        return child
    if not child:
        return parent
    merged = {**parent, **child}
    if "env_vars" in parent and "env_vars" in child:
        merged["env_vars"] = {**parent["env_vars"], **child["env_vars"]}
    return merged


def option_problem(value: Any) -> str | None:
    """The ``runtime_env`` option's check (``options.py``): why ``value`` is refused."""
    try:
        normalize(value)
    except ValueError as e:
        return str(e)
    return None


class RuntimeEnvConfig(dict):  # type: ignore[type-arg]
    """Ray's ``RuntimeEnvConfig``: how long installing may take, and when. Nothing is
    installed here, so it is only checked."""

    def __init__(
        self, setup_timeout_seconds: int = 600, eager_install: bool = True,
        log_files: list[str] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(setup_timeout_seconds=setup_timeout_seconds,
                         eager_install=eager_install, log_files=log_files or [])  # fmt: skip


class RuntimeEnv(dict):  # type: ignore[type-arg]
    """Ray's ``RuntimeEnv``: a ``runtime_env`` dict built from keywords, checked (and its
    paths made absolute) when it is made."""

    def __init__(
        self, *, py_modules: list[Any] | None = None, working_dir: str | None = None,
        env_vars: dict[str, str] | None = None, config: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:  # fmt: skip
        given = dict(py_modules=py_modules, working_dir=working_dir, env_vars=env_vars,
                     config=config, **kwargs)  # fmt: skip
        super().__init__(normalize({k: v for k, v in given.items() if v is not None}) or {})

    def to_dict(self) -> dict[str, Any]:
        return dict(self)

    def serialize(self) -> str:
        return json.dumps(self, sort_keys=True)

    @classmethod
    def deserialize(cls, serialized: str) -> RuntimeEnv:
        return cls(**json.loads(serialized))

    def working_dir(self) -> str:
        return str(self.get("working_dir", ""))

    def py_modules(self) -> list[str]:
        return list(self.get("py_modules", []))

    def env_vars(self) -> dict[str, str]:
        return dict(self.get("env_vars", {}))
