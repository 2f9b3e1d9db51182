"""The options of ``@remote`` functions, actors and actor methods, checked as Ray checks them.

A Ray program that passes a bad option gets a clear error where it wrote it (at the
decorator, ``.options()`` or ``.remote()``), with Ray's wording: ``TypeError`` for a value of
the wrong type, ``ValueError`` for a wrong value or an unknown keyword.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nbcluster.runtime.api import runtime_env
from nbcluster.runtime.scheduling.bundles import PlacementGroupSchedulingStrategy
from nbcluster.runtime.scheduling.gpus import check_amount
from nbcluster.runtime.scheduling.placement import NodeAffinitySchedulingStrategy


@dataclass(frozen=True)
class Option:
    types: tuple[type, ...] | None = None
    #: None if the value is fine, else why not
    check: Callable[[Any], str | None] | None = None

    def validate(self, keyword: str, value: Any) -> None:
        if self.types is not None and not isinstance(value, self.types):
            names = ", ".join(t.__name__ for t in self.types)
            raise TypeError(
                f"The type of keyword '{keyword}' must be one of ({names}), but received "
                f"type {type(value).__name__}"
            )
        if self.check is not None and (why := self.check(value)) is not None:
            raise ValueError(why)


_NONE = type(None)


def _counting(name: str, infinite: bool = True) -> Option:
    """A non-negative count; -1 for infinity where ``infinite``."""
    low = -1 if infinite else 0
    why = (
        f"The keyword '{name}' only accepts None, 0, -1 or a positive integer, where -1 "
        "represents infinity."
        if infinite
        else f"The keyword '{name}' only accepts None, 0 or a positive integer."
    )
    return Option(
        (int, _NONE), lambda v: None if v is None or (v >= low and v is not True) else why
    )


def _resource(name: str) -> Option:
    def check(v: Any) -> str | None:
        if v is None:
            return None
        if v < 0:
            return f"The quantity of resource {name} cannot be negative"
        if name == "num_gpus":
            try:
                check_amount(v)
            except ValueError as e:
                return str(e)
        return None

    return Option((float, int, _NONE), check)


def _resources(v: Any) -> str | None:
    if v is None:
        return None
    if "CPU" in v or "GPU" in v:
        return (
            "Use the 'num_cpus' and 'num_gpus' keyword instead of 'CPU' and 'GPU' in "
            "'resources' keyword"
        )
    for name, amount in v.items():
        if not isinstance(amount, (int, float)):
            return f"The quantity of resource {name} must be a number, got {amount!r}"
        if amount < 0:
            return f"The quantity of resource {name} cannot be negative"
    return None


def _num_returns(v: Any) -> str | None:
    if v is None or (isinstance(v, int) and v >= 0) or v == "streaming":
        return None
    if v == "dynamic":
        return None  # (tasks only: an actor method refuses it, see validate)
    return (
        "Default None. When None is passed, the default value is 1 for a task and actor "
        "task, and 'streaming' for generator tasks and generator actor tasks. The keyword "
        "'num_returns' only accepts None, a non-negative integer, 'streaming' (for "
        "generators), or 'dynamic'. 'dynamic' flag will be deprecated in the future, and it "
        "is recommended to use 'streaming' instead."
    )


def is_generator(fn: Any) -> bool:
    """A generator function (sync or async): its calls stream what it yields."""
    return inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)


def check_num_returns(num_returns: Any, fn: Any) -> None:
    """``num_returns="streaming"`` or ``"dynamic"`` need a generator function (Ray's check)."""
    if num_returns in ("streaming", "dynamic") and not is_generator(fn):
        raise ValueError(
            f"num_returns='{num_returns}' can only be used with generator functions "
            "(functions that use 'yield'). The decorated function is not a generator function."
        )


def default_num_returns(num_returns: Any, fn: Any) -> Any:
    """``num_returns`` when given, else as Ray: 'streaming' for a generator function, 1."""
    if num_returns is not None:
        return num_returns
    return "streaming" if is_generator(fn) else 1


def _retry_exceptions(v: Any) -> str | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (list, tuple)) and all(
        isinstance(x, type) and issubclass(x, Exception) for x in v
    ):
        return None
    return "retry_exceptions must be either a boolean or a list of exceptions"


def _lifetime(v: Any) -> str | None:
    if v in (None, "detached", "non_detached"):
        return None
    return "actor `lifetime` argument must be one of 'detached', 'non_detached' and 'None'."


def _name(v: Any) -> str | None:
    return "an actor name must be a non-empty string" if v == "" else None


def _namespace(v: Any) -> str | None:
    return '"" is not a valid namespace. Pass None to not specify a namespace.' if v == "" else None


def _concurrency_groups(v: Any) -> str | None:
    if v is None:
        return None
    items = v.items() if isinstance(v, dict) else [(g, None) for g in v]
    for group, size in items:
        if not isinstance(group, str) or not group:
            return f"concurrency group names must be non-empty strings, got {group!r}"
        if size is not None and (not isinstance(size, int) or size < 1):
            return f"concurrency group {group!r} must allow at least 1 call, got {size!r}"
    return None


_STRATEGY = Option((_NONE, str, NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy))

COMMON: dict[str, Option] = {
    "memory": _resource("memory"),
    "name": Option((str, _NONE)),
    "num_cpus": _resource("num_cpus"),
    "num_gpus": _resource("num_gpus"),
    "resources": Option((dict, _NONE), _resources),
    "runtime_env": Option((dict, _NONE), runtime_env.option_problem),
    "scheduling_strategy": _STRATEGY,
    "accelerator_type": Option((str, _NONE)),
}
TASK: dict[str, Option] = {
    **COMMON,
    "max_calls": _counting("max_calls", infinite=False),
    "max_retries": _counting("max_retries"),
    "num_returns": Option((int, str, _NONE), _num_returns),
    "retry_exceptions": Option((bool, list, tuple), _retry_exceptions),
}
ACTOR: dict[str, Option] = {
    **COMMON,
    "name": Option((str, _NONE), _name),
    "concurrency_groups": Option((list, dict, _NONE), _concurrency_groups),
    "lifetime": Option((str, _NONE), _lifetime),
    "max_concurrency": _counting("max_concurrency", infinite=False),
    "max_restarts": _counting("max_restarts"),
    "max_task_retries": _counting("max_task_retries"),
    "namespace": Option((str, _NONE), _namespace),
    "get_if_exists": Option((bool,)),
}
METHOD: dict[str, Option] = {
    "num_returns": Option((int, str, _NONE), _num_returns),
    "name": Option((str, _NONE)),
    "max_task_retries": _counting("max_task_retries"),
    "retry_exceptions": Option((bool, list, tuple), _retry_exceptions),
    "concurrency_group": Option((str, _NONE)),
}

#: What ``@remote(...)`` says when it is given something other than keyword options.
REMOTE_USAGE = (
    "The @remote decorator must be applied either with no arguments and no parentheses, "
    "for example '@remote', or it must be applied using some of the arguments in the list "
    f"{sorted({*TASK, *ACTOR})}, for example '@remote(num_returns=2, "
    "resources={\"CustomResource\": 1})'."
)


def validate(options: dict[str, Any], table: dict[str, Option], what: str,
             in_options: bool = False) -> None:  # fmt: skip
    """Check ``options`` against ``table`` (TASK, ACTOR or METHOD); ``what`` names the
    thing they apply to in errors."""
    for keyword, value in options.items():
        option = table.get(keyword)
        if option is None:
            raise ValueError(
                f"Invalid option keyword {keyword} for {what}. Valid ones are {list(table)}."
            )
        option.validate(keyword, value)
    if in_options and "max_calls" in options:
        raise ValueError("Setting 'max_calls' is not supported in '.options()'.")
    if in_options and "concurrency_groups" in options:
        raise ValueError("Setting 'concurrency_groups' is not supported in '.options()'.")
    if table is METHOD and options.get("num_returns") == "dynamic":
        raise ValueError("num_returns='dynamic' is supported for remote functions only")
    if table is ACTOR and options.get("get_if_exists") and not options.get("name"):
        raise ValueError("The actor name must be specified to use `get_if_exists`.")
