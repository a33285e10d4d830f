"""pyflakes over the package, the tests, the configs and the scripts: no unused imports or variables, no undefined
names (a line marked `# noqa` is exempt: imports made for their side effects or re-exported)."""

import ast
import glob
import os

from pyflakes import checker

from conftest import ROOT


def _python_files() -> list[str]:
    patterns = ("jaxvision/**/*.py", "tests/*.py", "configs/**/*.py", "benchmarks/*.py", "launch/*.py")
    return sorted({p for pattern in patterns for p in glob.glob(os.path.join(ROOT, pattern), recursive=True)})


def test_pyflakes_finds_nothing():
    files = _python_files()
    assert len(files) > 100
    problems = []
    for path in files:
        with open(path) as f:
            source = f.read()
        lines = source.splitlines()
        for message in checker.Checker(ast.parse(source, path), path).messages:
            if "# noqa" not in lines[message.lineno - 1]:
                problems.append(f"{os.path.relpath(path, ROOT)}:{message.lineno}: "
                                f"{message.message % message.message_args}")
    assert not problems, "\n".join(problems)
