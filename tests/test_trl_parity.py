"""Our dpo / kto / rm losses against trl's own implementation on the same inputs.

trl 1.16 computes these losses inline in its trainers' `_compute_loss`, on its own tokenization and through a fused LM-head
forward that returns per-token log-probs. Here trl's real `_compute_loss` runs unchanged on a stand-in `self` that carries
the attributes it reads, with the tiny model behind a thin wrapper that answers the fused-head call (per-token log-probs of
the labels, zero where a label is -100). Our trainers run on the same batch and the same models; the losses must agree."""
import copy, types
from collections import defaultdict
import pytest, torch
from accelerate import Accelerator
from trl import DPOTrainer as TrlDPO, KTOTrainer as TrlKTO, RewardTrainer as TrlReward
from conftest import ROOT
from llmft.data.collators import KTOCollator, PairwiseCollator
from llmft.data.pipeline import get_dataset
from llmft.data.templates import get_template
from llmft.hparams.data import DataArguments
from llmft.hparams.finetune import FinetuningArguments
from llmft.hparams.model import ModelArguments
from llmft.hparams.train import TrainingArguments
from llmft.data.tokenizer import load_tokenizer
from llmft.model.loader import load_model
from llmft.train.dpo import DPOTrainer
from llmft.train.kto import KTOTrainer
from llmft.train.rm import RewardTrainer


class Fused(torch.nn.Module):
    "A causal LM answering trl's `fused_lm_head=True` call: per-token log-probs of the shifted labels and the metrics trl reads."
    def __init__(self, lm):
        super().__init__(); self.lm, self.is_gradient_checkpointing = lm, False

    def forward(self, input_ids, attention_mask=None, labels=None, fused_lm_head=False, use_cache=None, **kw):
        logits = self.lm(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
        lab = labels[:, 1:]
        lp = logits.log_softmax(-1).gather(-1, lab.clamp(min=0)[..., None]).squeeze(-1) * (lab != -100)
        return types.SimpleNamespace(log_probs=lp, entropy=torch.zeros_like(lp), mean_logits=logits.mean(-1),
                                     is_top1=logits.argmax(-1) == lab)


def stand_in(**attrs):
    "The attributes trl's `_compute_loss` reads from its trainer."
    base = dict(accelerator=Accelerator(cpu=True), aux_loss_enabled=False, router_aux_loss_coef=0.0, precompute_ref_logps=False,
                _metrics={'train': defaultdict(list), 'eval': defaultdict(list)}, _total_train_tokens=0, _tp_size=1,
                args=types.SimpleNamespace(gradient_checkpointing_kwargs=None))
    return types.SimpleNamespace(**{**base, **attrs})


@pytest.fixture(scope='module')
def parts(tiny_llama):
    margs = ModelArguments(model_name_or_path=tiny_llama)
    tok = load_tokenizer(margs)
    targs = TrainingArguments(output_dir='/tmp/llmft-trl-parity', use_cpu=True, report_to='none', remove_unused_columns=False)
    policy = load_model(tok, margs, FinetuningArguments(finetuning_type='full'), False, targs)
    ref = copy.deepcopy(policy)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in ref.parameters(): p.add_(0.02 * torch.randn_like(p))   # a reference that differs from the policy
    return tok, targs, policy, ref


def batches(tok, targs, stage, dataset, n):
    dargs = DataArguments(dataset=dataset, dataset_dir=str(ROOT / 'data'), template='llama3', cutoff_len=64, max_samples=n)
    ds = get_dataset(get_template('llama3', tok), dargs, targs, stage, tok)['train_dataset']
    return [ds[i] for i in range(n)]


@pytest.mark.parametrize('loss', ['sigmoid', 'hinge', 'ipo'])
def test_dpo_loss_matches_trl(loss, parts):
    tok, targs, policy, ref = parts
    batch = PairwiseCollator(tok.pad_token_id)(batches(tok, targs, 'dpo', 'pref_demo', 4))
    f = FinetuningArguments(stage='dpo', finetuning_type='full', pref_loss=loss, pref_beta=0.3)
    ours = DPOTrainer(model=policy, args=targs, processing_class=tok, finetuning_args=f, ref_model=ref)
    with torch.no_grad(): mine = ours.compute_loss(policy.eval(), batch).item()
    fused = Fused(policy).eval()
    trl_self = stand_in(model=fused, ref_model=Fused(ref).eval(), ld_alpha=None, f_divergence_type='reverse_kl', loss_types=[loss],
                        loss_weights=[1.0], beta=0.3, label_smoothing=0.0, use_weighting=False)
    inputs = {'input_ids': batch['input_ids'], 'attention_mask': batch['attention_mask'], 'completion_mask': (batch['labels'] != -100).long()}
    with torch.no_grad(): theirs = TrlDPO._compute_loss(trl_self, fused, inputs, False).item()
    assert abs(mine - theirs) < 1e-5 * max(1, abs(theirs)), (loss, mine, theirs)
    assert loss == 'ipo' or abs(mine - {'sigmoid': 0.6931, 'hinge': 1.0}[loss]) > 1e-3   # the reference does differ from the policy


def test_kto_loss_matches_trl(parts):
    tok, targs, policy, ref = parts
    batch = KTOCollator(tok.pad_token_id)(batches(tok, targs, 'kto', 'kto_demo', 6))
    assert 0 < int(batch['kto_tags'].sum()) < 6
    f = FinetuningArguments(stage='kto', finetuning_type='full', pref_beta=0.3, kto_chosen_weight=1.0, kto_rejected_weight=1.5)
    ours = KTOTrainer(model=policy, args=targs, processing_class=tok, finetuning_args=f, ref_model=ref)
    with torch.no_grad(): mine = ours.compute_loss(policy.eval(), batch).item()
    fused = Fused(policy).eval()
    trl_self = stand_in(model=fused, ref_model=Fused(ref).eval(), calculate_KL=True, loss_type='kto', beta=0.3, desirable_weight=1.0,
                        undesirable_weight=1.5)
    trl_self._compute_kl_logps = types.MethodType(TrlKTO._compute_kl_logps, trl_self)
    inputs = {'input_ids': batch['input_ids'], 'attention_mask': batch['attention_mask'], 'completion_mask': (batch['labels'] != -100).long(),
              'KL_input_ids': batch['kl_input_ids'], 'KL_attention_mask': batch['kl_attention_mask'],
              'KL_completion_mask': (batch['kl_labels'] != -100).long(), 'label': batch['kto_tags']}
    with torch.no_grad(): theirs = TrlKTO._compute_loss(trl_self, fused, inputs, False)
    theirs = (theirs[0] if isinstance(theirs, tuple) else theirs).item()
    assert abs(mine - theirs) < 1e-5, (mine, theirs)


def test_reward_loss_matches_trl(parts, tiny_llama):
    tok, targs, policy, _ = parts
    batch = PairwiseCollator(tok.pad_token_id)(batches(tok, targs, 'rm', 'pref_demo', 4))
    rm = load_model(tok, ModelArguments(model_name_or_path=tiny_llama), FinetuningArguments(finetuning_type='full'), False, targs, add_valuehead=True)
    torch.manual_seed(1); torch.nn.init.normal_(rm.v_head.summary.weight, std=0.5)
    ours = RewardTrainer(model=rm, args=targs, processing_class=tok)
    with torch.no_grad(): mine, (c, r) = ours.compute_loss(rm, batch, return_outputs=True)
    scores = torch.cat([c, r])

    class SeqCls(torch.nn.Module):   # trl expects a sequence-classification model: one logit per row
        def forward(self, input_ids, attention_mask, **kw): return types.SimpleNamespace(logits=scores[:, None])
    trl_self = stand_in(model=SeqCls(), args=types.SimpleNamespace(center_rewards_coefficient=None))
    theirs = TrlReward.compute_loss(trl_self, trl_self.model, dict(batch))
    assert abs(mine.item() - theirs.item()) < 1e-6 and c.ne(r).any()
