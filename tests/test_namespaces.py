"""Named actors live in namespaces, as in Ray: ``init(namespace=...)`` sets the job's, which
its tasks and actors inherit; ``.options(namespace=...)`` and ``get_actor(..., namespace=...)``
name another one."""

from __future__ import annotations

import pytest

import nbcluster as nc

T = 30


@nc.remote
class Named:
    def __init__(self, tag):
        self.tag = tag

    def get_tag(self):
        return self.tag

    def namespace(self):
        return nc.get_runtime_context().namespace

    def lookup(self, name):
        return nc.get(nc.get_actor(name).get_tag.remote(), timeout=T)


@nc.remote
def lookup(name):
    try:
        return nc.get(nc.get_actor(name).get_tag.remote(), timeout=T)
    except ValueError:
        return None


@nc.remote
def task_namespace():
    return nc.get_runtime_context().namespace


def test_the_jobs_namespace_scopes_named_actors(make_cluster):
    make_cluster(num_cpus=2, namespace="team-a")
    assert nc.get_runtime_context().namespace == "team-a"
    assert nc.get(task_namespace.remote(), timeout=T) == "team-a"
    mine = Named.options(name="shared-name").remote("mine")
    theirs = Named.options(name="shared-name", namespace="team-b").remote("theirs")
    assert nc.get(nc.get_actor("shared-name").get_tag.remote(), timeout=T) == "mine"
    got = nc.get_actor("shared-name", namespace="team-b")
    assert nc.get(got.get_tag.remote(), timeout=T) == "theirs"
    with pytest.raises(ValueError, match="Failed to look up actor"):
        nc.get_actor("shared-name", namespace="default")
    # tasks and actors of the job look names up in the job's namespace
    assert nc.get(lookup.remote("shared-name"), timeout=T) == "mine"
    assert nc.get(theirs.namespace.remote(), timeout=T) == "team-a"
    assert nc.get(theirs.lookup.remote("shared-name"), timeout=T) == "mine"
    assert nc.util.list_named_actors() == ["shared-name"]
    everywhere = nc.util.list_named_actors(all_namespaces=True)
    assert sorted(everywhere, key=lambda a: a["namespace"]) == [
        {"name": "shared-name", "namespace": "team-a"},
        {"name": "shared-name", "namespace": "team-b"},
    ]
    del mine, theirs


def test_without_a_namespace_names_are_in_the_default_one(cluster):
    assert nc.get_runtime_context().namespace == "default"
    a = Named.options(name="in-default").remote("d")
    found = nc.get_actor("in-default", namespace="default")
    assert nc.get(found.get_tag.remote(), timeout=T) == "d"
    assert nc.get(lookup.remote("in-default"), timeout=T) == "d"
    del a


def test_an_empty_namespace_is_refused(cluster):
    with pytest.raises(ValueError, match='"" is not a valid namespace'):
        nc.init(namespace="")
    with pytest.raises(ValueError, match='"" is not a valid namespace'):
        Named.options(name="x", namespace="")
    with pytest.raises(TypeError, match="namespace must be None or a string"):
        nc.init(namespace=3)
