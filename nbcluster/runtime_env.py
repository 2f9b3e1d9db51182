"""``RuntimeEnv`` and ``RuntimeEnvConfig``, as Ray's ``ray.runtime_env`` (what a
``runtime_env`` may hold: see ``nbcluster.runtime.api.runtime_env``)."""

from nbcluster.runtime.api.runtime_env import RuntimeEnv, RuntimeEnvConfig

__all__ = ["RuntimeEnv", "RuntimeEnvConfig"]
