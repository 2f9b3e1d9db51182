"""Two real users on one machine, as on a JupyterHub host: each has their own clusters and
session files, neither can see, read or hijack the other's, and tokens never show in ``ps``.

The second user is a real OS account (``useradd`` here, ``userdel`` after). Both users'
processes run with a temp directory of the test's own (mounted over ``/tmp`` in a private
mount namespace, sticky and world-writable like the real one) and with nothing that points
nbcluster elsewhere (no ``NBCLUSTER_TEMP_DIR``, no ``XDG_RUNTIME_DIR``): exactly the default
path a user's kernel takes, without touching the machine's real ``/tmp``.
"""

from __future__ import annotations

import json
import os
import pwd
import shlex
import shutil
import site
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from cluster_helpers import REPO_ROOT, TESTS_DIR, CliCluster, kill_quietly, poll
from parts import missing
from traverse import TraverseGrant

pytestmark = pytest.mark.timeout(180)


@dataclass(frozen=True)
class OsUser:
    name: str
    uid: int
    gid: int
    #: A Python interpreter this user can run (ours may live where only root can reach).
    python: str = sys.executable


def _drop_to(uid: int, gid: int) -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--init-groups", "--"]


#: Imports nbcluster and starts a child with the same interpreter, as nbcluster does.
_PROBE = "import subprocess, sys, nbcluster; subprocess.run([sys.executable, '-c', ''], check=True)"


def _python_for(uid: int, gid: int) -> str | None:
    """The first interpreter of our Python version that this user can run with nbcluster
    and its dependencies importable (``Host.env`` puts our site-packages on the path)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [sys.executable, f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"]
    for python in dict.fromkeys(candidates):
        probe = subprocess.run(
            [*_drop_to(uid, gid), python, "-c", _PROBE], capture_output=True, timeout=60,
            env=Host.env(), cwd="/", check=False,
        )  # fmt: skip
        if probe.returncode == 0:
            return python
    return None


@pytest.fixture(scope="module")
def other_user() -> Iterator[OsUser]:
    """A real second user account, removed (with every process it still runs) afterwards."""
    if os.geteuid() != 0:
        missing("root", "creating a second user account needs root")
    for tool in ("useradd", "userdel", "unshare", "setpriv"):
        if shutil.which(tool) is None:
            missing(tool, f"`{tool}` (util-linux / passwd) is not installed")
    name = f"nbct{os.getpid()}"
    made = subprocess.run(
        ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    if made.returncode != 0:
        missing("useradd", f"cannot create a user: {made.stderr.strip()}")
    entry = pwd.getpwnam(name)

    def theirs() -> list[psutil.Process]:
        return [p for p in psutil.process_iter(["uids"]) if p.info["uids"].real == entry.pw_uid]

    interpreter = Path(os.path.realpath(sys.executable))  # a venv's python is a symlink
    grant = TraverseGrant([Path(sys.prefix), interpreter.parent, Path(sys.base_prefix),
                           REPO_ROOT, *map(Path, site.getsitepackages())])  # fmt: skip
    grant.acquire()
    try:
        python = _python_for(entry.pw_uid, entry.pw_gid)
        if python is None:
            missing("python", "no interpreter of this version that a second user can run")
        yield OsUser(name, entry.pw_uid, entry.pw_gid, python)
    finally:
        kill_quietly(theirs())
        poll(lambda: not theirs(), 10, "the second user's processes did not exit")
        subprocess.run(["userdel", name], capture_output=True, timeout=30, check=False)
        grant.release()


_TMP = Path("/tmp").resolve()


def _under_tmp() -> list[Path]:
    """The outermost of the paths these processes need that lie under the real /tmp."""
    wanted = {REPO_ROOT, TESTS_DIR, Path(sys.prefix), *map(Path, site.getsitepackages())}
    under = {p.resolve() for p in wanted if p.resolve().is_relative_to(_TMP)}
    return sorted(p for p in under if not any(p != q and p.is_relative_to(q) for q in under))


class Host:
    """Runs commands as root or as the other user, all seeing ``tmp`` as their ``/tmp``."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[str]] = []
        self.keep = _under_tmp()
        for path in self.keep:
            (tmp / path.relative_to(_TMP)).mkdir(parents=True, exist_ok=True)

    def argv(self, user: OsUser | None, argv: list[str]) -> list[str]:
        drop = [] if user is None else _drop_to(user.uid, user.gid)
        if user is not None and argv[0] == sys.executable:
            argv = [user.python, *argv[1:]]
        # What lives under the real /tmp and must stay in sight (this checkout, its virtual
        # environment) is bound into the test's directory first, at the same place.
        keep = "".join(
            f"mount --bind {shlex.quote(str(p))} {shlex.quote(str(self.tmp / p.relative_to(_TMP)))}"
            " && " for p in self.keep
        )  # fmt: skip
        script = f'{keep}mount --rbind "$0" /tmp && exec "$@"'
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                str(self.tmp), *drop, *argv]  # fmt: skip

    @staticmethod
    def env() -> dict[str, str]:
        drop = ("NBCLUSTER_", "XDG_RUNTIME_DIR", "TMPDIR", "PYTEST_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
        env.update(HOME="/tmp", PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1",
                   PYTHONPATH=os.pathsep.join((str(REPO_ROOT), str(TESTS_DIR),
                                               *site.getsitepackages())))  # fmt: skip
        return env

    def run(self, user: OsUser | None, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(user, list(argv)), capture_output=True, text=True, timeout=60,
            env=self.env(), cwd=str(REPO_ROOT), stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip

    def python(self, user: OsUser | None, code: str, *args: str) -> Any:
        return self.run(user, sys.executable, "-c", code, *args)

    def nbcluster(self, user: OsUser | None, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(user, sys.executable, "-m", "nbcluster", *args)

    def start(self, user: OsUser | None, code: str, *args: str) -> tuple[Any, dict[str, Any]]:
        """Start a long-running script that prints ``READY <json>``; return it and the JSON."""
        proc = subprocess.Popen(
            self.argv(user, [sys.executable, "-c", code, *args]), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env(),
            cwd=str(REPO_ROOT),
        )  # fmt: skip
        self.procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("READY "):
            proc.kill()
            raise AssertionError(f"script did not start: {line}{proc.communicate()[1]}")
        return proc, json.loads(line[len("READY ") :])

    def close(self) -> None:
        self.nbcluster(None, "stop")  # what a test started with `nbcluster start`, if any
        for proc in self.procs:
            if proc.poll() is None:
                assert proc.stdin is not None
                proc.stdin.close()  # the script ends, and its cluster with it
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def host(other_user: OsUser) -> Iterator[Host]:
    # Not under pytest's own temp dir: that is private to root, and the other user needs
    # its /tmp. Sticky and world-writable, as /tmp is.
    tmp = Path(tempfile.mkdtemp(prefix="nbcluster-host-tmp-"))
    tmp.chmod(0o1777)
    host = Host(tmp)
    try:
        yield host
    finally:
        host.close()
        shutil.rmtree(tmp, ignore_errors=True)


#: A user's script with a cluster of its own: says where it is, runs until stdin closes.
OWN_CLUSTER = r"""
import json, os, sys
import nbcluster as nc
info = nc.init(num_cpus=1)
print("READY", json.dumps({"address": info["address"], "token_file": info.get("token_file"),
                           "pid": os.getpid()}), flush=True)
sys.stdin.readline()
"""

#: The attacker: starts a cluster of its own, then, before the victim ever ran nbcluster,
#: plants what would point the victim's tools at it — in the layout nbcluster used to trust
#: (``/tmp/nbcluster/current_cluster.json``) and in the victim's per-uid directory (a
#: world-writable directory holding a record of the attacker's head, or a symbolic link to
#: the attacker's own directory).
ATTACKER = r"""
import glob, json, os, shutil, sys
import nbcluster as nc
victim_uid, how = int(sys.argv[1]), sys.argv[2]
info = nc.init(num_cpus=1)
token = open(os.path.join(info["session_dir"], "token")).read()

def plant(path, text, mode=0o666):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)

old = "/tmp/nbcluster"
os.makedirs(old + "/evil", exist_ok=True)
for d in (old, old + "/evil"):
    os.chmod(d, 0o777)
plant(old + "/evil/token", token)
plant(old + "/current_cluster.json",
      json.dumps({"address": info["address"], "session_dir": old + "/evil", "pid": os.getpid()}))

mine = os.path.dirname(info["session_dir"])  # the attacker's own directory
theirs = f"/tmp/nbcluster-{victim_uid}"
if how == "symlink":
    os.symlink(mine, theirs)
    os.chmod(mine, 0o755)
else:
    os.makedirs(theirs + "/clusters")
    for d in (theirs, theirs + "/clusters"):
        os.chmod(d, 0o777)
    for record in glob.glob(mine + "/clusters/*.json"):
        data = json.load(open(record))
        data["token_file"] = old + "/evil/token"
        plant(theirs + "/clusters/" + os.path.basename(record), json.dumps(data))
print("READY", json.dumps({"address": info["address"], "planted": theirs}), flush=True)
sys.stdin.readline()
"""

VICTIM = r"""
import nbcluster as nc
nc.init(address="auto")
print("ATTACHED TO", nc.nodes()[0]["Address"])
"""


@pytest.mark.parametrize("how", ["open-directory", "symlink"])
def test_a_planted_session_directory_cannot_point_a_user_at_someone_elses_cluster(
    host: Host, other_user: OsUser, how: str
) -> None:
    _, evil = host.start(other_user, ATTACKER, str(os.getuid()), how)
    planted = evil["planted"]
    # The victim's script looks for "the local cluster": it must not attach to the
    # attacker's (whose results it would unpickle) and must say which path it refused.
    victim = host.python(None, VICTIM)
    assert "ATTACHED TO" not in victim.stdout, victim.stdout
    assert victim.returncode != 0
    assert f"refusing to use {planted}" in victim.stderr, victim.stderr
    # The CLI refuses the same way, in one line.
    status = host.nbcluster(None, "status")
    assert status.returncode == 1 and "Nodes:" not in status.stdout, status.stdout
    assert status.stderr.strip().splitlines() == [
        next(ln for ln in status.stderr.splitlines() if ln.startswith("nbcluster status: "))
    ], status.stderr
    assert f"refusing to use {planted}" in status.stderr
    assert "symbolic link" in status.stderr if how == "symlink" else "belongs to" in status.stderr


def test_two_users_clusters_on_one_machine_stay_apart(host: Host, other_user: OsUser) -> None:
    _, theirs = host.start(other_user, OWN_CLUSTER)
    _, mine = host.start(None, OWN_CLUSTER)
    assert theirs["address"] != mine["address"]
    for user, own in ((other_user, theirs), (None, mine)):
        listed = host.nbcluster(user, "clusters", "--format", "json")
        assert [c["address"] for c in json.loads(listed.stdout)] == [own["address"]], listed
        auto = host.python(user, VICTIM)
        assert f"ATTACHED TO {own['address']}" in auto.stdout, auto.stderr
    # My session files are mine alone: the other user can neither list nor read them.
    mine_dir = str(Path(mine["token_file"]).parent.parent)
    assert mine_dir == f"/tmp/nbcluster-{os.getuid()}"
    peek = host.python(
        other_user,
        "import os, sys\n"
        "for call in (lambda: os.listdir(sys.argv[1]), lambda: open(sys.argv[2]).read()):\n"
        "    try: call(); print('READ')\n"
        "    except PermissionError: print('DENIED')\n",
        mine_dir, mine["token_file"],
    )  # fmt: skip
    assert peek.stdout.split() == ["DENIED", "DENIED"], peek
    # `nbcluster stop` is per user: the other user's stops nothing of mine.
    head = host.nbcluster(None, "start", "--head", "--num-cpus", "1")
    assert head.returncode == 0, head.stderr
    theirs_stop = host.nbcluster(other_user, "stop")
    assert theirs_stop.returncode == 0, theirs_stop.stderr
    assert "no nodes started with `nbcluster start` are running for you" in theirs_stop.stdout
    mine_now = host.nbcluster(None, "clusters", "--format", "json")
    assert len(json.loads(mine_now.stdout)) == 2, mine_now  # my script's and my head
    stopped = host.nbcluster(None, "stop")
    assert stopped.stdout.startswith("stopped head node at "), stopped


def test_tokens_never_show_on_a_command_line(
    tmp_path: Path, host: Host, other_user: OsUser
) -> None:
    cluster = CliCluster(tmp_path)
    try:
        head = cluster.cli("start", "--head", "--num-cpus", "1")
        assert head.returncode == 0, head.stderr
        token_file = head.stdout.split("token file: ", 1)[1].split()[0]
        token = Path(token_file).read_text().strip()
        assert token not in head.stdout + head.stderr  # printed only when asked
        address = head.stdout.split("started at ", 1)[1].split()[0]
        node = cluster.cli("start", "--address", address, "--token-file", token_file,
                           "--num-cpus", "1")  # fmt: skip
        assert node.returncode == 0, node.stderr
        # What every user of the machine sees of every process's command line.
        ps = host.run(other_user, "ps", "-eo", "args", "ww")
        assert ps.returncode == 0 and "nbcluster" in ps.stdout, ps
        assert token not in ps.stdout
        shown = cluster.cli("start", "--head", "--num-cpus", "1", "--show-token").stdout
        shown_file = Path(shown.split("token file: ", 1)[1].split()[0])
        assert f"token: {shown_file.read_text()}" in shown
    finally:
        cluster.cli("stop")
