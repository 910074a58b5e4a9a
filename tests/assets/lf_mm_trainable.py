"""Write `tests/assets/lf_mm_trainable.json`: what LLaMA-Factory 0.9.5 trains of each tiny media model of
`llmft.testing_mm` under each fine-tuning type and freeze_* setting (trainable parameters per part), for
`tests/test_mm_model.py` to compare llmft's `model.adapters` against.

The settings (`SETTINGS`) are imported by the test; LLaMA-Factory only by `main`. Run it with LLaMA-Factory's
interpreter, naming each family's fixture folder (the paths `tiny_mm_path` gives):

    .lf-venv/bin/python tests/assets/lf_mm_trainable.py $(.venv/bin/python -c "from llmft.testing_mm import *;
        print(' '.join(f'{f}={tiny_mm_path(f)}' for f in MM_FAMILIES))")
"""
import json, sys
from pathlib import Path

SETTINGS = {  # name -> FinetuningArguments keys; the test reads the same table
    'full': dict(finetuning_type='full'),
    'full_swapped': dict(finetuning_type='full', freeze_vision_tower=False, freeze_multi_modal_projector=False,
                         freeze_language_model=True),
    'freeze_1': dict(finetuning_type='freeze', freeze_trainable_layers=1),
    'freeze_projector': dict(finetuning_type='freeze', freeze_multi_modal_projector=False),
    'lora': dict(finetuning_type='lora', lora_rank=4),
    'lora_tower': dict(finetuning_type='lora', lora_rank=4, freeze_vision_tower=False),
    'oft': dict(finetuning_type='oft', oft_block_size=8),
}


def load(path):
    "The model as LLaMA-Factory's loader picks its class."
    import transformers as T
    config = T.AutoConfig.from_pretrained(path)
    for cls in (T.AutoModelForImageTextToText, T.AutoModelForSeq2SeqLM):
        if type(config) in cls._model_mapping.keys(): return config, cls.from_pretrained(path)
    raise SystemExit(f'{path}: not a media model')


def by_part(model, c):
    "Trainable parameters per part (LLaMA-Factory's name fragments), and the model's total."
    out = {'tower': 0, 'projector': 0, 'language': 0, 'total': 0}
    for n, p in model.named_parameters():
        out['total'] += p.numel()
        part = next((k for k, keys in (('tower', c.vision_model_keys), ('projector', c.projector_keys),
                                       ('language', c.language_model_keys)) if any(f in n for f in keys)), None)
        if part and p.requires_grad: out[part] += p.numel()
    return out


def main(pairs):
    "LLaMA-Factory's imports live here: `SETTINGS` is imported by llmft's tests, which have no LLaMA-Factory."
    from llamafactory.hparams import FinetuningArguments, ModelArguments
    from llamafactory.model.adapter import init_adapter
    from llamafactory.model.model_utils.visual import COMPOSITE_MODELS
    out = {}
    for pair in pairs:
        family, path = pair.split('=', 1)
        for name, kw in SETTINGS.items():
            config, model = load(path)
            margs = ModelArguments(model_name_or_path=path)
            model = init_adapter(config, model, margs, FinetuningArguments(**kw), True)
            out.setdefault(family, {})[name] = by_part(model, COMPOSITE_MODELS[config.model_type])
    dest = Path(__file__).parent / 'lf_mm_trainable.json'
    dest.write_text(json.dumps(out, indent=1, sort_keys=True) + '\n')
    print(json.dumps(out, indent=1))


if __name__ == '__main__': main(sys.argv[1:])
