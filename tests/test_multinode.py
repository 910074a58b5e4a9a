"""Beyond one machine, on one: two `llmft train` launches with `nnodes=2` meet on 127.0.0.1 as two "nodes" (one process
each), with caches that the nodes do or do not share; a worker killed mid-run is restarted by torchrun (`max_restarts`)
and the group resumes from the last complete checkpoint on the uninterrupted run's loss trajectory."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import psutil
import pytest
from conftest import ROOT, cli, free_port
from llmft.rundir import RunDir

pytestmark = pytest.mark.slow   # several real processes per test
LLMFT = str(Path(sys.executable).parent / 'llmft')


def losses(out):
    "Step -> loss of a run's trainer_log.jsonl (each step logged once)."
    rows = [json.loads(l) for l in open(Path(out) / 'trainer_log.jsonl') if '"loss"' in l]
    steps = [r['current_steps'] for r in rows]
    assert len(steps) == len(set(steps)), f'a step is logged twice: {steps}'
    return {r['current_steps']: r['loss'] for r in rows}


def recipe(tiny, **kw):
    "The demo SFT recipe of tests/test_distributed.py as CLI words: global batch 8 from the whole 8-example set."
    base = dict(model_name_or_path=tiny, dataset='alpaca_demo', max_samples=8, max_steps=4, logging_steps=1, val_size=0,
                eval_strategy='no', plot_loss='false', learning_rate=0.5, optim='sgd', warmup_ratio=0,
                lr_scheduler_type='constant')
    return ['examples/quickstart_sft.yaml', *(f'{k}={v}' for k, v in {**base, **kw}.items())]


def kill_tree(p):
    "Kill a launcher and every process under it (a failed test leaves no worker behind)."
    try: procs = [*psutil.Process(p.pid).children(recursive=True), psutil.Process(p.pid)]
    except psutil.Error: return
    for c in procs:
        try: c.kill()
        except psutil.Error: pass


def nodes(tiny, tmp_path, caches, **kw):
    "Start node 0 and node 1 (one process each, their own run folder and LLMFT_CACHE); wait; (results, folders)."
    port, procs, outs = free_port(), [], []
    for rank, cache in enumerate(caches):
        out = tmp_path / f'node{rank}'
        words = recipe(tiny, per_device_train_batch_size=4, nnodes=2, node_rank=rank, nproc_per_node=1,
                       master_addr='127.0.0.1', master_port=port, output_dir=out, **kw)
        env = {**os.environ, 'LLMFT_CACHE': str(cache), 'PYTHONUNBUFFERED': '1'}
        with open(tmp_path / f'node{rank}.log', 'w') as log:   # a file, not a pipe nobody reads while the other waits
            procs.append(subprocess.Popen([LLMFT, 'train', *words], cwd=ROOT, env=env, text=True, stdout=log,
                                          stderr=subprocess.STDOUT))
        outs.append(out)
    try:
        for p in procs: p.wait(timeout=400)
    finally:
        for p in procs: kill_tree(p)
    return [(p.returncode, (tmp_path / f'node{i}.log').read_text()) for i, p in enumerate(procs)], outs


def tokenized(cache):
    "The tokenized datasets a node's cache holds."
    return [p for p in (Path(cache) / 'tokenized').glob('*') if (p / 'data').is_dir()]


@pytest.fixture(scope='module')
def one_process(tiny_llama, tmp_path_factory):
    "The losses of the one-process run with the same global batch (8)."
    out = tmp_path_factory.mktemp('one')
    one = cli('train', *recipe(tiny_llama, per_device_train_batch_size=8, output_dir=out))
    assert one.returncode == 0, one.stderr[-3000:]
    return losses(out)


def same_losses(a, b):
    "As for two processes on one machine: each averages its own tokens, DDP the gradients (within 1%, then 3%)."
    assert sorted(a) == sorted(b) == [1, 2, 3, 4], (a, b)
    assert b[1] == pytest.approx(a[1], rel=1e-2) and list(b.values()) == pytest.approx(list(a.values()), rel=3e-2)
    assert a[4] < a[1]


def test_two_nodes_match_one_process_and_tokenize_per_node(tiny_llama, tmp_path, one_process):
    caches = [tmp_path / 'cache0', tmp_path / 'cache1']       # no shared file system: each node its own cache
    (r0, t0), (r1, t1) = nodes(tiny_llama, tmp_path, caches)[0]
    assert r0 == 0 and r1 == 0, (t0[-3000:], t1[-3000:])
    assert '--nnodes=2' in t0 and '--node_rank=1' in t1
    same_losses(one_process, losses(tmp_path / 'node0'))
    # exactly one set of artifacts, by global rank 0; node 1's folder holds no model and no log
    assert (tmp_path / 'node0' / 'adapter_model.safetensors').exists()
    assert not [p.name for p in (tmp_path / 'node1').glob('*') if p.suffix in ('.safetensors', '.jsonl', '.json')]
    assert (t0 + t1).count('Done. Run folder') == 1 and 'Done. Run folder' in t0
    assert len(tokenized(caches[0])) == len(tokenized(caches[1])) == 1   # each node's first process tokenized


def test_two_nodes_elastic_rendezvous(tiny_llama, tmp_path, one_process):
    "With rdzv_id the nodes meet at a c10d store and get their ranks there: whichever is rank 0 writes the one run."
    (r0, t0), (r1, t1) = nodes(tiny_llama, tmp_path, [tmp_path / 'c0', tmp_path / 'c1'], rdzv_id='job1')[0]
    assert r0 == 0 and r1 == 0, (t0[-3000:], t1[-3000:])
    assert '--rdzv_id=job1' in t0 and '--rdzv_backend=c10d' in t0 and '--node_rank' not in t0
    main = [i for i in (0, 1) if (tmp_path / f'node{i}' / 'adapter_model.safetensors').exists()]
    assert len(main) == 1 and (t0 + t1).count('Done. Run folder') == 1
    same_losses(one_process, losses(tmp_path / f'node{main[0]}'))


def test_shared_file_system_tokenizes_once(tiny_llama, tmp_path):
    shared = tmp_path / 'cache'
    (r0, t0), (r1, t1) = nodes(tiny_llama, tmp_path, [shared, shared], data_shared_file_system='true')[0]
    assert r0 == 0 and r1 == 0, (t0[-3000:], t1[-3000:])
    assert 'Tokenized dataset saved to' in t0 and 'Tokenized dataset saved to' not in t1
    assert 'Loading tokenized dataset from' in t1
    assert len(tokenized(shared)) == 1


def test_shared_file_system_that_is_not_shared_is_named(tiny_llama, tmp_path):
    "The claim of a shared file system with two separate caches: node 1 says which folder it cannot see, in one line."
    (r0, t0), (r1, t1) = nodes(tiny_llama, tmp_path, [tmp_path / 'c0', tmp_path / 'c1'],
                               data_shared_file_system='true')[0]
    assert r1 == 3, t1[-3000:]
    line = [l for l in t1.splitlines() if l.startswith('llmft: data error')]
    assert line and 'data_shared_file_system: true, but' in line[0] and 'set data_shared_file_system: false' in line[0]
    assert 'Traceback' not in t1 and r0 != 0


def workers(launcher):
    "The training processes under a torchrun launcher, by local rank."
    found = {}
    for c in psutil.Process(launcher.pid).children():   # torchrun runs in the launcher: the workers are its children
        try: env = c.environ()
        except psutil.Error: continue
        if 'LOCAL_RANK' in env and 'TORCHELASTIC_RUN_ID' in env: found[int(env['LOCAL_RANK'])] = c
    return found


def test_a_killed_worker_is_restarted_and_resumes(tiny_llama, tmp_path):
    "SIGKILL one of two workers once a checkpoint is complete: torchrun restarts the group, which resumes from it."
    kw = dict(per_device_train_batch_size=2, max_samples=16, max_steps=24, save_steps=4, save_strategy='steps',
              learning_rate=0.05, nproc_per_node=2)
    ref = cli('train', *recipe(tiny_llama, **kw, output_dir=tmp_path / 'ref'))
    assert ref.returncode == 0, ref.stderr[-3000:]
    out = tmp_path / 'run'
    p = subprocess.Popen([LLMFT, 'train', *recipe(tiny_llama, **kw, max_restarts=1, output_dir=out)], cwd=ROOT,
                         text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 300
        while RunDir(out).last_checkpoint(set_aside=False) is None:   # (only look: the run is writing)
            assert p.poll() is None and time.time() < deadline, p.communicate()[0][-3000:]
            time.sleep(0.05)
        victim = workers(p)[1]
        victim.send_signal(signal.SIGKILL)
        text = p.communicate(timeout=400)[0]
    finally: kill_tree(p)
    assert p.returncode == 0, text[-3000:]
    assert 'Restarted by torchrun after a failure: resuming training from' in text, text[-3000:]
    got, want = losses(out), losses(tmp_path / 'ref')
    assert sorted(got) == sorted(want) == list(range(1, 25))
    worst = max(abs(got[s] - want[s]) for s in want)
    assert worst < 1e-5, f'the restarted run differs by {worst}: {got} vs {want}'


def test_full_fine_tune_under_ddp(tiny_llama, tmp_path):
    ("A full fine-tune in two processes: the chunked loss applies the trained (tied) head outside DDP's forward, so it "
     "is off there (else DDP fails: 'marked as ready twice'); the losses are the one-process run's, as for LoRA.")
    full = dict(finetuning_type='full', per_device_train_batch_size=4, nproc_per_node=2, output_dir=tmp_path / 'two')
    r = cli('train', *recipe(tiny_llama, **full))
    assert r.returncode == 0, r.stderr[-3000:]
    one = cli('train', *recipe(tiny_llama, finetuning_type='full', per_device_train_batch_size=8,
                               output_dir=tmp_path / 'one'))
    assert one.returncode == 0, one.stderr[-3000:]
    same_losses(losses(tmp_path / 'one'), losses(tmp_path / 'two'))
    assert (tmp_path / 'two' / 'model.safetensors').exists()
