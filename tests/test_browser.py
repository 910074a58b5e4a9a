"""One real-browser test: Voila serves a notebook with the sample inspector, the live monitor of a real training run and the chat;
headless Chromium (Debian's `chromium`, driven by Playwright) renders it; the tokens and the chart must be in the page.
A screenshot is saved (`tests/artifacts/dashboard.png`)."""
import pytest
import os, shutil, socket, subprocess, sys, time
from pathlib import Path

from conftest import ROOT

sys.path.insert(0, str(ROOT / 'tests' / 'assets'))
import dash_page

pytestmark = pytest.mark.slow   # Voila, a training run and Chromium

CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def test_inspector_and_live_chart_render_in_chromium(tmp_path):
    assert CHROMIUM, 'the browser test needs Debian\'s chromium: apt-get install chromium (make install does it where apt-get runs as root)'
    from playwright.sync_api import sync_playwright
    nb = tmp_path / 'dashboard.ipynb'
    dash_page.write(nb, ROOT / 'data')
    port = free_port()
    voila = subprocess.Popen([str(Path(sys.executable).parent / 'voila'), str(nb), '--no-browser', f'--port={port}', '--Voila.ip=127.0.0.1',
                              '--show_tracebacks=True'], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**os.environ, 'PYTHONUNBUFFERED': '1'})
    shot = ROOT / 'tests' / 'artifacts' / 'dashboard.png'; shot.parent.mkdir(exist_ok=True)
    try:
        deadline = time.time() + 60
        while True:                                  # wait for the server to listen
            try: socket.create_connection(('127.0.0.1', port), timeout=1).close(); break
            except OSError:
                assert voila.poll() is None and time.time() < deadline, f'voila did not start: {voila.stdout.read()[-3000:] if voila.poll() is not None else "timeout"}'
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'])
            page = browser.new_page(viewport={'width': 1400, 'height': 5000})
            page.goto(f'http://127.0.0.1:{port}/', timeout=300_000)
            page.wait_for_selector('.llmft-token', timeout=300_000)
            page.wait_for_function("document.body.innerText.includes('trained 9 log records')", timeout=300_000)   # 8 steps + the summary
            traces = "Array.from(document.querySelectorAll('.js-plotly-plot')).map(e => e.querySelectorAll('.scatterlayer .trace').length)"
            page.wait_for_function(f"({traces})[0] > 0", timeout=60_000)            # the run trained while the page was built
            page.get_by_placeholder('Ask something...').fill('Who are you?')    # the chat: base model and run side by side
            page.get_by_role('button', name='Send').click()
            page.wait_for_function("document.querySelectorAll('.llmft-msg.llmft-answer').length >= 2", timeout=300_000)
            answers = page.locator('.llmft-msg.llmft-answer').count()
            page.get_by_role('button', name='Launch').click()                           # a run started from the page: drawn live
            page.wait_for_function(f"({traces}).length >= 2 && ({traces})[1] > 0", timeout=300_000)
            page.wait_for_function("document.body.innerText.includes('6/6 steps')", timeout=300_000)
            tokens = page.locator('.llmft-token.trained').count(), page.locator('.llmft-token.masked').count()
            counts = page.evaluate(traces)
            text = page.inner_text('body')
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
        assert tokens[0] > 5 and tokens[1] > 5, tokens
        assert answers >= 2, answers                                      # one answer per column
        assert counts[0] >= 3 and counts[1] >= 3, counts                  # loss, learning rate, grad norm
        assert 'PASS' in text and 'sample' in text                       # the data check and the slider
        assert shot.stat().st_size > 10_000
    finally:
        voila.terminate()
        try: voila.wait(10)
        except subprocess.TimeoutExpired: voila.kill()
