"""LLaMA-Factory's own example recipes through llmft's parser: which run as they are, which stop at a key llmft refuses
(and with what message), which fail otherwise. Prints a table and a summary.

    .venv/bin/python bench/lf_recipes.py PATH/TO/LLaMA-Factory/examples

The recipes name hub models and LLaMA-Factory's demo datasets; the model is replaced by the tiny local one and the
datasets by llmft's demo set of the same shape, so that only the keys are judged. Not run in CI: it needs a checkout of
LLaMA-Factory's examples folder (e.g. `git archive v0.9.5 examples` of its repository).
"""
import sys, tempfile
from pathlib import Path
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHAPE = {'pt': 'c4_demo', 'sft': 'alpaca_demo', 'rm': 'pref_demo', 'dpo': 'pref_demo', 'kto': 'kto_demo',
         'ppo': 'alpaca_demo'}
STAGE_KEYS = ('stage', 'do_train', 'do_predict', 'do_eval', 'finetuning_type')


def is_training_recipe(cfg) -> bool:
    "A recipe of `llamafactory-cli train / chat / export` (not an accelerate or DeepSpeed config)."
    return isinstance(cfg, dict) and 'model_name_or_path' in cfg


def judge(path: Path, tiny: str) -> tuple[str, str]:
    "('runs' | 'refused' | 'error', message) for one recipe, with model, data and output made local."
    from llmft.core import ConfigError
    from llmft.hparams.parser import get_train_args
    from llmft.hparams.recipe import prescan
    cfg = yaml.safe_load(path.read_text())
    cfg['model_name_or_path'] = tiny
    cfg.pop('adapter_name_or_path', None)
    for k in ('dataset', 'eval_dataset'):
        if k in cfg: cfg[k] = SHAPE.get(cfg.get('stage', 'sft'), 'alpaca_demo')
    cfg.update(dataset_dir=str(ROOT / 'data'), output_dir=tempfile.mkdtemp(), overwrite_output_dir=True)
    cfg.pop('deepspeed', None)   # the DeepSpeed package is not installed here: its refusal is not about keys
    if 'ref_model' in cfg or 'reward_model' in cfg: cfg.update({k: tiny for k in ('ref_model', 'reward_model') if k in cfg})
    try:
        prescan(cfg)
        if not any(cfg.get(k) for k in ('do_train', 'do_predict', 'do_eval')): return 'runs', 'chat / export keys'
        get_train_args(cfg)
        return 'runs', ''
    except ConfigError as e:
        kind = 'refused' if 'LLaMA-Factory key that llmft does not support' in str(e) else 'error'
        return kind, str(e).splitlines()[0][:160]


def main(examples: str):
    from llmft.testing import tiny_model
    tiny = str(tiny_model('llama'))
    rows = []
    for p in sorted(Path(examples).rglob('*.yaml')):
        cfg = yaml.safe_load(p.read_text())
        if is_training_recipe(cfg): rows.append((str(p.relative_to(examples)), *judge(p, tiny)))
    print(f'| recipe | verdict | message |\n|---|---|---|')
    for r in rows: print(f'| {r[0]} | {r[1]} | {r[2]} |')
    counts = {v: sum(r[1] == v for r in rows) for v in ('runs', 'refused', 'error')}
    print(f'\n{len(rows)} recipes: ' + ', '.join(f'{n} {v}' for v, n in counts.items()))


if __name__ == '__main__':
    main(sys.argv[1] if len(sys.argv) > 1 else 'examples')
