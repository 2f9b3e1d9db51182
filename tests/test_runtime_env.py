"""``runtime_env`` as in Ray: ``env_vars``, ``working_dir`` and ``py_modules`` reach the task
or the actor (and nothing after it on the same worker), the job's environment merges with a
task's, children inherit, and every key that would install something is refused where it is
written."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import nbcluster as nc
from nbcluster import exceptions as exc
from nbcluster.runtime_env import RuntimeEnv, RuntimeEnvConfig

T = 30


@nc.remote
def environ(*names):
    """The variables, the worker's pid and its cwd, as the task sees them."""
    return {n: os.environ.get(n) for n in names}, os.getpid(), os.getcwd()


@nc.remote
def nested(*names):
    """What a child task (no runtime_env of its own) sees."""
    return nc.get(environ.remote(*names), timeout=T)[0]


@nc.remote
def context_env():
    return nc.get_runtime_context().runtime_env


@nc.remote
class Holder:
    def environ(self, *names):
        return {n: os.environ.get(n) for n in names}, os.getpid()

    def child(self, *names):
        return nc.get(environ.remote(*names), timeout=T)[0]


@pytest.fixture
def one_worker(make_cluster):
    """One CPU: consecutive tasks share a worker, so a leak would show."""
    return make_cluster(num_cpus=1)


def test_env_vars_reach_the_task_and_not_the_next_one_on_its_worker(one_worker):
    vars_, pid, _ = nc.get(environ.remote("NBC_FOO", "PATH"), timeout=T)
    assert vars_["NBC_FOO"] is None
    path = vars_["PATH"]
    env = {"env_vars": {"NBC_FOO": "bar", "PATH": "/nowhere"}}
    got, pid2, _ = nc.get(environ.options(runtime_env=env).remote("NBC_FOO", "PATH"), timeout=T)
    assert got == {"NBC_FOO": "bar", "PATH": "/nowhere"}
    after, pid3, _ = nc.get(environ.remote("NBC_FOO", "PATH"), timeout=T)
    assert pid == pid2 == pid3  # the same worker ran all three
    assert after == {"NBC_FOO": None, "PATH": path}  # set ones removed, changed ones restored
    # ${NAME} is the worker's own variable, as in Ray; an unset one is empty
    env = {"env_vars": {"PATH": "${PATH}:/extra", "NBC_FOO": "${NBC_UNSET_VAR}x"}}
    got = nc.get(environ.options(runtime_env=env).remote("NBC_FOO", "PATH"), timeout=T)[0]
    assert got == {"NBC_FOO": "x", "PATH": f"{path}:/extra"}


def test_decorator_runtime_env_and_options_replace_it(one_worker):
    f = nc.remote(runtime_env={"env_vars": {"NBC_A": "deco"}})(
        lambda: (os.environ.get("NBC_A"), os.environ.get("NBC_B"))
    )
    assert nc.get(f.remote(), timeout=T) == ("deco", None)
    g = f.options(runtime_env={"env_vars": {"NBC_B": "opt"}})
    assert nc.get(g.remote(), timeout=T) == (None, "opt")


def test_an_actor_keeps_its_env_vars_for_life_and_tasks_do_not_see_them(one_worker):
    a = Holder.options(runtime_env={"env_vars": {"NBC_ACTOR": "yes"}}).remote()
    for _ in range(3):
        got, _pid = nc.get(a.environ.remote("NBC_ACTOR"), timeout=T)
        assert got == {"NBC_ACTOR": "yes"}
    assert nc.get(a.child.remote("NBC_ACTOR"), timeout=T) == {"NBC_ACTOR": "yes"}
    assert nc.get(environ.remote("NBC_ACTOR"), timeout=T)[0] == {"NBC_ACTOR": None}
    plain = Holder.remote()
    assert nc.get(plain.environ.remote("NBC_ACTOR"), timeout=T)[0] == {"NBC_ACTOR": None}


def test_the_jobs_runtime_env_merges_with_a_tasks_as_ray_merges(make_cluster):
    job = {"env_vars": {"NBC_JOB": "job", "NBC_BOTH": "job"}}
    make_cluster(num_cpus=1, runtime_env=job)
    assert nc.get_runtime_context().runtime_env == job
    names = ("NBC_JOB", "NBC_BOTH", "NBC_TASK")
    assert nc.get(environ.remote(*names), timeout=T)[0] == {
        "NBC_JOB": "job", "NBC_BOTH": "job", "NBC_TASK": None,
    }  # fmt: skip
    own = {"env_vars": {"NBC_BOTH": "task", "NBC_TASK": "task"}}
    merged = {"NBC_JOB": "job", "NBC_BOTH": "task", "NBC_TASK": "task"}
    assert nc.get(environ.options(runtime_env=own).remote(*names), timeout=T)[0] == merged
    # a child inherits its parent's merged environment
    assert nc.get(nested.options(runtime_env=own).remote(*names), timeout=T) == merged
    assert nc.get(context_env.options(runtime_env=own).remote(), timeout=T) == {
        "env_vars": merged
    }
    a = Holder.options(runtime_env=own).remote()
    assert nc.get(a.environ.remote(*names), timeout=T)[0] == merged
    # init again while connected replaces the job's environment, and only what it is given
    nc.init(runtime_env={"env_vars": {"NBC_JOB": "again"}})
    nc.init(namespace="elsewhere")
    assert nc.get(environ.remote("NBC_JOB", "NBC_BOTH"), timeout=T)[0] == {
        "NBC_JOB": "again", "NBC_BOTH": None,
    }  # fmt: skip
    assert nc.get_runtime_context().namespace == "elsewhere"
    nc.init(runtime_env={})
    assert nc.get(environ.remote("NBC_JOB"), timeout=T)[0] == {"NBC_JOB": None}


def test_working_dir_is_the_cwd_and_importable_then_forgotten(one_worker, tmp_path):
    wd = tmp_path / "project"
    wd.mkdir()
    (wd / "nbc_wd_helper.py").write_text("VALUE = 'one'\n")
    (wd / "data.txt").write_text("payload\n")
    other = tmp_path / "other"
    other.mkdir()
    (other / "nbc_wd_helper.py").write_text("VALUE = 'two'\n")

    @nc.remote
    def use_it():
        import nbc_wd_helper

        with open("data.txt") as f:
            data = f.read().strip()
        return nbc_wd_helper.VALUE, data, os.getcwd(), os.getpid()

    @nc.remote
    def helper_value():
        try:
            import nbc_wd_helper
        except ImportError:
            return None, os.getcwd(), os.getpid()
        return nbc_wd_helper.VALUE, os.getcwd(), os.getpid()

    value, data, cwd, pid = nc.get(use_it.options(runtime_env={"working_dir": str(wd)}).remote(),
                                   timeout=T)  # fmt: skip
    assert (value, data, cwd) == ("one", "payload", str(wd))
    # the next task on that worker: its own cwd back, the module gone
    value, cwd, pid2 = nc.get(helper_value.remote(), timeout=T)
    assert pid2 == pid and value is None and cwd != str(wd)
    # another directory with a module of the same name gets its own
    got = nc.get(helper_value.options(runtime_env={"working_dir": str(other)}).remote(), timeout=T)
    assert got[0] == "two" and got[2] == pid
    # a relative path is the driver's, resolved where it is written
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        f = helper_value.options(runtime_env={"working_dir": "project"})
    finally:
        os.chdir(old)
    assert nc.get(f.remote(), timeout=T)[:2] == ("one", str(wd))


def test_an_actor_runs_in_its_working_dir(one_worker, tmp_path):
    (tmp_path / "nbc_actor_helper.py").write_text("def hello():\n    return 'hi'\n")

    @nc.remote
    class UsesHelper:
        def call(self):
            import nbc_actor_helper

            return nbc_actor_helper.hello(), os.getcwd()

    a = UsesHelper.options(runtime_env={"working_dir": str(tmp_path)}).remote()
    assert nc.get(a.call.remote(), timeout=T) == ("hi", str(tmp_path))


def test_py_modules_are_importable(one_worker, tmp_path):
    pkg = tmp_path / "nbc_pkg_mod"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("NAME = 'pkg'\n")

    @nc.remote
    def name():
        import nbc_pkg_mod

        return nbc_pkg_mod.NAME

    assert nc.get(name.options(runtime_env={"py_modules": [str(pkg)]}).remote(), timeout=T) == "pkg"
    with pytest.raises(exc.TaskError, match="No module named 'nbc_pkg_mod'"):
        nc.get(name.remote(), timeout=T)


@pytest.mark.parametrize("key,value", [
    ("pip", ["requests"]), ("conda", "env"), ("uv", ["x"]), ("container", {"image": "x"}),
    ("image_uri", "docker.io/x"), ("plugins", {}),
])  # fmt: skip
def test_keys_that_install_are_refused_where_written(cluster, key, value):
    why = rf"runtime_env\['{key}'\] is not supported: nbcluster does not install environments"
    with pytest.raises(ValueError, match=why):
        environ.options(runtime_env={key: value})
    with pytest.raises(ValueError, match=why):
        nc.remote(runtime_env={key: value})(lambda: 1)
    with pytest.raises(ValueError, match=why):
        Holder.options(runtime_env={key: value})
    with pytest.raises(ValueError, match=why):
        nc.init(runtime_env={key: value})
    assert nc.get(environ.remote(), timeout=T)[0] == {}  # the cluster keeps running


def test_bad_runtime_envs_say_what_is_wrong(cluster, tmp_path):
    with pytest.raises(ValueError, match="unknown key 'workdir'"):
        environ.options(runtime_env={"workdir": "."})
    with pytest.raises(TypeError, match=r"env_vars'\] must be of type Dict\[str, str\]"):
        environ.options(runtime_env={"env_vars": {"N": 1}})
    with pytest.raises(ValueError, match="is not a directory"):
        environ.options(runtime_env={"working_dir": str(tmp_path / "missing")})
    with pytest.raises(ValueError, match="does not download working_dir from URIs"):
        environ.options(runtime_env={"working_dir": "s3://bucket/code.zip"})
    with pytest.raises(ValueError, match="does not download or install modules"):
        environ.options(runtime_env={"py_modules": ["pkg-1.0-py3-none-any.whl"]})
    with pytest.raises(TypeError, match=r"runtime_env' must be one of \(dict"):
        environ.options(runtime_env=["env_vars"])


def test_a_working_dir_missing_on_the_node_fails_the_task_saying_so(cluster, tmp_path):
    wd = tmp_path / "gone"
    wd.mkdir()
    f = environ.options(runtime_env={"working_dir": str(wd)})
    shutil.rmtree(wd)  # as on a machine that does not share it
    with pytest.raises(exc.TaskError, match="must be at the same path on every node"):
        nc.get(f.remote(), timeout=T)
    assert nc.get(environ.remote(), timeout=T)[0] == {}


def test_runtime_env_objects_as_rays(cluster, tmp_path):
    env = RuntimeEnv(env_vars={"NBC_OBJ": "1"}, working_dir=str(tmp_path))
    assert env == {"env_vars": {"NBC_OBJ": "1"}, "working_dir": str(tmp_path)}
    assert RuntimeEnv.deserialize(env.serialize()) == env
    vars_, _, cwd = nc.get(environ.options(runtime_env=env).remote("NBC_OBJ"), timeout=T)
    assert vars_ == {"NBC_OBJ": "1"} and cwd == str(tmp_path)
    with pytest.raises(ValueError, match="does not install environments"):
        RuntimeEnv(pip=["requests"])
    config = RuntimeEnvConfig(setup_timeout_seconds=10)
    assert nc.get(environ.options(runtime_env={"config": config}).remote(), timeout=T)[0] == {}


def test_the_drivers_runtime_context_has_no_env_by_default(cluster):
    assert nc.get_runtime_context().runtime_env == {}
    assert nc.get(context_env.remote(), timeout=T) == {}
    assert Path(nc.get(environ.remote(), timeout=T)[2]).is_dir()
