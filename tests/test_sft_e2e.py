"End-to-end SFT through run_exp on the tiny model: loss falls, weights change, the saved artifact reloads with identical logits."
import json
from pathlib import Path
import torch
from transformers import TrainerCallback
from llmft.train.tuner import run_exp
from llmft.hparams.model import ModelArguments
from llmft.hparams.finetune import FinetuningArguments
from llmft.data.tokenizer import load_tokenizer
from llmft.model.loader import load_model


class Snapshot(TrainerCallback):
    "Copies of the trainable parameters when training starts."
    def on_train_begin(self, args, state, control, model=None, **kw):
        self.before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def losses(out):
    return [r['loss'] for r in map(json.loads, open(Path(out) / 'trainer_log.jsonl')) if 'loss' in r]


def probe(tok):
    return torch.tensor([tok('What is the capital of France?').input_ids])


def test_lora_sft_trains_and_reloads(sft_cfg):
    snap = Snapshot()
    res = run_exp(sft_cfg, callbacks=[snap])
    ls = losses(res.output_dir)
    assert len(ls) == 8 and ls[-1] < 0.85 * ls[0], ls
    model = res.trainer.model
    after = dict(model.named_parameters())
    assert snap.before and all('lora_' in n for n in snap.before)
    changed = [n for n, p in snap.before.items() if not torch.equal(p, after[n])]
    assert len(changed) == len(snap.before), f'{len(snap.before) - len(changed)} LoRA tensors did not change'
    # the base weights did not move
    base = load_model(load_tokenizer(ModelArguments(model_name_or_path=sft_cfg['model_name_or_path'])),
                      ModelArguments(model_name_or_path=sft_cfg['model_name_or_path']), FinetuningArguments(), False)
    q = dict(base.named_parameters())['model.layers.0.self_attn.q_proj.weight']
    assert torch.equal(q, after['base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight'])
    # the saved adapter reloads with identical logits
    margs = ModelArguments(model_name_or_path=sft_cfg['model_name_or_path'], adapter_name_or_path=res.output_dir)
    tok = load_tokenizer(ModelArguments(model_name_or_path=res.output_dir))
    reloaded = load_model(tok, margs, FinetuningArguments(), is_trainable=False)
    model.eval()
    x = probe(tok)
    with torch.no_grad():
        a, b, c = model(x).logits, reloaded(x).logits, base(x).logits
    assert torch.equal(a, b)
    assert not torch.allclose(a, c), 'the adapter changes nothing'
    assert json.load(open(Path(res.output_dir) / 'all_results.json'))['train_loss'] > 0


def test_full_sft_trains_and_reloads(sft_cfg, tmp_path):
    cfg = {**sft_cfg, 'finetuning_type': 'full', 'learning_rate': 1e-3, 'max_steps': 20, 'do_eval': True, 'val_size': 4,
           'max_samples': 12, 'plot_loss': True}
    res = run_exp(cfg)
    ls = losses(res.output_dir)
    assert ls[-1] < 0.8 * ls[0], ls
    out = Path(res.output_dir)
    assert (out / 'model.safetensors').exists() and (out / 'training_loss.png').exists()
    assert res.metrics['eval']['eval_loss'] > 0 and res.metrics['eval']['eval_perplexity'] > 1
    tok = load_tokenizer(ModelArguments(model_name_or_path=str(out)))
    reloaded = load_model(tok, ModelArguments(model_name_or_path=str(out)), FinetuningArguments(finetuning_type='full'), False)
    model = res.trainer.model.eval()
    x = probe(tok)
    with torch.no_grad(): assert torch.equal(model(x).logits, reloaded(x).logits)


def test_freeze_trains_only_chosen_layer(sft_cfg):
    snap = Snapshot()
    cfg = {**sft_cfg, 'finetuning_type': 'freeze', 'freeze_trainable_layers': 1, 'learning_rate': 1e-3, 'max_steps': 4}
    res = run_exp(cfg, callbacks=[snap])
    assert snap.before and all(n.startswith('model.layers.1.') for n in snap.before), sorted(snap.before)[:3]
    after = dict(res.trainer.model.named_parameters())
    assert all(not torch.equal(p, after[n]) for n, p in snap.before.items() if p.dim() > 1)


def test_neat_packing_sft_trains(sft_cfg):
    cfg = {**sft_cfg, 'packing': True, 'neat_packing': True, 'cutoff_len': 256, 'max_samples': 32, 'max_steps': 20,
           'per_device_train_batch_size': 2}
    res = run_exp(cfg)
    ls = losses(res.output_dir)
    assert ls[-1] < ls[0], ls
    assert len(res.trainer.train_dataset) < 32          # examples were packed
