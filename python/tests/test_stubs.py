"""The type stubs (__init__.pyi) match the code: same classes, methods, parameters, defaults."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

import hannoy

pytestmark = pytest.mark.nolib

PKG = Path(hannoy.__file__).resolve().parent
STUB = PKG / "__init__.pyi"

DUNDERS = {
    "__init__",
    "__enter__",
    "__exit__",
    "__contains__",
    "__len__",
    "__repr__",
    "__str__",
    "__format__",
    "__reduce__",
    "_repr_html_",
}


def _stub_tree() -> ast.Module:
    return ast.parse(STUB.read_text(encoding="utf-8"))


def _stub_classes() -> Dict[str, ast.ClassDef]:
    return {n.name: n for n in _stub_tree().body if isinstance(n, ast.ClassDef)}


def _decorators(fn: ast.FunctionDef) -> List[str]:
    out = []
    for d in fn.decorator_list:
        if isinstance(d, ast.Name):
            out.append(d.id)
        elif isinstance(d, ast.Attribute):
            out.append(d.attr)
    return out


def _stub_params(fn: ast.FunctionDef) -> List[Tuple[str, str, object]]:
    a = fn.args
    out: List[Tuple[str, str, object]] = []
    positional = a.posonlyargs + a.args
    defaults = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
    for arg, default in zip(positional, defaults):
        out.append((arg.arg, "POSITIONAL_OR_KEYWORD", _default(default)))
    if a.vararg:
        out.append((a.vararg.arg, "VAR_POSITIONAL", inspect.Parameter.empty))
    for arg, default in zip(a.kwonlyargs, a.kw_defaults):
        out.append((arg.arg, "KEYWORD_ONLY", _default(default)))
    if a.kwarg:
        out.append((a.kwarg.arg, "VAR_KEYWORD", inspect.Parameter.empty))
    return out


_ANY = object()


def _default(node: object) -> object:
    if node is None:
        return inspect.Parameter.empty
    if isinstance(node, ast.Constant) and node.value is Ellipsis:
        return _ANY
    return ast.literal_eval(node)  # type: ignore[arg-type]


def _runtime_params(fn: object) -> List[Tuple[str, str, object]]:
    sig = inspect.signature(fn)  # type: ignore[arg-type]
    return [(p.name, p.kind.name, p.default) for p in sig.parameters.values()]


def _same(stub: List[Tuple[str, str, object]], runtime: List[Tuple[str, str, object]]) -> bool:
    if len(stub) != len(runtime):
        return False
    for (sn, sk, sd), (rn, rk, rd) in zip(stub, runtime):
        if sn != rn or sk != rk:
            return False
        if sd is _ANY:
            if rd is inspect.Parameter.empty:
                return False
        elif sd != rd or (sd is inspect.Parameter.empty) != (rd is inspect.Parameter.empty):
            return False
    return True


@pytest.mark.parametrize("name", ["Metric", "Database", "Writer", "Reader"])
def test_class_members_match(name: str) -> None:
    cls = getattr(hannoy, name)
    stub = _stub_classes()[name]
    stub_members: Dict[str, List[ast.FunctionDef]] = {}
    for node in stub.body:
        if isinstance(node, ast.FunctionDef):
            stub_members.setdefault(node.name, []).append(node)
    runtime_members = {
        k
        for k, v in vars(cls).items()
        if (not k.startswith("_") or k in DUNDERS) and not isinstance(v, hannoy.Metric)
    }
    if name == "Metric":
        runtime_members -= {"__init__"}
    assert set(stub_members) == runtime_members

    for member, defs in stub_members.items():
        static = inspect.getattr_static(cls, member)
        decorators = _decorators(defs[0])
        if "property" in decorators:
            assert isinstance(static, property), member
            continue
        if "staticmethod" in decorators:
            assert isinstance(static, staticmethod), member
        runtime = _runtime_params(getattr(cls, member))
        if "overload" in decorators:
            # every overload is a specialisation of the runtime signature: same names, kinds
            for d in defs:
                names = [p[0] for p in _stub_params(d)]
                assert set(names) == {p[0] for p in runtime}, (member, names)
            continue
        assert len(defs) == 1, member
        assert _same(_stub_params(defs[0]), runtime), (member, _stub_params(defs[0]), runtime)


def test_metric_members_match() -> None:
    stub = _stub_classes()["Metric"]
    values = {}
    for node in stub.body:
        if isinstance(node, ast.Assign):
            values[node.targets[0].id] = ast.literal_eval(node.value)  # type: ignore[attr-defined]
    assert values == {m.name: m.value for m in hannoy.Metric}


def test_exceptions_match() -> None:
    classes = _stub_classes()
    for name, node in classes.items():
        if name in ("Metric", "Database", "Writer", "Reader"):
            continue
        cls = getattr(hannoy, name)
        bases = [b.id for b in node.bases if isinstance(b, ast.Name)]
        assert [b.__name__ for b in cls.__bases__] == bases, name
    exported = {
        k for k, v in vars(hannoy).items() if isinstance(v, type) and issubclass(v, BaseException)
    }
    assert exported == {n for n in classes if n not in ("Metric", "Database", "Writer", "Reader")}


def test_module_functions_match() -> None:
    tree = _stub_tree()
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    runtime = {
        k
        for k, v in vars(hannoy).items()
        if inspect.isfunction(v) and not k.startswith("_") and v.__module__ == "hannoy"
    }
    assert set(funcs) == runtime
    for name, node in funcs.items():
        assert _same(_stub_params(node), _runtime_params(getattr(hannoy, name))), name


def test_py_typed_present() -> None:
    assert (PKG / "py.typed").exists()
