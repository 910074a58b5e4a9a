"""Preference stages on media rows (issue 32): dpo and kto hand the pictures to the model with every row set they score
(the policy's chosen and rejected rows, KTO's KL rows, the reference's), the loss is finite, the adapter moves; grpo and
rloo refuse media rows by name."""
import json
import pytest
import torch
from transformers import TrainerCallback
from conftest import ROOT
from llmft.core import ConfigError, DataError
from llmft.train.tuner import run_exp
from llmft.testing_mm import tiny_mm_path

TOWERS = {'qwen2_vl': 'visual', 'llava': 'vision_tower'}


class TowerCalls(TrainerCallback):
    "Counts the vision tower's forward passes (policy and reference) from the first step on."
    def __init__(self, family): self.family, self.calls, self.hooked = family, 0, False

    def on_train_begin(self, args, state, control, model=None, **kw):
        for name, module in model.named_modules():
            if name.endswith(TOWERS[self.family]) and not self.hooked:
                module.register_forward_hook(lambda *a: setattr(self, 'calls', self.calls + 1))
                self.hooked = True


def recipe(family, stage, dataset, out):
    return dict(model_name_or_path=str(tiny_mm_path(family)), stage=stage, do_train=True, finetuning_type='lora',
                lora_target='all', template=family, dataset=dataset, dataset_dir=str(ROOT / 'data'), cutoff_len=256,
                per_device_train_batch_size=2, max_steps=3, learning_rate=5e-3, logging_steps=1, save_strategy='no',
                output_dir=str(out), report_to='none', disable_gradient_checkpointing=True, overwrite_output_dir=True)


@pytest.mark.parametrize('family,stage,dataset', [('qwen2_vl', 'dpo', 'mllm_dpo_demo'),
                                                  ('llava', 'kto', 'mllm_kto_demo')])
def test_preference_stages_see_the_pictures(family, stage, dataset, tmp_path):
    hook = TowerCalls(family)
    run_exp(recipe(family, stage, dataset, tmp_path / 'run'), callbacks=[hook])
    assert hook.hooked
    # each step scores its rows with the pictures: the policy once per row set, and the reference (the adapter off)
    per_step = {'dpo': 2, 'kto': 3}[stage]
    assert hook.calls >= 3 * per_step, hook.calls
    logs = [json.loads(l) for l in (tmp_path / 'run' / 'trainer_log.jsonl').read_text().splitlines()]
    losses = [r['loss'] for r in logs if 'loss' in r]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses))), losses
    from safetensors.torch import load_file
    lora = load_file(tmp_path / 'run' / 'adapter_model.safetensors')
    assert any(k.endswith('lora_B.weight') and v.abs().sum() > 0 for k, v in lora.items())   # B starts at zero
    assert not any('visual' in k or 'vision_tower' in k for k in lora)   # LoRA stays in the language model


@pytest.mark.parametrize('stage', ['grpo', 'rloo', 'pt'])
def test_stages_without_media_refuse_media_rows(stage, tmp_path):
    cfg = recipe('qwen2_vl', stage, 'mllm_demo', tmp_path / 'run')
    with pytest.raises((ConfigError, DataError)) as e:
        run_exp(cfg, **(dict(reward_funcs='length', num_generations=2) if stage in ('grpo', 'rloo') else {}))
    msg = str(e.value)
    assert 'mllm_demo' in msg and stage in msg, msg
