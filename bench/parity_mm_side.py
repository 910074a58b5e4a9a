"""One side of the media parity harness: tokenize every case of `cases.json` with LLaMA-Factory or with llmft and
collate its first rows, then write the rows (ids, labels, media names) and the batch's tensors.

usage: python parity_mm_side.py {lf,llmft} WORK_DIR      (run by bench/parity_mm.py with each framework's own python)
"""

from __future__ import annotations
import io, json, os, sys, traceback, contextlib
from pathlib import Path

os.environ.update(HF_HUB_OFFLINE='1', HF_DATASETS_OFFLINE='1', TRANSFORMERS_OFFLINE='1', DISABLE_VERSION_CHECK='1',
                  TOKENIZERS_PARALLELISM='false', WANDB_DISABLED='true')
KEEP = ('input_ids', 'labels', 'chosen_input_ids', 'chosen_labels', 'rejected_input_ids',
        'rejected_labels', 'kl_input_ids', 'kl_labels', 'kto_tags')
MEDIA = ('images', 'videos', 'audios')
BATCH = 2   # rows collated together: the batch tensors of the first BATCH rows are compared


def cfg_of(case: dict, work: Path, side: str) -> dict:
    "The run configuration of one case (LLaMA-Factory keys, which llmft shares)."
    return dict(stage=case['stage'], do_train=True, model_name_or_path=case['model'], template=case['template'],
                dataset=case['dataset'], dataset_dir=case['dataset_dir'], cutoff_len=case['cutoff_len'],
                overwrite_cache=True, output_dir=str(work / 'out' / side / case['id']), finetuning_type='lora',
                report_to='none', **case.get('extra', {}))


def _name(x):
    "A media item as the rows compare it: a file's name (each side resolves its folder), else its type."
    if isinstance(x, str): return os.path.basename(x)
    if isinstance(x, list): return [_name(f) for f in x]
    if isinstance(x, dict): return os.path.basename(x.get('path') or '') or 'bytes'
    return type(x).__name__


def rows_of(ds) -> list[dict]:
    out = []
    for r in ds:
        row = {k: v for k, v in r.items() if k in KEEP}
        row.update({k: _name(r.get(k) or []) for k in MEDIA})
        out.append(row)
    return out


def tensors_of(batch: dict) -> dict:
    "The batch's tensors (torch), by key."
    import torch
    return {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}


def lf_shims():
    "LLaMA-Factory's venv has neither torchvision nor torchcodec: the stand-ins of `tools/lf_mm_plugins.py`."
    import torchaudio
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'tools'))
    import lf_mm_plugins
    lf_mm_plugins.without_torchvision()
    torchaudio.load = lf_mm_plugins.wav_load
    return lf_mm_plugins


def run_lf(case: dict, work: Path):
    from llamafactory.hparams import get_train_args
    from llamafactory.data import get_template_and_fix_tokenizer, get_dataset
    from llamafactory.data.collator import (SFTDataCollatorWith4DAttentionMask, PairwiseDataCollatorWithPadding,
                                            KTODataCollatorWithPadding)
    from llamafactory.model import load_tokenizer

    model_args, data_args, training_args, ft_args, _ = get_train_args(cfg_of(case, work, 'lf'))
    tm = load_tokenizer(model_args)
    if case['family'] in ('qwen2_vl', 'qwen2_audio'):   # what LF's venv cannot load or decode (tools/lf_mm_plugins.py)
        tm['processor'] = lf_shims().processor(case['model'], None, case.get('extra', {}))
    template = get_template_and_fix_tokenizer(tm['tokenizer'], data_args)
    stage = {'dpo': 'rm'}.get(case['stage'], case['stage'])  # LF's dpo workflow reads its data as stage rm
    ds = get_dataset(template, model_args, data_args, training_args, stage, **tm)['train_dataset']
    cls = dict(sft=SFTDataCollatorWith4DAttentionMask, dpo=PairwiseDataCollatorWithPadding,
               kto=KTODataCollatorWithPadding)[case['stage']]
    collator = cls(template=template, tokenizer=tm['tokenizer'], processor=tm['processor'], model=None,
                   label_pad_token_id=-100)
    rows = rows_of(ds)
    return rows, tensors_of(collator([dict(ds[i]) for i in range(min(BATCH, len(ds)))]))


def run_llmft(case: dict, work: Path):
    from llmft.hparams.parser import parse_recipe
    from llmft.data.pipeline import prepare, make_collator

    # LLaMA-Factory's truncation (a listed deliberate difference, checked='setting'): the rest compares exactly
    recipe = parse_recipe(cfg_of(case, work, 'llmft'), data_check='off', keep_answer_header=False)
    prep = prepare(recipe.args)   # the data call every stage makes
    ds = prep.dataset['train_dataset']
    collator = make_collator(prep, recipe.args)
    rows = rows_of(ds)
    return rows, tensors_of(collator([dict(ds[i]) for i in range(min(BATCH, len(ds)))]))


SIDES = {'lf': run_lf, 'llmft': run_llmft}

if __name__ == '__main__':
    import torch
    side, work = sys.argv[1], Path(sys.argv[2])
    cases = json.loads((work / 'cases.json').read_text())
    (work / side).mkdir(exist_ok=True)
    for i, case in enumerate(cases):
        log = io.StringIO()
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                (rows, tensors), err = SIDES[side](case, work), None
        except BaseException as e:  # a refusal or a crash of that framework is a result of the case
            if isinstance(e, KeyboardInterrupt): raise
            rows, tensors, err = None, {}, f'{type(e).__name__}: {e}'.splitlines()[0][:300]
            (work / side / f"{case['id']}.trace").write_text(traceback.format_exc() + '\n' + log.getvalue()[-5000:])
        (work / side / f"{case['id']}.json").write_text(json.dumps({'rows': rows, 'error': err}))
        torch.save(tensors, work / side / f"{case['id']}.pt")
        print(f"[{side}] {i + 1}/{len(cases)} {case['id']}: {'ERROR ' + err if err else len(rows)}", flush=True)
