"""One side of the parity harness: tokenize every case of `cases.json` with LLaMA-Factory or with llmft, write the rows.

usage: python parity_side.py {lf,llmft} WORK_DIR      (run by bench/parity.py with each framework's own python)
"""

from __future__ import annotations
import io, json, os, sys, traceback, contextlib
from pathlib import Path

os.environ.update(
    HF_HUB_OFFLINE='1',
    HF_DATASETS_OFFLINE='1',
    TRANSFORMERS_OFFLINE='1',
    DISABLE_VERSION_CHECK='1',
    TOKENIZERS_PARALLELISM='false',
    WANDB_DISABLED='true',
)
KEEP = (
    'input_ids',
    'labels',
    'attention_mask',
    'position_ids',
    'chosen_input_ids',
    'chosen_labels',
    'rejected_input_ids',
    'rejected_labels',
    'kl_input_ids',
    'kl_labels',
    'kto_tags',
)


def cfg_of(case: dict, work: Path, side: str) -> dict:
    "The run configuration of one case (LLaMA-Factory keys, which llmft shares)."
    return dict(
        stage=case['stage'],
        do_train=True,
        model_name_or_path=str(work / 'tok' / case['tokenizer']),
        template=case['template'],
        dataset=case['dataset'],
        dataset_dir=str(work / ('data_llmft' if side == 'llmft' and case['lf_rewrites'] else 'data')),
        cutoff_len=case['cutoff_len'],
        overwrite_cache=True,
        output_dir=str(work / 'out' / side / case['id']),
        finetuning_type='lora',
        report_to='none',
        **case.get('extra', {}),
    )


def rows_of(ds) -> list[dict]:
    return [{k: v for k, v in r.items() if k in KEEP} for r in ds]


def run_lf(case: dict, work: Path) -> list[dict]:
    from llamafactory.hparams import get_train_args
    from llamafactory.data import get_template_and_fix_tokenizer, get_dataset
    from llamafactory.model import load_tokenizer

    model_args, data_args, training_args, ft_args, _ = get_train_args(cfg_of(case, work, 'lf'))
    tm = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tm['tokenizer'], data_args)
    stage = {'dpo': 'rm'}.get(case['stage'], case['stage'])  # LF's dpo workflow reads its data as stage rm
    return rows_of(get_dataset(template, model_args, data_args, training_args, stage, **tm)['train_dataset'])


def run_llmft(case: dict, work: Path) -> list[dict]:
    from llmft.hparams.parser import parse_recipe
    from llmft.data.pipeline import prepare

    # LLaMA-Factory's truncation (a listed deliberate difference, checked='setting'): the rest compares exactly
    recipe = parse_recipe(cfg_of(case, work, 'llmft'), data_check='off', keep_answer_header=False)
    return rows_of(prepare(recipe.args).dataset['train_dataset'])   # the data call every stage makes


SIDES = {'lf': run_lf, 'llmft': run_llmft}

if __name__ == '__main__':
    side, work = sys.argv[1], Path(sys.argv[2])
    cases = json.loads((work / 'cases.json').read_text())
    (work / side).mkdir(exist_ok=True)
    for i, case in enumerate(cases):
        log = io.StringIO()
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                rows, err = SIDES[side](case, work), None
        except (
            BaseException
        ) as e:  # a refusal or a crash of that framework is a result of the case, not of the harness
            if isinstance(e, KeyboardInterrupt):
                raise
            rows, err = None, f'{type(e).__name__}: {e}'.splitlines()[0][:300]
            (work / side / f"{case['id']}.trace").write_text(traceback.format_exc() + '\n' + log.getvalue()[-5000:])
        (work / side / f"{case['id']}.json").write_text(json.dumps({'rows': rows, 'error': err}))
        print(f"[{side}] {i + 1}/{len(cases)} {case['id']}: {'ERROR ' + err if err else len(rows)}", flush=True)
