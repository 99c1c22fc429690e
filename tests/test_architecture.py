import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("operators", "engines", "pipeline", "jobs")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"],
        cwd=root, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
    )


def test_dependencies_point_one_way():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 6 kept, 0 broken" in result.stdout


def copy_of_the_project(tmp_path: Path) -> Path:
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def test_a_backward_import_breaks_the_contract(tmp_path):
    root = copy_of_the_project(tmp_path)
    (root / "operators" / "leak.py").write_text("import engines\nimport fsspec\n")
    result = lint_imports(root)
    assert result.returncode == 1
    assert "operators.leak -> engines" in result.stdout
    assert "operators.leak -> fsspec" in result.stdout
    assert "Contracts: 4 kept, 2 broken" in result.stdout


def test_the_core_knowing_a_job_or_a_cpu_step_importing_torch_breaks_its_contract(tmp_path):
    root = copy_of_the_project(tmp_path)
    (root / "pipeline" / "core" / "leak.py").write_text("import pipeline.edit.job\n")
    with open(root / "pipeline" / "inversion" / "steps.py", "a") as f:
        f.write("\nimport torch  # noqa\n")
    with open(root / "pipeline" / "restore" / "job.py", "a") as f:
        f.write("\nimport pipeline.edit.spec  # noqa\n")
    result = lint_imports(root)
    assert result.returncode == 1
    assert "pipeline.core.leak -> pipeline.edit.job" in result.stdout
    assert "pipeline.inversion.steps -> torch" in result.stdout
    assert "pipeline.restore.job -> pipeline.edit.spec" in result.stdout
    assert "Contracts: 3 kept, 3 broken" in result.stdout


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.match(r"```(?:sh|bash)\n(.*?)\n```", text, re.S)
    assert block, "README.md must open with a code block holding its two commands"
    return block.group(1).splitlines()


def test_readme_opens_with_two_commands_and_ci_runs_the_second():
    commands = readme_commands()
    assert len(commands) == 2
    assert "jobs." in commands[0] and "pytest" in commands[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1] in ci
