"""One image, one purpose: each image installs the core and its own group, and that is enough."""

import ast
import importlib.util
import json
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = (ROOT / "pyproject.toml").read_text()
LOCK = (ROOT / "constraints.txt").read_text()
# What each image runs: its KFP components and entry points.
ENTRIES = {
    "spark": ["components.ingest.component", "components.ingest.__main__",
              "components.validate.component", "components.validate.__main__",
              "components.score.component", "components.score.__main__",
              # the monitor stage, the capture sink and the monitor CronJob (manifests/monitoring)
              "components.monitor.component", "components.monitor.__main__",
              "components.monitor.sink", "pipelines.monitor"],
    "train": ["components.train.component", "components.train.__main__",
              "components.evaluate.component", "components.evaluate.__main__",
              "components.deploy.component"],
    "serve": ["components.serve.__main__"],
}  # fmt: skip
NOT_IN_SERVE = {"pyspark", "deepchecks", "moto", "kfp", "mlflow"}


def _req():
    spec = importlib.util.spec_from_file_location("req", ROOT / "images" / "requirements.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _third_party_imports(entries: list[str]) -> set[str]:
    """Top-level third-party modules imported anywhere (functions too) by what ``entries`` reach."""

    def source(mod: str) -> Path | None:
        path = ROOT / Path(*mod.split("."))
        for candidate in (path.with_suffix(".py"), path / "__init__.py"):
            if candidate.is_file():
                return candidate
        return None

    seen, found, todo = set(), set(), list(entries)
    while todo:
        mod = todo.pop()
        if mod in seen or not (path := source(mod)):
            continue
        seen.add(mod)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in ("components", "pipelines"):
                    todo.append(name)
                elif name.startswith("kfp.kubernetes"):
                    found.add("kfp.kubernetes")  # a namespace package of its own distribution
                elif top not in sys.stdlib_module_names:
                    found.add(top)
    return found


@pytest.mark.parametrize("group", ["spark", "train", "serve"])
def test_each_image_installs_what_its_code_imports(group):
    req = _req()
    closure = set(req.installed_closure(req.group_requirements(PYPROJECT, group)))
    providers = {**metadata.packages_distributions(), "kfp.kubernetes": ["kfp-kubernetes"]}
    missing = {}
    for module in _third_party_imports(ENTRIES[group]):
        dists = {d.lower().replace("_", "-") for d in providers.get(module, [])}
        if not dists & closure:
            missing[module] = sorted(dists)
    assert not missing, f"{group} image lacks {missing}"


def test_the_serve_image_has_no_spark_deepchecks_moto_or_kfp():
    req = _req()
    serve = set(req.installed_closure(req.group_requirements(PYPROJECT, "serve")))
    assert "kserve" in serve and not serve & NOT_IN_SERVE, serve & NOT_IN_SERVE


def test_image_requirements_take_the_image_torch_build_and_no_dev_packages():
    req = _req()
    for group, pin in (("train", "torch==2.13.0"), ("serve", "torch==2.13.0"),
                       ("spark", "torch==2.13.0+cpu")):  # fmt: skip
        requirements, constraints = req.image_requirements(PYPROJECT, LOCK, group)
        lines = requirements.splitlines()
        assert lines[0] == pin and sum(line.startswith("torch") for line in lines) == 1
        assert not any(line.startswith(("pytest", "ruff", "moto")) for line in lines), group
        assert "torch==" not in constraints and "pyspark==4.3.0" in constraints.splitlines()
        assert ("pyspark==4.3.0" in lines) == (group == "spark")


def test_recorded_image_sizes_match_the_requirement_sets():
    """images/sizes.json comes from the committed requirement sets (`make image-sizes`)."""
    req = _req()
    recorded = json.loads((ROOT / "images" / "sizes.json").read_text())
    for group in ("spark", "train", "serve"):
        names = sorted(req.installed_closure(req.group_requirements(PYPROJECT, group)))
        assert recorded[group]["names"] == names, f"re-run `make image-sizes` ({group})"


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_spark_image_java_home_is_the_installed_jdk_on_every_architecture(tmp_path, arch):
    """JAVA_HOME is a link the build derives from the installed java (Graviton nodes: arm64)."""
    import re
    import subprocess

    text = (ROOT / "images" / "spark.Dockerfile").read_text().replace("\\\n", " ")
    final = text.rsplit("\nFROM ", 1)[1]  # the runtime stage
    (java_home,) = re.findall(r"JAVA_HOME=(\S+)", final)
    (link,) = re.findall(r"ln -s (\"\$\(.*?\)\"|\S+) (\S+)", final)
    assert link[1] == java_home, "JAVA_HOME must be the path the build links"
    # a Debian openjdk layout for ``arch``, with /usr/bin/java -> alternatives -> the JRE
    jre = tmp_path / "usr/lib/jvm" / f"java-17-openjdk-{arch}"
    (jre / "bin").mkdir(parents=True)
    (jre / "bin" / "java").write_text("")
    (tmp_path / "etc/alternatives").mkdir(parents=True)
    (tmp_path / "etc/alternatives/java").symlink_to(jre / "bin" / "java")
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/bin/java").symlink_to(tmp_path / "etc/alternatives/java")
    source = link[0].replace("/usr/bin/java", str(tmp_path / "usr/bin/java"))
    derived = subprocess.run(["sh", "-c", f"echo {source}"], capture_output=True, text=True)
    assert derived.stdout.strip() == str(jre)
