"""The README points only at things in this repository, and its quick start is two commands."""

from __future__ import annotations

import re

from cluster_helpers import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()


def test_every_link_and_path_stays_inside_the_repository() -> None:
    targets = re.findall(r"\]\(([^)\s]+)\)", README)
    local = [t for t in targets if not re.match(r"[a-z]+://", t) and not t.startswith("#")]
    assert local, "the README links nothing of its own?"
    for target in local:
        path = (REPO_ROOT / target.split("#")[0]).resolve()
        assert path.is_relative_to(REPO_ROOT), target
        assert path.exists(), f"the README links {target}, which is not in the repository"
    assert "../" not in README, "the README names a path outside the repository"


def test_the_quick_start_is_two_commands() -> None:
    start = README.index("\n## Quick start\n")
    section = README[start : README.index("\n## ", start + 1)]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    assert [len(b.strip().splitlines()) for b in blocks] == [1, 1], blocks
