"""The install files agree with each other, with the code and with what Unsloth declares.

scripts/check_locks.sh (run by CI) proves the GPU install resolves and the locks are current;
these tests check what a resolver cannot: that the locks hold the versions the ranges promise.
"""

import ast
import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _lock(name: str, python: str = "3.11") -> dict[str, str]:
    """{distribution: version} from a uv lock, for Linux x86_64 and the given Python."""
    env = {**default_environment(), "sys_platform": "linux", "platform_system": "Linux",
           "platform_machine": "x86_64", "python_version": python,
           "python_full_version": f"{python}.0"}
    pins = {}
    for line in (ROOT / "locks" / name).read_text().splitlines():
        if not line or line.startswith((" ", "#")):
            continue
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate(env):
            pins[canonicalize_name(req.name)] = str(req.specifier).removeprefix("==")
    return pins


def _requirements(path: Path) -> list[Requirement]:
    lines = (re.sub(r"#.*", "", l).strip() for l in path.read_text().splitlines())
    return [Requirement(l) for l in lines if l]


def _declared() -> dict[str, list[Requirement]]:
    out: dict[str, list[Requirement]] = {}
    extras = [s for name, group in PYPROJECT["optional-dependencies"].items() if name != "test" for s in group]
    for spec in PYPROJECT["dependencies"] + extras:   # the gpu extra and the optional backends' (tinker)
        req = Requirement(spec)
        out.setdefault(canonicalize_name(req.name), []).append(req)
    return out


@pytest.mark.parametrize("python", ["3.11", "3.12"])
def test_gpu_lock_is_what_unsloth_declares_it_supports(python):
    """unsloth's own Requires-Dist (the installed wheel's metadata) against the GPU lock."""
    try:
        requires = md.requires("unsloth") or []
    except md.PackageNotFoundError:
        pytest.skip("unsloth is not installed")
    lock = _lock("gpu.txt", python)
    assert lock["unsloth"] == md.version("unsloth")
    checked = 0
    for spec in requires:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        if req.marker is not None and "extra" in str(req.marker):
            continue
        if name in lock and req.specifier:
            assert req.specifier.contains(lock[name], prereleases=True), (name, lock[name], spec)
            checked += 1
    assert checked >= 6   # torch, transformers, trl, datasets, peft, bitsandbytes, ...
    assert lock["trl"] == "1.15.0" and lock["transformers"] == "5.17.0"
    assert lock["datasets"].startswith("4.8.") and lock["torch"].startswith("2.14.")


def test_the_test_lock_uses_the_gpu_locks_libraries():
    gpu, cpu_gpu = _lock("gpu.txt"), _lock("cpu-gpu-libs.txt")
    for name in ("transformers", "trl", "datasets", "peft", "accelerate"):
        assert cpu_gpu[name] == gpu[name], name
    assert "torch" not in cpu_gpu and not any(n.startswith("nvidia-") for n in cpu_gpu)


@pytest.mark.parametrize("lock", ["cpu.txt", "cpu-gpu-libs.txt"])
def test_cpu_locks_hold_no_cuda_packages(lock):
    names = _lock(lock)
    assert not [n for n in names if n == "torch" or n == "triton" or n.startswith(("nvidia-", "cuda-"))]


@pytest.mark.parametrize("lock", ["gpu.txt", "cpu.txt"])
def test_pyproject_ranges_hold_both_tested_sets(lock):
    pins = _lock(lock)
    if lock == "cpu.txt":   # installed on its own, before the lock
        torch_pin = next(r for r in _requirements(ROOT / "requirements-cpu.txt") if r.name == "torch")
        pins["torch"] = str(torch_pin.specifier).removeprefix("==")
    for spec in PYPROJECT["dependencies"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in pins, f"{name} is declared in pyproject.toml but not in locks/{lock}"
        assert req.specifier.contains(pins[name], prereleases=True), (lock, spec, pins[name])
    if lock == "gpu.txt":
        for spec in PYPROJECT["optional-dependencies"]["gpu"]:
            req = Requirement(spec)
            assert req.specifier.contains(pins[canonicalize_name(req.name)], prereleases=True), spec


@pytest.mark.parametrize("path", ["requirements.txt", "requirements-cpu.txt"])
def test_requirement_files_pin_inside_the_declared_ranges(path):
    specs = PYPROJECT["dependencies"] + (PYPROJECT["optional-dependencies"]["gpu"]
                                         if path == "requirements.txt" else [])
    declared: dict[str, list[Requirement]] = {}
    for spec in specs:
        req = Requirement(spec)
        declared.setdefault(canonicalize_name(req.name), []).append(req)
    checked = 0
    for req in _requirements(ROOT / path):
        for version in (s.version for s in req.specifier if s.operator == "=="):
            for want in declared.get(canonicalize_name(req.name), []):
                assert want.specifier.contains(version, prereleases=True), (path, str(req), str(want))
                checked += 1
    assert checked >= 5


def _third_party_imports() -> set[str]:
    names = set()
    for path in (ROOT / "helpers").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "helpers"}


def test_every_library_the_code_imports_is_declared():
    declared = set(_declared())
    dists = md.packages_distributions()
    missing = []
    for module in sorted(_third_party_imports()):
        owners = {canonicalize_name(d) for d in dists.get(module, [])}
        if not owners:
            missing.append(f"{module} (not installed here)")
        elif not owners & declared:
            missing.append(f"{module} (from {', '.join(sorted(owners))})")
    assert not missing, ("imported by helpers/ but not in pyproject.toml dependencies or the gpu "
                         f"extra: {missing}")
