"""Helpers for tests/e2e/test_chart.py: render the chart with the real helm, index
the objects, and find the Kubernetes API calls in cloud_bridge/ (for RBAC).

``api_permissions_used()`` reads cloud_bridge's source with ``ast``: every
reference to a method of the kubernetes client's API classes (called directly,
or passed to ``asyncio.to_thread``/``ChangeWatch``) becomes the (group,
resource, verb) that method needs, taken from the client's own request path
and HTTP method; custom-object calls get their group and plural from the
constants the call passes.
"""

from __future__ import annotations

import ast
import functools
import inspect
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.kube import REPO, helm_path

CHART = REPO / "charts" / "edgefleet"
BRIDGE_SRC = REPO / "cloud_bridge"

# --- helm without a cluster -------------------------------------------------------------


def helm(tmp_path: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """helm with its cache/config/data dirs under ``tmp_path`` (never ~/.cache/helm)."""
    env = dict(os.environ)
    for kind in ("CACHE", "CONFIG", "DATA"):
        env[f"HELM_{kind}_HOME"] = str(tmp_path / "helm" / kind.lower())
    proc = subprocess.run([helm_path(), *args], capture_output=True, text=True, timeout=120, env=env, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def values_file(tmp_path: Path, values: dict[str, Any]) -> Path:
    path = tmp_path / f"values-{len(list(tmp_path.glob('values-*')))}.json"
    path.write_text(json.dumps(values))  # JSON is YAML
    return path


@dataclass
class Rendered:
    objects: list[dict[str, Any]]

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        found = [
            o
            for o in self.objects
            if o["kind"] == kind
            and o["metadata"]["name"] == name
            and (namespace is None or o["metadata"].get("namespace") == namespace)
        ]
        assert len(found) == 1, f"{kind}/{name}: {len(found)} objects; have {self.names()}"
        return found[0]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def names(self) -> set[tuple[str, str]]:
        return {(o["kind"], o["metadata"]["name"]) for o in self.objects}


def render(tmp_path: Path, release: str, namespace: str, values: dict[str, Any] | None = None) -> Rendered:
    args = ["template", release, str(CHART), "-n", namespace]
    if values:
        args += ["--values", str(values_file(tmp_path, values))]
    out = helm(tmp_path, *args).stdout
    return Rendered([doc for doc in yaml.safe_load_all(out) if doc])


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    spec = deployment["spec"]["template"]["spec"]
    found = [c for c in [*spec.get("initContainers", []), *spec["containers"]] if c["name"] == name]
    assert len(found) == 1, f"no container {name} in {deployment['metadata']['name']}"
    return found[0]


def expand_env(args: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' ``$(VAR)`` expansion in container args."""
    return [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), a) for a in args]


def flag_values(args: list[str]) -> dict[str, str]:
    """``--name=value`` args as a dict (``--flag`` alone maps to "")."""
    out: dict[str, str] = {}
    for arg in args:
        assert arg.startswith("--"), f"argument {arg!r} is not a --flag"
        name, _, value = arg.partition("=")
        out[name] = value
    return out


# --- RBAC: rules of rendered roles -------------------------------------------------------


def role_permissions(objects: list[dict[str, Any]]) -> set[tuple[str, str, str, str | None, str | None]]:
    """(group, resource, verb, namespace, resourceName) of every ClusterRole/Role rule, flattened."""
    perms = set()
    for obj in objects:
        if obj["kind"] not in ("ClusterRole", "Role"):
            continue
        namespace = obj["metadata"]["namespace"] if obj["kind"] == "Role" else None
        for rule in obj.get("rules", []):
            for group in rule.get("apiGroups", []):
                for resource in rule.get("resources", []):
                    for verb in rule.get("verbs", []):
                        for name in rule.get("resourceNames") or [None]:
                            perms.add((group, resource, verb, namespace, name))
    return perms


# --- the API calls in cloud_bridge/ -------------------------------------------------------

_HTTP_VERB = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
_METHOD_NAME = re.compile(r"^(create|read|list|patch|replace|delete|get|connect)_\w+$")
_WATCHERS = {"ChangeWatch", "stream"}


@functools.cache
def _endpoint(method: str) -> tuple[str, str, list[str]] | None:
    """(HTTP method, path, parameter names) of a kubernetes client API method, or None."""
    from kubernetes import client

    for attr in dir(client):
        cls = getattr(client, attr)
        if not (isinstance(cls, type) and attr.endswith("Api")):
            continue
        serializer = getattr(cls, f"_{method}_serialize", None)
        if serializer is None:
            continue
        found = re.findall(r"method='(\w+)',\s*resource_path='([^']+)'", inspect.getsource(serializer))
        assert len(found) == 1, f"cannot read the request of {attr}.{method}"
        params = [p for p in inspect.signature(getattr(cls, method)).parameters if p != "self"]
        return found[0][0], found[0][1], params
    return None


@functools.cache
def _constants() -> dict[str, str]:
    """Module-level string constants of cloud_bridge (``GROUP = "edgefleet.io"``...)."""
    values: dict[str, str] = {}
    trees = [ast.parse(p.read_text()) for p in sorted(BRIDGE_SRC.rglob("*.py"))]
    for _ in range(3):  # f-strings of other constants
        for tree in trees:
            for node in tree.body:
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                    value = _evaluate(node.value, values)
                    if value is not None:
                        values.setdefault(node.targets[0].id, value)
    return values


def _evaluate(node: ast.AST, constants: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    if isinstance(node, ast.Attribute):
        return constants.get(node.attr)
    if isinstance(node, ast.JoinedStr):
        parts = [_evaluate(v.value if isinstance(v, ast.FormattedValue) else v, constants) for v in node.values]
        return None if None in parts else "".join(p for p in parts if p is not None)
    return None


@dataclass(frozen=True, order=True)
class ApiUse:
    group: str
    resource: str
    verb: str
    where: str


def _uses(method: str, args: list[ast.expr], keywords: list[ast.keyword], watched: bool, where: str) -> list[ApiUse]:
    endpoint = _endpoint(method)
    if endpoint is None:
        return []
    http, path, params = endpoint
    bound: dict[str, str | None] = {}
    constants = _constants()
    for name, node in zip(params, args, strict=False):
        bound[name] = _evaluate(node, constants)
    for kw in keywords:
        if kw.arg:
            bound[kw.arg] = _evaluate(kw.value, constants)
        if kw.arg == "watch" and isinstance(kw.value, ast.Constant) and kw.value.value is True:
            watched = True

    def fill(segment: str) -> str:
        if segment.startswith("{") and segment[1:-1] in ("group", "plural"):
            value = bound.get(segment[1:-1])
            assert value, f"{where}: {method} - cannot tell its {segment} from the call; name a module constant"
            return value
        return segment

    segments = [fill(s) for s in path.strip("/").split("/")]
    if segments[0] == "api":
        group, rest = "", segments[2:]
    else:
        group, rest = segments[1], segments[3:]
    if rest[:2] == ["namespaces", "{namespace}"] and len(rest) > 2:
        rest = rest[2:]
    resource = rest[0]
    named = len(rest) > 1 and rest[1] == "{name}"
    if named and len(rest) > 2:
        resource = f"{resource}/{rest[2]}"
    if http == "GET":
        verbs = ["get"] if named else (["list", "watch"] if watched else ["list"])
    elif http == "DELETE" and not named:
        verbs = ["deletecollection"]
    else:
        verbs = [_HTTP_VERB[http]]
    return [ApiUse(group, resource, v, where) for v in verbs]


def api_permissions_used() -> list[ApiUse]:
    uses: list[ApiUse] = []
    for path in sorted(BRIDGE_SRC.rglob("*.py")):
        tree = ast.parse(path.read_text())
        seen: set[int] = set()
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            func = node.func
            if isinstance(func, ast.Attribute) and _METHOD_NAME.match(func.attr):
                seen.add(id(func))
                uses += _uses(func.attr, node.args, node.keywords, False, where)
            callee = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            for i, arg in enumerate(node.args):  # passed as a function: to_thread(fn, *args), ChangeWatch(fn)
                if isinstance(arg, ast.Attribute) and _METHOD_NAME.match(arg.attr):
                    seen.add(id(arg))
                    uses += _uses(arg.attr, node.args[i + 1 :], node.keywords, callee in _WATCHERS, where)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and id(node) not in seen and _METHOD_NAME.match(node.attr):
                uses += _uses(node.attr, [], [], False, f"{path.relative_to(REPO)}:{node.lineno}")
    return sorted(set(uses))
