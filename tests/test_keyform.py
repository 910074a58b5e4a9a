"""The Train tab's form (`dash.keyform`) on real recipes: every training recipe of examples/ loads into the form, and
the form's recipe — and the file it saves — parse to the same arguments as the file; a check that the parser logs in
never writes to the process's stderr (the form in a browser: tests/test_board.py)."""
import os, subprocess, sys
import pytest, yaml
from conftest import ROOT
from llmft.core import ConfigError
from llmft.hparams.parser import get_train_args

SKIP = ('accelerate', 'deepspeed', 'sweeps')
RECIPES = sorted(p for p in (ROOT / 'examples').rglob('*.yaml')
                 if p.parts[len((ROOT / 'examples').parts)] not in SKIP and 'stage' in yaml.safe_load(p.read_text()))


def args_or_error(cfg):
    "The parsed arguments of a recipe, or the parser's one line."
    try: return get_train_args(cfg)
    except ConfigError as e: return str(e)


@pytest.mark.parametrize('recipe', RECIPES, ids=lambda p: str(p.relative_to(ROOT / 'examples')))
def test_recipe_round_trips(recipe, tmp_path, monkeypatch):
    from llmft.dash.keyform import KeyForm
    monkeypatch.chdir(ROOT)   # the recipes name models/, data/ and their files relative to the repo
    form = KeyForm()
    assert form.load(recipe.relative_to(ROOT)) is None, form.note
    want = args_or_error(str(recipe))
    assert args_or_error(form.config()) == want
    assert form.check() == (want if isinstance(want, str) else None)
    saved = form.save(tmp_path / 'recipe.yaml')
    assert saved.read_text().startswith(f'# Run: llmft train {tmp_path / "recipe.yaml"}\n')
    assert args_or_error(str(saved)) == want
    again = KeyForm()
    assert again.load(saved) is None and again.config() == form.config()


def test_enough_recipes():
    assert len(RECIPES) >= 25


def test_check_writes_nothing_to_stderr(tmp_path):
    "In a fresh process (llmft's stderr handler installed at import), a check that logs a warning prints nothing."
    code = ("from llmft.dash.keyform import KeyForm\n"
            "f = KeyForm(dict(model_name_or_path='m', dataset='alpaca_demo', template='llama3', output_dir='o'))\n"
            "f.set('bf16', True)\n"
            "assert f.check() is None and any('no CUDA device' in l for l in f.notes), f.notes\n"
            "f.set('stage', 'ppo')\n"
            "print(f.check())\n")
    r = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1].startswith('stage ppo needs reward_model'), r.stdout   # (a tracker may say hello)
    assert r.stderr == '', r.stderr
