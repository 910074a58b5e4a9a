"""Every fine-tuning type and adapter option on the tiny model: exactly the expected parameters train, training changes only
them, and the saved artifact reloads to identical logits (merged adapters: the same logits as applied ones)."""
import re
from pathlib import Path
import pytest
import torch
from transformers import TrainerCallback
from llmft.train.tuner import run_exp
from llmft.hparams.model import ModelArguments
from llmft.hparams.finetune import FinetuningArguments
from llmft.data.tokenizer import load_tokenizer
from llmft.model.loader import load_model
from llmft.model.expand import expand_model

LINEARS = 7  # q k v o gate up down


class Snapshot(TrainerCallback):
    def on_train_begin(self, args, state, control, model=None, **kw):
        self.before = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.trainable = {n for n, p in model.named_parameters() if p.requires_grad}


def run(cfg, **kw):
    snap = Snapshot()
    res = run_exp({**cfg, 'max_steps': 4, 'learning_rate': 5e-3, **kw}, callbacks=[snap])
    after = dict(res.trainer.model.named_parameters())
    changed = {n for n, p in snap.before.items() if not torch.equal(p, after[n])}
    return res, snap, changed


def logits(model, tok):
    x = torch.tensor([tok('Add the two numbers. 2 and 3').input_ids])
    with torch.no_grad(): return model.eval()(x).logits


CASES = {  # name: (config, rule every trainable name must follow, expected count for the tiny 2-layer model)
    'full': (dict(finetuning_type='full'), r'.*', None),
    'freeze_last': (dict(finetuning_type='freeze', freeze_trainable_layers=1), r'model\.layers\.1\.', 9),
    'freeze_mlp_extra': (dict(finetuning_type='freeze', freeze_trainable_layers=-1, freeze_trainable_modules='mlp',
                              freeze_extra_modules='lm_head'), r'(model\.layers\.0\.mlp\.|lm_head)', 4),
    'lora': (dict(finetuning_type='lora'), r'.*lora_[AB]', 2 * LINEARS * 2),
    'lora_qv_rslora': (dict(finetuning_type='lora', lora_target='q_proj,v_proj', use_rslora=True), r'.*(q|v)_proj\.lora_[AB]', 2 * 2 * 2),
    'dora': (dict(finetuning_type='lora', use_dora=True), r'.*(lora_[AB]|lora_magnitude_vector)', 3 * LINEARS * 2),
    'pissa': (dict(finetuning_type='lora', pissa_init=True, pissa_iter=4, pissa_convert=True), r'.*lora_[AB]', 2 * LINEARS * 2),
    'oft': (dict(finetuning_type='oft', oft_block_size=16), r'.*oft_', LINEARS * 2),
    'lora_additional': (dict(finetuning_type='lora', lora_target='q_proj', additional_target='lm_head'),
                        r'.*(q_proj\.lora_[AB]|lm_head\.modules_to_save)', 2 * 2 + 1),
    'loraplus': (dict(finetuning_type='lora', loraplus_lr_ratio=16.0), r'.*lora_[AB]', 2 * LINEARS * 2),
}


@pytest.mark.parametrize('name', CASES)
def test_type_trains_exactly_its_parameters_and_reloads(name, sft_cfg, tiny_llama):
    cfg, rule, count = CASES[name]
    res, snap, changed = run(sft_cfg, **cfg)
    assert snap.trainable and all(re.match(rule, n) for n in snap.trainable), sorted(snap.trainable)[:5]
    if count is not None: assert len(snap.trainable) == count, (len(snap.trainable), sorted(snap.trainable)[:6])
    assert changed == snap.trainable, (sorted(snap.trainable - changed)[:5], sorted(changed - snap.trainable)[:5])
    out = Path(res.output_dir)
    tok = load_tokenizer(ModelArguments(model_name_or_path=str(out)))
    if name == 'pissa':  # a PiSSA adapter belongs to the residual base it was cut from; the converted one to the original model
        conv = load_model(tok, ModelArguments(model_name_or_path=tiny_llama, adapter_name_or_path=str(out / 'pissa_converted')),
                          FinetuningArguments(), is_trainable=False)
        torch.testing.assert_close(logits(conv, tok), logits(res.trainer.model, tok), atol=2e-4, rtol=1e-4)
        return
    peft = cfg['finetuning_type'] in ('lora', 'oft')
    margs = ModelArguments(model_name_or_path=tiny_llama if peft else str(out), adapter_name_or_path=str(out) if peft else None)
    reloaded = load_model(tok, margs, FinetuningArguments(finetuning_type=cfg['finetuning_type']), is_trainable=False)
    assert torch.equal(logits(res.trainer.model, tok), logits(reloaded, tok))
    if name == 'lora':  # merged weights compute what the applied adapter computes
        merged = reloaded.merge_and_unload()
        torch.testing.assert_close(logits(merged, tok), logits(res.trainer.model, tok), atol=1e-5, rtol=1e-5)


def test_loraplus_groups_in_the_optimizer(sft_cfg):
    res, _, _ = run(sft_cfg, finetuning_type='lora', loraplus_lr_ratio=16.0, lr_scheduler_type='constant')
    lrs = {g['name']: g['lr'] for g in res.trainer.optimizer.param_groups}
    assert lrs['lora_B'] == pytest.approx(16 * lrs['other'])


def test_new_adapter_on_top_of_a_merged_one(sft_cfg, tiny_llama, tmp_path):
    first, _, _ = run(sft_cfg, output_dir=str(tmp_path / 'a1'))
    second, snap, changed = run(sft_cfg, output_dir=str(tmp_path / 'a2'), adapter_name_or_path=first.output_dir, create_new_adapter=True)
    assert changed == snap.trainable and all('lora_' in n for n in snap.trainable)
    tok = load_tokenizer(ModelArguments(model_name_or_path=tiny_llama))
    both = load_model(tok, ModelArguments(model_name_or_path=tiny_llama, adapter_name_or_path=f'{first.output_dir},{second.output_dir}'),
                      FinetuningArguments(), is_trainable=False)
    torch.testing.assert_close(logits(both, tok), logits(second.trainer.model, tok), atol=1e-5, rtol=1e-5)


def test_llama_pro_expand_then_train_only_new_blocks(sft_cfg, tiny_llama, tmp_path):
    pro = expand_model(tiny_llama, tmp_path / 'pro', num_expand=2)
    res, snap, changed = run(sft_cfg, model_name_or_path=str(pro), finetuning_type='freeze', use_llama_pro=True, freeze_trainable_layers=2)
    layers = {int(n.split('layers.')[1].split('.')[0]) for n in snap.trainable}
    assert layers == {1, 3} and changed == snap.trainable


def _tiny_configs(vocab):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, T5Config
    text = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8)
    return {'T5ForConditionalGeneration': T5Config(vocab_size=vocab, d_model=32, d_ff=64, d_kv=16, num_layers=1, num_heads=2, decoder_start_token_id=0),
            'LlavaForConditionalGeneration': LlavaConfig(text_config=text, vision_config=vision, image_token_index=vocab - 1),
            'LlamaForCausalLM': text}


@pytest.mark.parametrize('name', ['T5ForConditionalGeneration', 'LlavaForConditionalGeneration', 'LlamaForCausalLM'])
def test_auto_class_from_config(name, tiny_llama, tmp_path):
    "A tiny random model of each kind, built from its config and saved, loads through load_model as its own class, LoRA included."
    import transformers
    tok = load_tokenizer(ModelArguments(model_name_or_path=tiny_llama))
    cfg = _tiny_configs((len(tok) + 63) // 64 * 64)[name]
    getattr(transformers, name)(cfg).save_pretrained(tmp_path / name); tok.save_pretrained(tmp_path / name)
    m = load_model(tok, ModelArguments(model_name_or_path=str(tmp_path / name)), FinetuningArguments(finetuning_type='full'))
    assert type(m).__name__ == name
    lora = load_model(tok, ModelArguments(model_name_or_path=str(tmp_path / name)), FinetuningArguments(lora_target='q_proj,q' if 'T5' in name else 'q_proj'), is_trainable=True)
    assert any(p.requires_grad for p in lora.parameters()) and all('lora_' in n for n, p in lora.named_parameters() if p.requires_grad)


def test_reference_and_reward_models_from_the_library(tiny_llama, tmp_path):
    "The library module itself (not a notebook namespace) builds reference and reward models."
    from llmft.train.refs import create_ref_model, create_reward_model
    tok = load_tokenizer(ModelArguments(model_name_or_path=tiny_llama))
    margs = ModelArguments(model_name_or_path=tiny_llama)
    ref = create_ref_model(tok, margs, FinetuningArguments(finetuning_type='full'))
    assert not any(p.requires_grad for p in ref.parameters())
    rm = load_model(tok, margs, FinetuningArguments(), is_trainable=True, add_valuehead=True)
    rm.save_pretrained(tmp_path / 'rm')
    loaded = create_reward_model(tok, margs, FinetuningArguments(reward_model=str(tmp_path / 'rm'), reward_model_type='lora'))
    x = torch.tensor([tok('Hi').input_ids])
    with torch.no_grad(): assert torch.equal(loaded(x)[2], rm.eval()(x)[2])
