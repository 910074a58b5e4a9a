"""The loss under gradient accumulation is the sum over trained tokens divided by the trained tokens of the whole optimizer
step: batch 8 with accumulation 1 and batch 1 with accumulation 8 give the same update (fp32, CPU, plain SGD so the update is
the gradient itself)."""
import json
from pathlib import Path
from llmft.train.tuner import run_exp


def trained(res):
    return {n: p.detach().clone() for n, p in res.trainer.model.named_parameters() if p.requires_grad}


def logged(out, key='loss'):
    return [r[key] for r in map(json.loads, open(Path(out) / 'trainer_log.jsonl')) if key in r]


def compare(cfg, tmp_path, batch):
    big = run_exp({**cfg, 'output_dir': str(tmp_path / 'big'), 'per_device_train_batch_size': batch, 'gradient_accumulation_steps': 1})
    small = run_exp({**cfg, 'output_dir': str(tmp_path / 'small'), 'per_device_train_batch_size': 1, 'gradient_accumulation_steps': batch})
    a, b = trained(big), trained(small)
    assert a.keys() == b.keys() and a
    worst = max(float((a[n] - b[n]).abs().max()) for n in a)
    moved = max(float(a[n].abs().max()) for n in a if 'lora_B' in n)
    assert moved > 1e-3, 'the weights did not move: the comparison would be empty'
    assert worst < 1e-6, f'batch {batch} x 1 and batch 1 x {batch} differ by {worst}'
    la, lb = logged(big.output_dir), logged(small.output_dir)
    assert len(la) == len(lb) == cfg['max_steps']
    assert max(abs(x - y) for x, y in zip(la, lb)) < 1e-5, (la, lb)
    return big


def test_sft_accumulation_is_token_exact(sft_cfg, tmp_path):
    cfg = {**sft_cfg, 'max_samples': 16, 'max_steps': 2, 'logging_steps': 1, 'optim': 'sgd', 'learning_rate': 0.5,
           'disable_shuffling': True, 'lr_scheduler_type': 'constant'}
    big = compare(cfg, tmp_path, 8)
    # the examples have different numbers of trained tokens, so a mean per micro-batch would weight them differently
    counts = [sum(l != -100 for l in ex['labels']) for ex in big.trainer.train_dataset.select(range(8))]
    assert len(set(counts)) > 1, counts


def test_dpo_accumulation_is_exact(sft_cfg, tmp_path):
    cfg = {**sft_cfg, 'stage': 'dpo', 'dataset': 'pref_demo', 'max_samples': 8, 'max_steps': 2, 'logging_steps': 1, 'optim': 'sgd',
           'learning_rate': 0.5, 'disable_shuffling': True, 'lr_scheduler_type': 'constant', 'pref_ftx': 0.5}
    compare(cfg, tmp_path, 4)
