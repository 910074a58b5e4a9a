"""Online RL stages grpo and rloo, end to end on the tiny model: the mean reward rises on a task the random model starts
bad at (grpo and rloo, LoRA and full), a step equals trl's own trainer on the same prompts, a resumed run continues the
same reward trajectory, two processes train like one, and every refusal is one line before any work."""
import json, re
from pathlib import Path
import pytest
from datasets import Dataset
from conftest import ROOT, cli
from llmft.core import ConfigError, DataError, RewardError
from llmft.rundir import RunDir
from llmft.train.tuner import run_exp

pytestmark = pytest.mark.slow   # real rollouts: each run samples a few hundred short completions
DIGITS = f"{ROOT / 'tests' / 'assets' / 'rewards.py'}:digit_share"


@pytest.fixture
def rl_cfg(sft_cfg):
    "GRPO with LoRA on the demo prompts, rewarded by the share of digits in the answer (the random model: ~3%)."
    return {**sft_cfg, 'stage': 'grpo', 'max_samples': 64, 'per_device_train_batch_size': 8, 'num_generations': 4,
            'max_completion_length': 16, 'reward_funcs': [DIGITS], 'temperature': 0.3, 'top_p': 1.0, 'top_k': 0,
            'lr_scheduler_type': 'constant'}


def log_rows(out):
    return [json.loads(l) for l in open(Path(out) / 'trainer_log.jsonl')]


def rewards(out):
    return {r['current_steps']: r['reward'] for r in log_rows(out) if 'reward' in r}


# temperature 0.3: the tiny random model's next-token distribution is nearly flat (entropy 6.69 of ln 832 = 6.72), and
# adapters on its linear layers move logits only by what its final norm lets through; sharper sampling makes the
# reward's signal reachable by LoRA within 40 steps (full fine-tuning learns at temperature 1 as well).
# rloo: beta 0 and normalize_advantages (its advantages are raw reward differences, ~0.03 here, and a KL penalty in the
# reward would outweigh them).
CASES = {'grpo-lora': dict(), 'grpo-full': dict(finetuning_type='full', learning_rate=5e-3, beta=0.04),
         'grpo-freeze': dict(finetuning_type='freeze', learning_rate=5e-3),
         'rloo-lora': dict(stage='rloo', beta=0.0, normalize_advantages=True),
         'rloo-full': dict(stage='rloo', finetuning_type='full', learning_rate=5e-3, beta=0.0,
                           normalize_advantages=True)}


@pytest.mark.parametrize('case', CASES)
def test_mean_reward_rises(rl_cfg, case):
    res = run_exp({**rl_cfg, **CASES[case]})
    r = list(rewards(res.output_dir).values())
    start, end = r[0], sum(r[-2:]) / 2
    assert len(r) == 8 and start < 0.1, r
    assert end > start + 0.4, f'the mean reward did not rise: {r}'
    run = RunDir(res.output_dir)
    assert run.file('adapter_model.safetensors' if 'lora' in case else 'model.safetensors').exists()
    recs = run.rollouts()
    assert recs and {'digit_share'} == set(recs[-1]['rewards']) and len(recs[-1]['completions']) == 4
    assert sorted({x['step'] for x in recs}) == [5, 10, 15, 20, 25, 30, 35, 40]   # each logging step once


@pytest.mark.parametrize('stage', ['grpo', 'rloo'])
def test_steps_equal_trls_own_trainer(rl_cfg, tmp_path, stage):
    ("llmft's grpo / rloo and trl's own GRPOTrainer / RLOOTrainer on the same prompts (given to trl as text it "
     "tokenizes to the ids the template rendered), the same model and seed: the same rewards, losses and gradients, "
     "step by step. num_iterations 2: the second pass over each batch of rollouts has a loss away from 0.")
    from transformers import AutoModelForCausalLM, set_seed
    from trl import GRPOTrainer, RLOOTrainer
    from llmft.hparams.parser import parse_recipe
    from llmft.data.pipeline import prepare
    from llmft.train.grpo import online_config
    from llmft.train.rewards import load_rewards
    cfg = {**rl_cfg, 'stage': stage, 'finetuning_type': 'full', 'max_steps': 4, 'logging_steps': 1, 'max_samples': 8,
           'disable_shuffling': True, 'num_iterations': 2, 'beta': 0.0}
    ours = [r for r in log_rows(run_exp(cfg).output_dir) if 'loss' in r]
    args = parse_recipe({**cfg, 'output_dir': str(tmp_path / 'trl')}).args
    tok, _, ds = prepare(args, in_run=False)
    data = ds['train_dataset']
    text = [p.removeprefix(tok.bos_token) for p in data['prompt']]   # trl's tokenizer call adds the BOS itself
    assert [tok(t)['input_ids'] for t in text] == [list(x) for x in data['input_ids']]
    set_seed(0)
    model = AutoModelForCausalLM.from_pretrained(cfg['model_name_or_path'])
    model.generation_config.eos_token_id = [tok.eos_token_id]
    trainer = {'grpo': GRPOTrainer, 'rloo': RLOOTrainer}[stage](
        model=model, reward_funcs=load_rewards(cfg['reward_funcs'], args.finetuning, tok),
        args=online_config(stage, args.training, args.finetuning, args.generating),
        train_dataset=Dataset.from_dict({'prompt': text, 'solution': data['solution']}), processing_class=tok)
    trainer.train()
    theirs = [h for h in trainer.state.log_history if 'loss' in h]
    assert len(ours) == len(theirs) == 4
    scored = [a for a in ours if 'reward' in a]   # the steps that generated (the others reuse their rollouts)
    assert len(scored) == 2 and all(a['reward'] > 0 for a in scored), ours
    # not 0 == 0 (a second pass may clip every token, and so have no gradient, after a step of lr 1e-2)
    assert all(a['grad_norm'] > 1e-3 for a in scored) and max(abs(a['loss']) for a in ours) > 1e-3, ours
    for a, b in zip(ours, theirs):
        for k in ('reward', 'loss', 'grad_norm', 'completions/mean_length'):
            assert (k in a) == (k in b), (k, ours, theirs)
            if k in a: assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-7), (k, ours, theirs)


def test_rollout_sampling_defaults_and_reference(rl_cfg):
    ("A recipe leaving temperature / top_p / top_k unset samples as trl does (1, 1, 0), not with the chat defaults; "
     "full fine-tuning with beta > 0 gets llmft's frozen reference (trl loads no copy of its own) and logs the KL.")
    from llmft.hparams.parser import parse_recipe
    cfg = {k: v for k, v in rl_cfg.items() if k not in ('temperature', 'top_p', 'top_k')}
    g = parse_recipe(cfg).args.generating
    assert (g.temperature, g.top_p, g.top_k) == (1.0, 1.0, 0)
    res = run_exp({**cfg, 'finetuning_type': 'full', 'beta': 0.04, 'max_steps': 4, 'logging_steps': 2,
                   'learning_rate': 1e-3})
    t = res.trainer
    assert t.beta == 0.04 and t.ref_model is not None and t.args.temperature == 1.0
    assert all(not p.requires_grad for p in t.ref_model.parameters())
    kls = [r['kl'] for r in log_rows(res.output_dir) if 'kl' in r]
    assert len(kls) == 2 and kls[-1] > 0, kls   # the policy moved away from the reference


def test_resume_continues_the_same_reward_trajectory(rl_cfg, tmp_path):
    "Killed (SIGKILL) in step 6 with checkpoints at 2 and 4, resumed: steps 5-8 give the rewards of an unbroken run."
    import subprocess, sys
    cfg = {**rl_cfg, 'max_steps': 8, 'logging_steps': 1, 'save_strategy': 'steps', 'save_steps': 2,
           'overwrite_output_dir': False}
    ref = rewards(run_exp({**cfg, 'output_dir': str(tmp_path / 'ref')}).output_dir)
    (tmp_path / 'cfg.json').write_text(json.dumps(cfg))
    r = subprocess.run([sys.executable, str(ROOT / 'tests' / 'assets' / 'crashing_run.py'), str(tmp_path / 'cfg.json'),
                        'kill', '6'], capture_output=True, text=True, timeout=600)
    assert r.returncode == -9, r.stderr[-3000:]
    out = Path(cfg['output_dir'])
    assert sorted(p.name for p in out.glob('checkpoint-*')) == ['checkpoint-2', 'checkpoint-4']
    got = rewards(run_exp({**cfg, 'resume_from_checkpoint': True}).output_dir)
    assert sorted(got) == list(range(1, 9)), got
    assert max(abs(got[s] - ref[s]) for s in ref) < 1e-6, (got, ref)
    assert sorted({x['step'] for x in RunDir(out).rollouts()}) == list(range(1, 9))   # trimmed, then continued


def test_two_processes_learn_like_one(tiny_llama, tmp_path):
    ("torchrun, 2 gloo processes x 4 completions against 1 process x 8: the same global batch of 2 groups a step, one "
     "set of artifacts, one rollouts file, and the reward rises as in one process. The trajectories are not equal "
     "number for number: trl samples each process with its own seed (so processes never duplicate completions).")
    common = ['examples/train_full/llama3_full_grpo.yaml', f'model_name_or_path={tiny_llama}', 'max_samples=64',
              f'reward_funcs={DIGITS}', 'reward_weights=null', 'max_completion_length=16', 'max_steps=30',
              'logging_steps=5', 'save_strategy=no', 'plot_loss=false', 'learning_rate=5e-3', 'temperature=0.3',
              'beta=0']
    one = cli('train', *common, 'per_device_train_batch_size=8', f'output_dir={tmp_path / "one"}')
    assert one.returncode == 0, one.stderr[-3000:]
    two = cli('train', *common, 'per_device_train_batch_size=4', 'nproc_per_node=2', f'output_dir={tmp_path / "two"}')
    assert two.returncode == 0, two.stderr[-3000:]
    assert '--nproc_per_node=2' in two.stdout and two.stdout.count('Done. Run folder') == 1
    a, b = rewards(tmp_path / 'one'), rewards(tmp_path / 'two')
    assert sorted(a) == sorted(b) == [5, 10, 15, 20, 25, 30]
    for r in (a, b): assert r[30] > r[5] + 0.4, (a, b)
    for run in ('one', 'two'):
        recs = RunDir(tmp_path / run).rollouts()
        assert {x['step'] for x in recs} == set(a) and all(len(x['completions']) == 4 for x in recs)
    assert (tmp_path / 'two' / 'model.safetensors').exists()


def test_refusals_are_one_line_before_any_work(rl_cfg, tmp_path):
    cases = [
        (dict(reward_funcs=None), ConfigError, 'stage grpo needs reward_funcs'),
        (dict(num_generations=3), ConfigError, 'not a multiple of num_generations=3'),
        (dict(use_vllm=True), ConfigError, 'use_vllm needs'),
        (dict(stage='rloo', loss_type='grpo'), ConfigError, 'loss_type and scale_rewards are grpo settings'),
        (dict(reward_funcs=['acuracy']), ConfigError, "did you mean 'accuracy'"),
        (dict(reward_funcs=[f"{ROOT / 'tests' / 'assets' / 'rewards.py'}:needs_difficulty"]), DataError,
         "needs_difficulty"),
        (dict(do_eval=True, val_size=0.1), ConfigError, 'stage grpo trains only'),
        (dict(val_size=0.1), ConfigError, 'val_size / eval_dataset would hold prompts out of training'),
        (dict(streaming=True), ConfigError, 'set streaming: false'),
        (dict(do_sample=False), ConfigError, 'do_sample: false would give every completion'),
    ]
    for over, kind, words in cases:
        with pytest.raises(kind, match=re.escape(words)) as e:
            run_exp({**rl_cfg, **over})
        assert '\n' not in str(e.value), str(e.value)
        assert not (tmp_path / 'run' / 'trainer_log.jsonl').exists()   # refused before training began


def test_missing_column_names_what_the_data_has(rl_cfg):
    with pytest.raises(DataError) as e:
        run_exp({**rl_cfg, 'reward_funcs': [f"{ROOT / 'tests' / 'assets' / 'rewards.py'}:needs_difficulty"]})
    assert 'difficulty' in str(e.value) and 'solution' in str(e.value), str(e.value)


def test_data_without_prompts_is_refused(rl_cfg, tmp_path):
    data = tmp_path / 'data'
    data.mkdir()
    (data / 'empty.json').write_text(json.dumps([{'instruction': '', 'input': '', 'output': '7'}] * 4))
    (data / 'dataset_info.json').write_text(json.dumps({'empty': {'file_name': 'empty.json'}}))
    with pytest.raises(DataError, match='no usable rows') as e:
        run_exp({**rl_cfg, 'dataset': 'empty', 'dataset_dir': str(data)})
    assert 'empty instruction and input' in str(e.value)


def test_extra_columns_reach_reward_functions(rl_cfg, tmp_path):
    "A column the registry entry does not map reaches a reward function by its name, row by row with its solution."
    data = tmp_path / 'data'
    data.mkdir()
    rows = [{'instruction': f'What is {i} + {i}?', 'output': str(2 * i), 'difficulty': i % 3} for i in range(16)]
    (data / 'sums.json').write_text(json.dumps(rows))
    (data / 'dataset_info.json').write_text(json.dumps({'sums': {'file_name': 'sums.json'}}))
    seen = []
    def by_difficulty(completions, difficulty, solution):
        seen.append((list(difficulty), list(solution)))
        return [float(d) for d in difficulty]
    res = run_exp({**rl_cfg, 'dataset': 'sums', 'dataset_dir': str(data), 'max_steps': 2,
                   'reward_funcs': [by_difficulty]})
    assert seen and all(len(d) == 8 for d, _ in seen)
    diffs = {(s, d) for ds, ss in seen for d, s in zip(ds, ss)}
    assert diffs <= {(str(2 * i), i % 3) for i in range(16)}, diffs   # each solution with its own row's difficulty
    args = (Path(res.output_dir) / 'llmft_args.yaml').read_text()
    assert 'by_difficulty' in args   # the function is recorded by name in the resolved recipe


def test_a_reward_that_raises_stops_the_run_cleanly(tiny_llama, tmp_path):
    "One line with exit status 6 naming the function, step and row; the checkpoints before it stay whole."
    out = tmp_path / 'run'
    r = cli('train', 'examples/train_lora/llama3_lora_grpo.yaml', f'model_name_or_path={tiny_llama}', 'max_samples=16',
            f"reward_funcs={ROOT / 'tests' / 'assets' / 'rewards.py'}:breaks_from_step_3", 'reward_weights=null',
            'max_completion_length=8', 'max_steps=6', 'save_steps=1', 'logging_steps=1', f'output_dir={out}')
    assert r.returncode == 6, r.stderr[-3000:]
    lines = [l for l in r.stderr.splitlines() if 'llmft: reward error: ' in l]
    assert len(lines) == 1 and lines[0].startswith('llmft: reward error: '), r.stderr[-2000:]   # not after the bar
    last = lines[0]
    assert 'breaks_from_step_3' in last, last
    # global_step 2: steps 1 and 2 are done, the failure is in step 3; every completion fails, the first is named
    assert 'ValueError: cannot parse the answer at step 3, completion 0 of the batch' in last, last
    assert 'checkpoint-2' in last and 'resume_from_checkpoint' in last, last
    assert 'Traceback' not in r.stderr
    from llmft.rundir import CHECKPOINT_DONE
    assert sorted(p.name for p in out.glob('checkpoint-*')) == ['checkpoint-1', 'checkpoint-2']
    assert all((p / CHECKPOINT_DONE).exists() for p in out.glob('checkpoint-*'))
