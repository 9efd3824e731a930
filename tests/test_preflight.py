"""Bad input stops a command at once: one line, exit 2, before Prefect (and so any server) is even imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _store_writer import create, frame_arrays

from tasks.retry import retry_unless_bad_input

REPO = Path(__file__).resolve().parents[1]

# The command runs in a fresh interpreter; afterwards it reports whether prefect was ever imported.
_RUN = """
import sys
from steadydepth.cli import main
code = main(sys.argv[1:])
print("PREFECT_IMPORTED" if "prefect" in sys.modules else "NO_PREFECT")
sys.exit(code)
"""


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _RUN, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def _cases(tmp: Path) -> dict[str, tuple[list[str], str]]:
    (tmp / "binary.yaml").write_bytes(bytes(range(256)))
    (tmp / "list.yaml").write_text("- decode\n- teacher\n")
    (tmp / "a-file").write_text("not a folder")
    store = create(str(tmp / "stores" / "clip.teacher.zarr"))  # a finished teacher store: the pre-flight opens it
    for i in range(store.num_chunks):
        store.write_chunk(i, **frame_arrays(*store.chunk_bounds(i)))
    store.finalize()
    home = ["--set", f"orchestration.home={tmp / 'home'}"]
    cases = {
        "missing input": (["ingest", str(tmp / "nope.mp4"), *home], "nope.mp4 not found"),
        "headdim": (["train", "--store-root", str(tmp / "stores"), "--set", "smoother.headdim=7", *home],
                    "headdim 7 must divide"),
        "binary config": (["train", "--config", str(tmp / "binary.yaml")], "is not a text (YAML) file"),
        "list config": (["train", "--config", str(tmp / "list.yaml")], "must hold a mapping"),
        "colormap": (["export", "--store-root", str(tmp / "stores"), "--set", "export.preview_cmap=nope", *home],
                     "unknown matplotlib colormap 'nope'"),
        "no stores": (["train", "--store-root", str(tmp / "empty"), *home], "no teacher stores under"),
        "missing model": (["evaluate", "--store-root", str(tmp / "stores"), "--model", str(tmp / "m.pt"), *home],
                          "m.pt not found"),
        "no champion": (["evaluate", "--store-root", str(tmp / "stores"), *home],
                        "no champion of steadydepth-smoother in the MLflow registry"),
        "unwritable home": (["train", "--store-root", str(tmp / "stores"), "--set",
                             f"orchestration.home={tmp / 'a-file' / 'home'}"], "cannot write the state folder"),
    }
    if not torch.cuda.is_available():
        cases["absent device"] = (["train", "--store-root", str(tmp / "stores"), "--set", "train.device=cuda",
                                   *home], "this machine has no CUDA GPU")
    return cases


@pytest.mark.parametrize("case", ["missing input", "headdim", "binary config", "list config", "colormap",
                                  "no stores", "missing model", "no champion", "unwritable home",
                                  "absent device"])
def test_bad_input_fails_with_one_line_before_any_server(case: str, tmp_path: Path) -> None:
    cases = _cases(tmp_path)
    if case not in cases:
        pytest.skip("this machine has a CUDA GPU")
    args, expected = cases[case]
    done = _run(args, tmp_path)
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(errors) == 1 and errors[0].startswith("error: ") and expected in errors[0], errors
    assert "Traceback" not in done.stderr
    assert done.stdout.strip().splitlines()[-1] == "NO_PREFECT"


class _State:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def result(self):
        raise self.exc


def test_failures_a_retry_cannot_fix_are_not_retried() -> None:
    from steadydepth.errors import ConfigError, StoreError, TeacherOutOfMemoryError

    for permanent in (ConfigError("x"), StoreError("x"), FileNotFoundError("x"), TypeError("x")):
        assert retry_unless_bad_input(None, None, _State(permanent)) is False, permanent
    for transient in (TeacherOutOfMemoryError("x"), OSError("disk hiccup"), RuntimeError("lost worker")):
        assert retry_unless_bad_input(None, None, _State(transient)) is True, transient
