"""The one-line contract holds whatever a dependency prints: a dependency that logs and warns at import and at run
time (tests/assets/noisy_dep, loaded through Python's sitecustomize) never reaches the terminal during an `llmft`
command; its messages are kept in the run folder's libraries.log (or the cache's logs/ where no run folder exists)
and shown only when asked (`LLMFT_DEBUG=1`, or the recipe's `log_level`)."""
import os, subprocess, sys
from pathlib import Path
import pytest
from conftest import ROOT

NOISY = ROOT / 'tests' / 'assets' / 'noisy_dep'
IMPORT_TIME = ['own stderr handler', 'import-time FutureWarning', 'on the root logger', 'import-time warning through']
RUN_TIME = ['run-time warning through a bare logger', 'run-time UserWarning']


def noisy_cli(*args, cache, **env):
    "`llmft ARGS` with the talking dependency on PYTHONPATH; llmft's own INFO lines off, so only errors remain."
    base = {k: v for k, v in os.environ.items() if k != 'LLMFT_DEBUG'}   # debug only where a test asks for it
    full = {**base, 'PYTHONPATH': str(NOISY), 'LLMFT_CACHE': str(cache), 'LLMFT_LOG_LEVEL': 'WARNING', **env}
    exe = Path(sys.executable).parent / 'llmft'
    return subprocess.run([str(exe), *map(str, args)], cwd=ROOT, env=full, capture_output=True, text=True, timeout=600)


def test_the_dependency_does_talk():
    "Without llmft's routing, the same interpreter prints every message on stderr (the test would prove nothing else)."
    code = 'import transformers, yaml; yaml.safe_load("a: 1")'
    r = subprocess.run([sys.executable, '-c', code], env={**os.environ, 'PYTHONPATH': str(NOISY)}, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert all(m in r.stderr for m in IMPORT_TIME + RUN_TIME), r.stderr


def test_user_error_stays_one_line(tiny_llama, tmp_path):
    r = noisy_cli('train', 'examples/quickstart_sft.yaml', f'model_name_or_path={tiny_llama}', 'template=nosuch',
                  'bf16=false', f'output_dir={tmp_path / "run"}', cache=tmp_path / 'cache')
    assert r.returncode == 4, r.stderr[-3000:]
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("llmft: template error: Unknown template"), \
        r.stderr[-3000:]
    kept = (tmp_path / 'run' / 'libraries.log').read_text()   # the recipe's run folder existed: the messages are there
    assert all(m in kept for m in IMPORT_TIME + RUN_TIME), kept


def test_error_before_any_run_folder_keeps_them_in_the_cache(tmp_path):
    "A mistake found before the run folder exists (an unknown key): one line; the messages go to the cache's logs/."
    r = noisy_cli('train', 'examples/quickstart_sft.yaml', 'learnig_rate=1e-3', cache=tmp_path / 'cache')
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr[-3000:]
    assert "did you mean 'learning_rate'" in r.stderr
    assert all(m in (tmp_path / 'cache' / 'logs' / 'train.log').read_text() for m in RUN_TIME)


@pytest.mark.slow
def test_a_run_keeps_them_in_its_folder_and_says_where(tiny_llama, tmp_path):
    out = tmp_path / 'run'
    r = noisy_cli('train', 'examples/quickstart_sft.yaml', f'model_name_or_path={tiny_llama}', 'max_steps=1',
                  'max_samples=8', 'val_size=0', 'eval_strategy=no', 'bf16=false', f'output_dir={out}',
                  cache=tmp_path / 'cache')
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'noisydep' not in r.stderr, r.stderr[-3000:]
    kept = (out / 'libraries.log').read_text()
    assert all(m in kept for m in IMPORT_TIME + RUN_TIME), kept
    assert f'warning(s) of other libraries are in {out / "libraries.log"}' in r.stderr.strip().splitlines()[-1]
    assert (out / 'llmft_args.yaml').read_text().startswith('# versions: {"python": ')


def test_shown_when_asked(tiny_llama, tmp_path):
    "LLMFT_DEBUG=1 shows every message as its library would (and still keeps them); so does the recipe's log_level."
    args = ('train', 'examples/quickstart_sft.yaml', f'model_name_or_path={tiny_llama}', 'template=nosuch',
            'bf16=false', f'output_dir={tmp_path / "run"}')
    r = noisy_cli(*args, cache=tmp_path / 'cache', LLMFT_DEBUG='1')
    assert r.returncode == 4 and all(m in r.stderr for m in IMPORT_TIME + RUN_TIME), r.stderr[-3000:]
    r = noisy_cli(*args, 'log_level=warning', cache=tmp_path / 'cache')
    assert r.returncode == 4 and all(m in r.stderr for m in IMPORT_TIME + RUN_TIME), r.stderr[-3000:]
    assert r.stderr.strip().splitlines()[-1].startswith('llmft: template error'), r.stderr[-3000:]
