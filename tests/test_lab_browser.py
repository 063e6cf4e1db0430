"""The learner's path in a real browser: JupyterLab on an exercise notebook, headless Chromium.

Starts JupyterLab (``requirements-lab.txt``, what ``make lab`` installs) on
127.0.0.1 over a temporary copy of ``exercises/11_modern_gpt.ipynb``, opens the
notebook with Playwright driving the Debian package's ``/usr/bin/chromium`` (no
browser is downloaded), and, as a learner would:

1. types an answer to the first task into its solution cell (the answer from
   ``solutions/``), runs the setup cell, that cell and the check cell below it,
   and finds the check's passing message in the page;
2. types a wrong answer instead (a grading fixture's, ``11_rms_norm_sum``), runs
   the two cells again and finds the ``AssertionError`` with the message of the
   check that catches it, and no passing message.

Skipped, with a message, where Chromium, Playwright or JupyterLab is not
installed (``make lab`` installs JupyterLab; ``make test`` installs Chromium).
"""

import ast
import importlib.util
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from lmcourse.course.check import visible_part
from lmcourse.course.chromium import CHROMIUM_ARGS, find_chromium
from lmcourse.course.exercises import BEGIN_SOLUTION, END_SOLUTION, EXERCISES_DIR, SOLUTIONS_DIR, cell_info

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = find_chromium()
JUPYTER_LAB = Path(sys.executable).parent / "jupyter-lab"
NOTEBOOK = "11_modern_gpt.ipynb"
WRONG = ROOT / "tests" / "grading_fixtures" / "wrong_answers" / "11_rms_norm_sum.ipynb"
ARTIFACTS = ROOT / "_build" / "test-artifacts"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (apt-get install chromium); lab test skipped"),
    pytest.mark.skipif(importlib.util.find_spec("jupyterlab") is None or not JUPYTER_LAB.exists(),
                       reason="JupyterLab is not installed (make lab, or pip install -r requirements-lab.txt)"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None,
                       reason="Playwright is not installed (pip install playwright)"),
]


def solution_code(cell) -> str:
    """A solution cell as a learner would type it: the code without the markers."""
    return "\n".join(line for line in cell.source.split("\n") if line.strip() not in (BEGIN_SOLUTION, END_SOLUTION))


def first_task(nb) -> tuple[int, int, int]:
    """Indices of the setup cell, the first solution cell and the check cell after it."""
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    solution = next(i for i in code if cell_info(nb.cells[i]).get("role") == "solution")
    check = next(i for i in code if i > solution and cell_info(nb.cells[i]).get("role") == "check")
    return code[0], solution, check


def passing_message(check_source: str) -> str:
    """The text the check cell prints last when every visible check passes."""
    printed = [node.args[0].value for node in ast.walk(ast.parse(visible_part(check_source)))
               if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print"
               and node.args and isinstance(node.args[0], ast.Constant)]
    assert printed, "the first task's check cell prints no passing message"
    return printed[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 over a copy of the exercise; yields (notebook URL, root)."""
    tmp = tmp_path_factory.mktemp("lab")
    root, config, settings = tmp / "exercises", tmp / "config", tmp / "settings"
    for d in (root, config, settings / "@jupyterlab" / "notebook-extension",
              settings / "@jupyterlab" / "apputils-extension"):
        d.mkdir(parents=True)
    shutil.copy(EXERCISES_DIR / NOTEBOOK, root / NOTEBOOK)
    # no news or update checks (offline); every cell in the page (no windowing); state under tmp
    (config / "jupyter_server_config.json").write_text(json.dumps({"LabApp": {
        "news_url": None, "check_for_updates_class": "jupyterlab.NeverCheckForUpdate",
        "extension_manager": "readonly",
        "user_settings_dir": str(settings), "workspaces_dir": str(tmp / "workspaces")}}))
    (settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings").write_text(
        json.dumps({"windowingMode": "none"}))
    (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false"}))  # no "Would you like to get notified about Jupyter news?"
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(config), "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
           "OMP_NUM_THREADS": "1", "LMCOURSE_DEVICE": "cpu", "PYTHONHASHSEED": "0"}
    log = (tmp / "lab.log").open("w")
    server = subprocess.Popen(
        [str(JUPYTER_LAB), "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         *(["--allow-root"] if os.geteuid() == 0 else [])],  # CI runs as root
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        start, deadline = time.monotonic(), time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail("JupyterLab did not start:\n" + (tmp / "lab.log").read_text()[-3000:])
            time.sleep(0.5)
        print(f"JupyterLab answered after {time.monotonic() - start:.1f} s")
        yield f"{base}/lab/tree/{NOTEBOOK}?token={token}", root, f"{base}/api/sessions?token={token}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


@pytest.fixture(scope="module")
def page(lab):
    from playwright.sync_api import sync_playwright

    url, _, sessions = lab
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(120_000)
        page.goto(url)
        page.locator(".jp-Notebook .jp-Cell").first.wait_for()
        wait_for_idle_kernel(sessions)
        yield page
        browser.close()


def wait_for_idle_kernel(sessions: str, limit: float = 240) -> None:
    """Wait until the notebook's kernel has started and is idle (a loaded machine can take a minute)."""
    deadline, state = time.monotonic() + limit, None
    while time.monotonic() < deadline:
        with urllib.request.urlopen(sessions, timeout=10) as r:
            states = [s["kernel"]["execution_state"] for s in json.load(r)
                      if s.get("path", "").endswith(NOTEBOOK) and s.get("kernel")]
        state = states[0] if states else None
        if state == "idle":
            return
        time.sleep(0.5)
    pytest.fail(f"the notebook's kernel was not idle after {limit:.0f} s (last state: {state})")


def stuck(page, message: str):
    """Fail with a screenshot and the text of any dialog in the way."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "lab-stuck.png"))
    dialogs = page.locator(".jp-Dialog").all_inner_texts()
    pytest.fail(f"{message}; dialogs: {dialogs!r}; screenshot in {ARTIFACTS / 'lab-stuck.png'}")


def cell(page, index: int):
    return page.locator(".jp-Notebook .jp-Cell").nth(index)


def type_into(page, index: int, text: str) -> None:
    """Replace a cell's code with ``text``, as typed (one insertion, so the editor adds no indentation)."""
    editor = cell(page, index).locator(".cm-content")
    editor.click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(text)


def run(page, index: int) -> None:
    """Run one cell (Ctrl+Enter) and wait until it has a new execution count.

    If the cell has not even been queued ("[*]") after 20 s, the key press went
    elsewhere (a dialog, a lost focus): dismiss any dialog and press again, at
    most three times."""
    target = cell(page, index)
    prompt = target.locator(".jp-InputArea-prompt")
    before = prompt.inner_text().strip()
    for _attempt in range(3):
        target.locator(".cm-content").click()
        page.keyboard.press("Control+Enter")
        queued_by = time.monotonic() + 20
        while prompt.inner_text().strip() == before and time.monotonic() < queued_by:
            page.wait_for_timeout(250)
        if prompt.inner_text().strip() != before:
            break
        for button in page.locator(".jp-Dialog .jp-mod-reject").all():
            button.click()
    else:
        stuck(page, f"cell {index} was never queued after three Ctrl+Enter: prompt {before!r}")
    deadline = time.monotonic() + 180
    while True:
        now = prompt.inner_text().strip()
        if now != before and now.strip("[]:").strip().isdigit():
            return
        if time.monotonic() > deadline:
            stuck(page, f"cell {index} did not finish in 180 s: prompt {now!r}")
        page.wait_for_timeout(250)


def output(page, index: int) -> str:
    return cell(page, index).locator(".jp-OutputArea").inner_text()


def test_a_learner_types_an_answer_runs_the_check_and_sees_it_pass_then_fail(page):
    exercise = nbformat.read(EXERCISES_DIR / NOTEBOOK, as_version=4)
    setup, solution, check = first_task(exercise)
    task = cell_info(exercise.cells[solution])["task"]
    solved = nbformat.read(SOLUTIONS_DIR / NOTEBOOK, as_version=4)
    answer = solution_code(next(c for c in solved.cells if cell_info(c).get("task") == task
                                and cell_info(c).get("role") == "solution"))
    wrong = solution_code(next(c for c in nbformat.read(WRONG, as_version=4).cells
                               if cell_info(c).get("task") == task and cell_info(c).get("role") == "solution"))
    sys.path.insert(0, str(Path(__file__).parent))
    from test_exercises_11 import WRONG_ANSWERS

    expected_failure = WRONG_ANSWERS[WRONG.stem][3]
    passed = passing_message(exercise.cells[check].source)
    assert "NotImplementedError" in cell(page, solution).inner_text()  # the stub, as the learner finds it

    type_into(page, solution, answer)
    for index in (setup, solution, check):
        run(page, index)
        print(f"ran cell {index}")
    cell(page, check).locator(".jp-OutputArea pre", has_text=passed).wait_for()  # the check's message, shown
    assert passed in output(page, check) and "Error" not in output(page, check)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    cell(page, check).locator(".jp-OutputArea").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "lab-check-passed.png"))

    type_into(page, solution, wrong)
    run(page, solution)
    run(page, check)
    shown = output(page, check)
    assert "AssertionError" in shown and expected_failure in shown, shown[-2000:]
    assert passed not in shown
    cell(page, check).locator(".jp-OutputArea").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "lab-check-failed.png"))
