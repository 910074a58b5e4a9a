"""Write the configuration keys LLaMA-Factory declares beside transformers' `Seq2SeqTrainingArguments` (name, argument
class, default) to tests/assets/lf_keys.json, the fixture `tests/test_lf_keys.py` checks llmft's surface against.

Run it with LLaMA-Factory's Python (`make lf-venv` builds one):  .lf-venv/bin/python tools/lf_keys.py
"""
import dataclasses, json, sys
from pathlib import Path
import transformers
import llamafactory
from llamafactory.hparams import (data_args, evaluation_args, finetuning_args, generating_args, model_args,
                                  training_args)

OUT = Path(__file__).resolve().parents[1] / 'tests/assets/lf_keys.json'


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING: value = f.default
    elif f.default_factory is not dataclasses.MISSING: value = f.default_factory()
    else: return None
    try: return json.loads(json.dumps(value))
    except TypeError: return repr(value)


def lf_keys() -> dict:
    "Every init field of LLaMA-Factory's own argument dataclasses, not inherited from transformers."
    hf = {f.name for f in dataclasses.fields(transformers.Seq2SeqTrainingArguments)}
    out = {}
    for mod in (model_args, data_args, finetuning_args, generating_args, evaluation_args, training_args):
        for c in vars(mod).values():
            if not (isinstance(c, type) and dataclasses.is_dataclass(c) and c.__module__ == mod.__name__): continue
            for f in dataclasses.fields(c):
                owner = next(k for k in c.__mro__ if f.name in k.__dict__.get('__annotations__', {}))
                if f.init and f.name not in hf and owner.__module__.startswith('llamafactory'):
                    out[f.name] = {'group': owner.__name__, 'default': _default(f)}
    return out


if __name__ == '__main__':
    keys = lf_keys()
    doc = {'llamafactory': llamafactory.__version__, 'keys': dict(sorted(keys.items()))}
    OUT.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + '\n', encoding='utf-8')
    print(f'{len(keys)} keys of LLaMA-Factory {llamafactory.__version__} -> {OUT}', file=sys.stderr)
