"""The wheel: every package listed in pyproject.toml, and conf/ shipped as augserve/conf (the
policy registry of augserve.vllm.deploy) and found from the installed location."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CODE = ("augserve", "predictors", "rl")


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_pyproject_lists_every_package_and_config_group() -> None:
    code = {".".join(p.parent.relative_to(ROOT).parts) for top in CODE
            for p in (ROOT / top).rglob("__init__.py")}
    confs = {"augserve.conf"} | {f"augserve.conf.{d.name}" for d in (ROOT / "conf").iterdir()
                                 if d.is_dir()}
    st = _setuptools()
    assert sorted(st["packages"]) == sorted(code | confs)
    assert st["package-dir"] == {"augserve.conf": "conf"}


@pytest.mark.skipif(importlib.util.find_spec("setuptools") is None, reason="needs setuptools")
def test_wheel_ships_conf_and_deploy_finds_it(tmp_path: Path) -> None:
    src = tmp_path / "src"  # a copy: an in-tree build would leave build/ in the checkout
    src.mkdir()
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / f, src / f)
    for d in (*CODE, "conf"):
        shutil.copytree(ROOT / d, src / d, ignore=shutil.ignore_patterns("__pycache__"))
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                          "--no-build-isolation", "-q", str(src), "-w", str(tmp_path / "whl")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "absent from the `packages`" not in out.stderr
    (wheel,) = (tmp_path / "whl").glob("augserve-*.whl")
    with zipfile.ZipFile(wheel) as z:
        shipped = {n for n in z.namelist() if n.startswith("augserve/conf/")}
        z.extractall(tmp_path / "site")
    want = {f"augserve/conf/{p.relative_to(ROOT / 'conf').as_posix()}"
            for p in (ROOT / "conf").rglob("*.yaml")}
    assert shipped == want
    probe = ("import augserve.vllm.deploy as d; from augserve.sched.vllm import VLLMPolicy; "
             "print(d.conf_dir()); "
             "assert isinstance(d.make_policy({'policy': 'vllm'}, 64), VLLMPolicy)")
    run = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, env={"PYTHONPATH": str(tmp_path / "site")})
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == str(tmp_path / "site" / "augserve" / "conf")
