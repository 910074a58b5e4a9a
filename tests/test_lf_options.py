"""LLaMA-Factory's options beyond the basics, end to end on the tiny model through `run_exp`: the token-weighted sft
losses (DFT, EAFT, ASFT), BCO and LD-DPO, the memory-saving optimizers (GaLore, APOLLO, BAdam, Adam-mini, Muon), early
stopping, added tokens with their initialisation, training from scratch and the beams of evaluation. Each run proves it
trained (the loss falls, the weights change) or did what the key says."""
import json
from pathlib import Path
import pytest, torch, yaml
from conftest import ROOT
from llmft.infer.chat import ChatModel
from llmft.train.tuner import run_exp


def losses(out):
    return [r['loss'] for r in map(json.loads, open(Path(out) / 'trainer_log.jsonl')) if 'loss' in r]


@pytest.fixture
def base(tiny_llama, tmp_path):
    return dict(model_name_or_path=tiny_llama, stage='sft', do_train=True, finetuning_type='lora', lora_target='all',
                dataset='alpaca_demo', dataset_dir=str(ROOT / 'data'), template='llama3', cutoff_len=64, max_samples=8,
                output_dir=str(tmp_path / 'run'), overwrite_output_dir=True, per_device_train_batch_size=4,
                learning_rate=1e-2, max_steps=16, logging_steps=4, report_to='none', save_strategy='no', seed=0)


@pytest.mark.parametrize('keys', [dict(use_dft_loss=True), dict(use_eaft_loss=True, eaft_alpha=0.5),
                                  dict(use_asft_loss=True, asft_alpha=0.1),
                                  dict(use_asft_loss=True, finetuning_type='full', learning_rate=1e-3)],
                         ids=['dft', 'eaft', 'asft-lora', 'asft-full'])
def test_sft_loss_variants_train(base, keys):
    "The plain cross-entropy on the training rows falls (DFT's own loss, -p log p, rises while p < 1/e)."
    res = run_exp({**base, 'eval_dataset': 'alpaca_demo', 'eval_strategy': 'steps', 'eval_steps': 8,
                   'eval_on_start': True, **keys})
    ce = [r['eval_loss'] for r in map(json.loads, open(Path(res.output_dir) / 'trainer_log.jsonl')) if 'eval_loss' in r]
    assert ce == sorted(ce, reverse=True) and ce[-1] < ce[0] - 0.2, ce


@pytest.mark.parametrize('keys', [dict(use_galore=True, galore_rank=4, galore_update_interval=4),
                                  dict(use_apollo=True, apollo_rank=4, apollo_update_interval=4),
                                  dict(use_adam_mini=True), dict(use_muon=True),
                                  dict(use_galore=True, galore_rank=4, galore_layerwise=True),
                                  dict(use_apollo=True, apollo_rank=4, apollo_layerwise=True),
                                  dict(use_badam=True, badam_switch_interval=2)],
                         ids=['galore', 'apollo', 'adam_mini', 'muon', 'galore_layerwise', 'apollo_layerwise', 'badam'])
def test_optimizers_train(base, keys, tmp_path):
    cfg = {**base, 'finetuning_type': 'full', 'learning_rate': 3e-3, 'save_strategy': 'steps', 'save_steps': 8, **keys}
    res = run_exp(cfg)
    ls = losses(res.output_dir)
    assert ls == sorted(ls, reverse=True) and ls[-1] < ls[0] - 0.5, ls
    assert (Path(res.output_dir) / 'checkpoint-8' / 'optimizer.pt').exists()
    if keys.get('use_muon'):   # the two optimizers' states round-trip through a checkpoint: resume continues
        again = run_exp({**cfg, 'overwrite_output_dir': False, 'max_steps': 20})
        assert again.trainer.state.global_step == 20


def test_dpo_bco_and_ld_alpha(tiny_llama, tmp_path):
    cfg = dict(model_name_or_path=tiny_llama, stage='dpo', do_train=True, finetuning_type='lora', lora_target='all',
               dataset='pref_demo', dataset_dir=str(ROOT / 'data'), template='llama3', cutoff_len=64, max_samples=8,
               per_device_train_batch_size=4, learning_rate=1e-2, max_steps=12, logging_steps=4, report_to='none',
               save_strategy='no', seed=0, pref_bco_weight=0.5, ld_alpha=0.5, output_dir=str(tmp_path / 'dpo'))
    ls = losses(run_exp(cfg).output_dir)
    assert ls[-1] < ls[0], ls


def test_early_stopping(base, tmp_path):
    "Evaluations that never improve (learning rate 0) stop the run after early_stopping_steps of them."
    res = run_exp({**base, 'learning_rate': 0.0, 'max_steps': 40, 'val_size': 0.25, 'eval_strategy': 'steps',
                   'eval_steps': 2, 'early_stopping_steps': 2})
    assert res.trainer.state.global_step == 6   # the best at step 2, no better at 4 and 6


def test_added_tokens_train_and_reload(base, tmp_path):
    "New special tokens start from their descriptions, train (embeddings in full beside LoRA) and reload identically."
    desc = tmp_path / 'tokens.yaml'
    desc.write_text(yaml.safe_dump({'<think>': 'reason step by step', '</think>': 'the end of reasoning'}))
    res = run_exp({**base, 'new_special_tokens_config': str(desc), 'init_special_tokens': 'desc_init',
                   'add_tokens': '<box>', 'save_strategy': 'no'})
    out = Path(res.output_dir)
    tok = res.trainer.processing_class
    ids = tok.convert_tokens_to_ids(['<think>', '</think>', '<box>'])
    assert len(set(ids)) == 3 and all(i >= 804 for i in ids)
    assert 'hf_hub_token' not in (out / 'llmft_args.yaml').read_text()
    chat = ChatModel(str(out))
    x = torch.tensor([[1, 2, *ids]])
    model = res.trainer.model.eval()
    with torch.no_grad():
        assert torch.allclose(chat.engine.model(input_ids=x).logits, model(input_ids=x).logits, atol=1e-5)
    assert ChatModel(str(out)).tokenizer.convert_tokens_to_ids('<think>') == ids[0]


def test_train_from_scratch(base):
    res = run_exp({**base, 'finetuning_type': 'full', 'train_from_scratch': True, 'learning_rate': 3e-3})
    ls = losses(res.output_dir)
    assert ls[-1] < ls[0], ls


def test_eval_num_beams_reaches_generate(base, tmp_path):
    "eval_num_beams wins over num_beams: predictions with eval_num_beams 3 are those of num_beams 3."
    cfg = {**base, 'do_train': False, 'do_predict': True, 'predict_with_generate': True, 'eval_dataset': 'alpaca_demo',
           'max_samples': 4, 'max_new_tokens': 6, 'finetuning_type': 'full'}
    read = lambda out: (Path(out) / 'generated_predictions.jsonl').read_text()
    a = read(run_exp({**cfg, 'eval_num_beams': 3, 'output_dir': str(tmp_path / 'a')}).output_dir)
    b = read(run_exp({**cfg, 'num_beams': 3, 'output_dir': str(tmp_path / 'b')}).output_dir)
    c = read(run_exp({**cfg, 'output_dir': str(tmp_path / 'c')}).output_dir)
    assert a == b and a != c
