"""Every recipe under examples/ says how to run it, parses and passes the checks; the `extras/` ones (LLaMA-Factory's
example families: optimizers, loss variants, adapters, tokens, trackers, early stopping) train a few steps on the tiny
model, and the GPU-only QLoRA recipe is refused on CPU before any work (`test_train_recipe_parses`)."""
from pathlib import Path
import pytest, torch, yaml
from conftest import ROOT
from llmft.core import ConfigError
from llmft.hparams.parser import get_train_args
from llmft.model.runs import parse_run
from llmft.train.tuner import run_exp

SKIP = ('accelerate', 'deepspeed', 'sweeps')
RECIPES = sorted(p for p in (ROOT / 'examples').rglob('*.yaml')
                 if p.parts[len((ROOT / 'examples').parts)] not in SKIP and p.name != 'tokens_cfg.yaml')
TRAIN = [p for p in RECIPES if 'stage' in yaml.safe_load(p.read_text())]
EXTRAS = [p for p in TRAIN if 'extras' in p.parts]


def local(cfg: dict, tiny: str, tmp_path) -> dict:
    "A recipe's keys with the tiny model, the repo's data and files, and a temporary output folder."
    cfg = {**cfg, 'model_name_or_path': tiny, 'output_dir': str(tmp_path / 'out'), 'dataset_dir': str(ROOT / 'data')}
    if 'new_special_tokens_config' in cfg:
        cfg['new_special_tokens_config'] = str(ROOT / cfg['new_special_tokens_config'])
    return cfg


def test_every_recipe_says_how_to_run_it():
    assert len(RECIPES) >= 30 and len(EXTRAS) >= 14
    for p in RECIPES:
        head = p.read_text().splitlines()[:3]
        rel = p.relative_to(ROOT).as_posix()
        assert head[0].startswith('# ') and any(f'llmft ' in l and rel in l for l in head), p


@pytest.mark.parametrize('path', TRAIN, ids=lambda p: p.relative_to(ROOT / 'examples').as_posix())
def test_train_recipe_parses(path, tiny_llama, tmp_path):
    cfg = local(yaml.safe_load(path.read_text()), tiny_llama, tmp_path)
    if cfg.get('quantization_bit') and not torch.cuda.is_available():   # QLoRA: refused by the checks, before data
        with pytest.raises(ConfigError, match='needs a CUDA GPU'): run_exp({**cfg, 'max_steps': 2})
        assert not (tmp_path / 'out').exists()
    else: get_train_args(cfg)


@pytest.mark.parametrize('path', [p for p in RECIPES if p not in TRAIN], ids=lambda p: p.name)
def test_chat_and_export_recipes_parse(path, tiny_llama, tmp_path):
    cfg = {k: v for k, v in yaml.safe_load(path.read_text()).items() if k != 'adapter_name_or_path'}
    run = parse_run({**cfg, 'model_name_or_path': tiny_llama})
    assert run.data_args.template == 'llama3'


@pytest.mark.parametrize('path', EXTRAS, ids=lambda p: p.parent.name)
def test_extras_recipe_trains(path, tiny_llama, tmp_path):
    cfg = local(yaml.safe_load(path.read_text()), tiny_llama, tmp_path)
    cfg.update(max_steps=4, max_samples=16, logging_steps=1, save_steps=2, eval_steps=2, plot_loss=False)
    res = run_exp(cfg)
    assert res.trainer.state.global_step == 4   # early_stopping (patience 3) cannot stop it within two evaluations
    assert Path(res.output_dir, 'trainer_log.jsonl').exists()
