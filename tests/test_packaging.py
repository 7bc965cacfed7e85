"""One installed namespace: a user's own ``workers.py`` or ``transport/`` never shadows Gorilix.

The repository keeps ``workers/`` and ``transport/`` as top-level folders,
but they are reached (and installed) only as ``gorilix.workers`` and
``gorilix.transport``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import reap_nodes

from gorilix.launcher import free_port

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent('''
    from gorilix import Actor, ActorSystem

    class Echo(Actor):
        def receive(self, message):
            return ["echo", message]

    if __name__ == "__main__":
        with ActorSystem("shadow", workers=1) as system:
            print(system.spawn(Echo).ask("hi", timeout=10.0))
''')

APP = textwrap.dedent('''
    from gorilix import Actor

    class Echo(Actor):
        def receive(self, message):
            return message

    def setup(system):
        system.spawn(Echo, name="echo")
        print("app ready", flush=True)
''')


@pytest.fixture
def user_folder(tmp_path: Path) -> Path:
    """A folder like a user's: its own workers.py and transport/ package, which would
    break Gorilix if they were ever imported in place of Gorilix's own."""
    (tmp_path / "workers.py").write_text('raise SystemExit("the user\'s workers.py was imported")\n')
    (tmp_path / "transport").mkdir()
    (tmp_path / "transport" / "__init__.py").write_text(
        'raise SystemExit("the user\'s transport package was imported")\n')
    return tmp_path


@pytest.fixture
def nodes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    try:
        yield started
    finally:
        reap_nodes(started)  # type: ignore[arg-type]
        for proc in started:
            if proc.stdout is not None:
                proc.stdout.close()


@pytest.mark.slow
def test_a_script_beside_its_own_workers_and_transport_runs_gorilix(user_folder: Path) -> None:
    (user_folder / "main.py").write_text(SCRIPT)
    out = subprocess.run([sys.executable, "main.py"], cwd=user_folder, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "['echo', 'hi']"


@pytest.mark.slow
def test_gorilix_node_app_runs_from_a_folder_with_a_workers_py(
        user_folder: Path, nodes: list[subprocess.Popen[str]]) -> None:
    (user_folder / "myapp.py").write_text(APP)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gorilix", "node", "--name", "shadow", "--bind", f"127.0.0.1:{free_port()}",
         "--workers", "1", "--app", "myapp:setup"],
        cwd=user_folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    nodes.append(proc)
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:  # bounded: the node either gets ready or exits
        seen.append(line)
        if "app ready" in line:
            break
    assert any("app ready" in line for line in seen), "".join(seen)[-3000:]
    assert proc.poll() is None


@pytest.mark.slow
def test_the_built_wheel_installs_only_gorilix(tmp_path: Path) -> None:
    # Built from a copy: the build must not leave build/ or egg-info in the checkout.
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"))
    out = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"),
         str(source)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        top_level = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
        assert archive.read(top_level).decode().split() == ["gorilix"]
        packages = {n.split("/")[0] for n in names if ".dist-info/" not in n}
        assert packages == {"gorilix"}
        assert {"gorilix/workers/runtime.py", "gorilix/transport/codec.py", "gorilix/py.typed"} <= set(names)
        assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE")
                   for n in names)
