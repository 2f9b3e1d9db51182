"""``JobConfig``, as Ray's ``ray.job_config``: a job's runtime_env and namespace, given to
``init(job_config=...)``. ``init``'s own ``runtime_env``/``namespace`` win over it."""

from __future__ import annotations

from typing import Any


class JobConfig:
    """What ``init`` reads of it: ``runtime_env`` and ``ray_namespace``. ``metadata``,
    ``code_search_path`` and ``jvm_options`` are kept and change nothing here."""

    def __init__(
        self,
        jvm_options: list[str] | None = None,
        code_search_path: list[str] | None = None,
        runtime_env: dict[str, Any] | None = None,
        _client_job: bool = False,
        metadata: dict[str, Any] | None = None,
        ray_namespace: str | None = None,
        default_actor_lifetime: str = "non_detached",
    ) -> None:
        if default_actor_lifetime not in ("detached", "non_detached"):
            raise ValueError(
                "Default actor lifetime must be one of `detached`, `non_detached`, got "
                f"{default_actor_lifetime!r}"
            )
        if default_actor_lifetime == "detached":
            raise ValueError(
                "default_actor_lifetime='detached' is not supported: give "
                "lifetime='detached' to the actors that should outlive the job"
            )
        self.jvm_options = list(jvm_options or [])
        self.code_search_path = list(code_search_path or [])
        self.metadata = dict(metadata or {})
        self.ray_namespace = ray_namespace
        self.runtime_env: dict[str, Any] = dict(runtime_env or {})

    def set_metadata(self, key: str, value: str) -> None:
        self.metadata[key] = value

    def set_runtime_env(self, runtime_env: dict[str, Any] | None) -> None:
        self.runtime_env = dict(runtime_env or {})

    def set_ray_namespace(self, ray_namespace: str) -> None:
        self.ray_namespace = ray_namespace


__all__ = ["JobConfig"]
