"""The package layout: one installed name, layers that import only downward, short functions."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Repository folder -> installed package (pyproject's package-dir mapping).
FOLDERS = {
    "optscale_jax": "optscale_jax",
    "sim": "optscale_jax.sim",
    "figures": "optscale_jax.figures",
    "experiments": "optscale_jax.experiments",
}
LAYERS = {"optscale_jax": 0, "optscale_jax.sim": 1, "optscale_jax.figures": 1,
          "optscale_jax.experiments": 2}  # fmt: skip
HEAVY = ("vllm", "torch", "transformers")


def _modules() -> dict[str, pathlib.Path]:
    modules = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([package, *parts])] = path
    return modules


MODULES = _modules()


def _layer(module: str) -> int:
    return max(rank for package, rank in LAYERS.items() if module.startswith(package))


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _imports(module: str) -> set[str]:
    """Project modules that `module` imports anywhere: top level, inside functions, or by
    name through `importlib.import_module` (a string constant naming a project module)."""
    path = MODULES[module]
    package = module if _is_package(module) else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from package import module` imports the module; parents' __init__ do not count.
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.add(node.value)
    return {name for name in found if name in MODULES and name != module}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_between_modules():
    graph = {module: _imports(module) for module in MODULES}
    assert _find_cycle(graph) is None, " -> ".join(_find_cycle(graph))


def test_layers_import_only_downward():
    upward = [
        f"{module} imports {target}"
        for module in MODULES
        for target in _imports(module)
        if _layer(target) > _layer(module)
    ]
    assert not upward, "\n".join(upward)


def test_cycle_finder_finds_a_planted_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_library_imports_heavy_packages_only_inside_functions():
    offenders = []
    for module, path in MODULES.items():
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{module}: {name}" for name in names if name.split(".")[0] in HEAVY]
    assert not offenders, offenders


def test_no_function_longer_than_100_lines():
    long = []
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > 100:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length})")
    assert not long, long


@pytest.mark.slow
def test_wheel_installs_one_top_level_name(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--quiet", "-w", str(tmp_path), str(ROOT)],
        check=True, cwd=tmp_path,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("optscale_jax-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"optscale_jax"}
    # Every module of the four folders is in the wheel, at its installed path.
    expected = {
        module.replace(".", "/") + ("/__init__.py" if path.name == "__init__.py" else ".py")
        for module, path in MODULES.items()
    }
    assert expected <= set(names), sorted(expected - set(names))
    assert "optscale_jax/data/README.md" in names
