"""The chunked loss (`use_chunked_loss`) and padding-free batches (`padding_free`), both on by default, train every stage
exactly as the full logits of padded batches do: the same logged losses and metrics step by step, and the same trained
weights, for LoRA and full fine-tuning. So does a reference computed once (`precompute_ref_log_probs`)."""
import json
from pathlib import Path
import pytest, torch
from safetensors.torch import load_file
from conftest import ROOT
import llmft.train.chunked as chunked_mod
from llmft.train.tuner import run_exp

STAGES = {'sft': dict(dataset='mixed_sft'), 'pt': dict(dataset='pretrain_demo'), 'rm': dict(dataset='mixed_pairs'),
          'dpo': dict(dataset='mixed_pairs', pref_beta=0.1), 'kto': dict(dataset='mixed_kto', pref_beta=0.1)}
WORDS = 'the cat sat on a warm mat while rain fell over the quiet town and'.split()


def text(n, k):
    return ' '.join(WORDS[(k + i) % len(WORDS)] for i in range(n))


@pytest.fixture
def data_dir(tmp_path):
    "Rows of very different lengths (3 to 60 words), so that a batch's short rows repack beside its long ones."
    d = tmp_path / 'data'
    d.mkdir()
    n = [3, 60, 5, 40, 8, 50, 4, 30, 6, 45, 12, 35, 3, 55, 7, 25]
    rows = [dict(instruction=text(2 + k % 3, k), output=text(m, k), chosen=text(m, k), rejected=text(n[-1 - k], k + 1),
                 kto_tag=k % 3 != 0) for k, m in enumerate(n)]
    (d / 'mixed.json').write_text(json.dumps(rows))
    cols = dict(prompt='instruction', response='output')
    (d / 'dataset_info.json').write_text(json.dumps({
        'mixed_sft': dict(file_name='mixed.json', columns=cols),
        'mixed_pairs': dict(file_name='mixed.json', ranking=True,
                            columns=dict(prompt='instruction', chosen='chosen', rejected='rejected')),
        'mixed_kto': dict(file_name='mixed.json', columns=dict(cols, kto_tag='kto_tag')),
        'pretrain_demo': json.loads((ROOT / 'data' / 'dataset_info.json').read_text())['pretrain_demo']}))
    (d / 'pretrain_demo.jsonl').write_text((ROOT / 'data' / 'pretrain_demo.jsonl').read_text())
    return d


@pytest.fixture
def repacked(monkeypatch):
    "Counts the batches `train.chunked` repacks (the real function, wrapped)."
    seen = []
    real = chunked_mod.packed_inputs
    monkeypatch.setattr(chunked_mod, 'packed_inputs', lambda *a: seen.append(1) or real(*a))
    return seen


def train(tmp_path, tiny_llama, stage, chunked, finetuning='lora', **kw):
    out = tmp_path / f'{stage}-{finetuning}-{chunked}-{len(kw)}'
    run_exp(dict(model_name_or_path=tiny_llama, stage=stage, do_train=True, finetuning_type=finetuning, lora_target='all',
                 dataset_dir=str(tmp_path / 'data'), template='llama3', cutoff_len=128, max_samples=16, output_dir=str(out),
                 overwrite_output_dir=True, per_device_train_batch_size=4, gradient_accumulation_steps=2,
                 learning_rate=5e-3, max_steps=4, logging_steps=1, report_to='none', save_strategy='no', seed=0,
                 use_chunked_loss=chunked, **STAGES[stage], **kw))
    logs = [json.loads(l) for l in open(out / 'trainer_log.jsonl')]
    weights = load_file(next(p for p in (out / 'adapter_model.safetensors', out / 'model.safetensors') if p.exists()))
    return [r for r in logs if 'loss' in r], weights


def same_weights(a, b):
    "Equal trained weights: Adam turns float noise in a near-zero gradient into up to one step (lr) on that element."
    for k in a:
        d = (a[k] - b[k]).abs()
        assert d.max() < 5e-3 and d.mean() < 1e-6, (k, d.max().item(), d.mean().item())


@pytest.mark.parametrize('stage', list(STAGES))
def test_chunked_loss_trains_like_the_full_logits(stage, tiny_llama, tmp_path, data_dir, repacked):
    (full, w_full), (chunked, w_chunked) = (train(tmp_path, tiny_llama, stage, c) for c in (False, True))
    assert len(full) == len(chunked) == 4
    # pt packs its rows full: nothing to repack; rm keeps its padded rows (its value head's dropout)
    assert (stage in ('pt', 'rm')) == (not repacked), len(repacked)
    for a, b in zip(full, chunked):
        for k in a.keys() & {'loss', 'rewards/accuracies', 'rewards/margins', 'logps/chosen', 'logits/chosen', 'kl'}:
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-5), (stage, k, a[k], b[k])
    assert full[0]['loss'] != full[-1]['loss']   # it trained
    same_weights(w_full, w_chunked)


def test_chunked_loss_full_finetuning(tiny_llama, tmp_path, data_dir):
    "A trained LM head takes the other branch of the fused function (its logits computed again in the backward pass)."
    (full, w_full), (chunked, w_chunked) = (train(tmp_path, tiny_llama, 'sft', c, 'full') for c in (False, True))
    assert [r['loss'] for r in full] == pytest.approx([r['loss'] for r in chunked], rel=1e-4)
    assert not torch.equal(w_full['lm_head.weight'], load_file(Path(tiny_llama) / 'model.safetensors')['lm_head.weight'])
    same_weights(w_full, w_chunked)


@pytest.mark.parametrize('stage', ['dpo', 'kto'])
def test_precomputed_reference_trains_the_same(stage, tiny_llama, tmp_path, data_dir):
    (each, w_each), (once, w_once) = (train(tmp_path, tiny_llama, stage, True, **kw)
                                      for kw in ({}, {'precompute_ref_log_probs': True}))
    for a, b in zip(each, once):
        for k in a.keys() & {'loss', 'rewards/chosen', 'rewards/margins', 'kl'}:
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-5), (stage, k, a[k], b[k])
    same_weights(w_each, w_once)
