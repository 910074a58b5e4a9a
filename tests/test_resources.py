"""Resource failures are not bugs: out of memory, a full disk, a killed worker, a lost peer — each provoked on CPU,
each ends `llmft train` with one line naming the resource, where the run was, what to change and the checkpoint
to resume from, and an exit status of its own (`core.EXIT_CODES`); no traceback, no "bug in llmft"."""
import json, os, random, re, subprocess, sys, time
from pathlib import Path
import psutil
import pytest
from conftest import ROOT, free_port
from llmft.core import EXIT_CODES
from llmft.rundir import CHECKPOINT_DONE, RunDir

LLMFT = str(Path(sys.executable).parent / 'llmft')
HEADROOM = 1.5 * 2**30   # address space a small run needs beyond its imports (measured: about 0.5 GiB)


def words(cfg:dict) -> list[str]:
    return [f'{k}={v}' for k, v in cfg.items()]


def last_line(text:str) -> str:
    return text.strip().splitlines()[-1]


def assert_one_line(r_err:str, start:str):
    "The command ended on one line that starts with `start`, its only `llmft:` line, with no traceback or bug report."
    assert last_line(r_err).startswith(start), r_err[-3000:]
    assert [l for l in r_err.splitlines() if l.startswith('llmft: ')] == [last_line(r_err)], r_err[-3000:]
    assert 'Traceback' not in r_err and 'bug in llmft' not in r_err and 'internal error' not in r_err, r_err[-3000:]


def newest_complete(out) -> Path:
    return [p for p in RunDir(out).checkpoints() if (p / CHECKPOINT_DONE).exists()][-1]


def ckpt_cfg(sft_cfg, tmp_path, **kw) -> dict:
    return {**sft_cfg, 'max_samples': 16, 'save_strategy': 'steps', 'save_steps': 2, 'logging_steps': 1,
            'output_dir': str(tmp_path / 'run'), 'overwrite_output_dir': False, **kw}


def test_out_of_cpu_memory(tiny_llama, tmp_path):
    "A memory limit on the process (RLIMIT_AS), a batch far too big for it: exit 7, the batch size named."
    rnd = random.Random(0)
    vocab = 'the model learns a long answer from every row of this data set while memory runs out'.split()
    rows = [{'instruction': ' '.join(rnd.choice(vocab) for _ in range(600)), 'output': 'a short answer'}
            for _ in range(32)]   # about 1500 tokens each
    (tmp_path / 'long.json').write_text(json.dumps(rows))
    (tmp_path / 'dataset_info.json').write_text(json.dumps({'long': {'file_name': 'long.json'}}))
    cfg = dict(model_name_or_path=tiny_llama, stage='sft', do_train=True, finetuning_type='lora', lora_target='all',
               dataset='long', dataset_dir=tmp_path, template='llama3', cutoff_len=2048, output_dir=tmp_path / 'run',
               per_device_train_batch_size=32, max_steps=2, report_to='none', save_strategy='no',
               disable_gradient_checkpointing=True, flash_attn='disabled')   # eager attention: batch x heads x len^2
    # the limit is set by the process itself once the libraries are imported (their size differs between machines):
    # then it is `llmft train`, as the console script runs it, with HEADROOM more address space
    code = ('import resource, sys\nimport torch, transformers, peft, trl, datasets\nfrom llmft.launch.cli import main\n'
            "size = int(open('/proc/self/statm').read().split()[0]) * resource.getpagesize()\n"
            f'resource.setrlimit(resource.RLIMIT_AS, (size + {int(HEADROOM)}, size + {int(HEADROOM)}))\n'
            f"sys.exit(main(['train', *{words(cfg)!r}]))\n")
    t = time.time()
    r = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, 'OMP_NUM_THREADS': '1'})
    print(f'out of memory: {time.time() - t:.1f} s; {last_line(r.stderr)}')
    assert r.returncode == EXIT_CODES['memory'] == 7, r.stderr[-3000:]
    assert_one_line(r.stderr, 'llmft: out of memory: CPU memory ran out during training step 1 of 2 (asking for ')
    assert 'lower per_device_train_batch_size (now 32) or cutoff_len' in last_line(r.stderr)


SITE = '''"Injected by tests/test_resources.py: the disk fills up while checkpoint-{step} is written, after its weights."
import errno, os
import torch
_save = torch.save
def save(obj, f, *a, **kw):
    if 'checkpoint-{step}' in str(f) and str(f).endswith('optimizer.pt'):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
    return _save(obj, f, *a, **kw)
torch.save = save
'''


def test_full_disk_while_saving_a_checkpoint(sft_cfg, tmp_path):
    "No space left while checkpoint-4 is written: exit 8, checkpoint-2 named; resuming from it finishes the run."
    site = tmp_path / 'site'
    site.mkdir()
    (site / 'sitecustomize.py').write_text(SITE.format(step=4))
    cfg = ckpt_cfg(sft_cfg, tmp_path, max_steps=6)
    t = time.time()
    r = subprocess.run([LLMFT, 'train', *words(cfg)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, 'PYTHONPATH': str(site)})
    print(f'full disk: {time.time() - t:.1f} s; {last_line(r.stderr)}')
    assert r.returncode == EXIT_CODES['disk'] == 8, r.stderr[-3000:]
    out = Path(cfg['output_dir'])
    assert_one_line(r.stderr, 'llmft: disk full: no space left on the disk while saving checkpoint-4, writing ')
    line = last_line(r.stderr)
    assert 'free there); free space on that disk or set output_dir to a disk with room; save_total_limit' in line
    assert line.endswith(f'Last complete checkpoint: {out / "checkpoint-2"}: resume with resume_from_checkpoint: '
                         'true; the incomplete checkpoint-4 will be set aside.'), line
    assert not (out / 'checkpoint-4' / CHECKPOINT_DONE).exists()
    t = time.time()
    again = subprocess.run([LLMFT, 'train', *words({**cfg, 'resume_from_checkpoint': True})], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    print(f'resumed: {time.time() - t:.1f} s')
    assert again.returncode == 0, again.stderr[-3000:]
    steps = [r['current_steps'] for r in RunDir(out).log_records() if 'loss' in r]
    assert steps == [1, 2, 3, 4, 5, 6], steps                  # steps 3 and 4 ran again, from checkpoint-2
    assert (out / 'incomplete-checkpoint-4').is_dir() and (out / 'checkpoint-4' / CHECKPOINT_DONE).exists()


def workers(launcher:subprocess.Popen) -> dict:
    ("The worker processes of a launcher (its own children: `llmft train` runs torchrun's agent in-process), by their "
     "global rank (RANK); not their children, which inherit RANK too.")
    found = {}
    try:
        for c in psutil.Process(launcher.pid).children():
            try: env = c.environ()
            except psutil.Error: continue
            if 'RANK' in env: found[int(env['RANK'])] = c
    except psutil.Error: pass
    return found


def kill_rank_after(launchers:list, rank:int, out:Path, step:int, timeout:float=240):
    "SIGKILL the worker of global `rank` (under one of `launchers`) once the run logged `step` and has a checkpoint."
    deadline = time.time() + timeout
    while time.time() < deadline:
        logged = [r.get('current_steps', 0) for r in RunDir(out).log_records()]
        if logged and max(logged) >= step and any((p / CHECKPOINT_DONE).exists() for p in RunDir(out).checkpoints()):
            for p in launchers:
                if rank in (w := workers(p)):
                    w[rank].kill()
                    return
        assert all(p.poll() is None for p in launchers), 'a launcher ended before the kill'
        time.sleep(0.05)
    raise AssertionError(f'step {step} not reached in {timeout} s')


def stop(procs:list):
    "Kill what is left of the launchers and their workers (a failed test leaves no process behind)."
    for p in procs:
        try: tree = [*psutil.Process(p.pid).children(recursive=True), psutil.Process(p.pid)]
        except psutil.Error: continue
        for c in tree:
            try: c.kill()
            except psutil.Error: pass


def wait_all(procs:list, timeout:float) -> bool:
    "Whether every process ended within `timeout` seconds."
    deadline = time.time() + timeout
    while any(p.poll() is None for p in procs) and time.time() < deadline: time.sleep(0.2)
    return all(p.poll() is not None for p in procs)


def popen(args, log:Path) -> subprocess.Popen:
    return subprocess.Popen([LLMFT, 'train', *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(log, 'w'),
                            env={**os.environ, 'PYTHONUNBUFFERED': '1'})


@pytest.mark.slow
def test_killed_worker(sft_cfg, tmp_path):
    "Two processes; worker 1 killed with SIGKILL (as the out-of-memory killer does): exit 9, one line that says so."
    cfg = ckpt_cfg(sft_cfg, tmp_path, max_steps=400, nproc_per_node=2)
    t = time.time()
    p = popen(words(cfg), tmp_path / 'launch.err')
    try:
        kill_rank_after([p], 1, Path(cfg['output_dir']), step=3)
        ended = wait_all([p], 120)
    finally: stop([p])
    err = (tmp_path / 'launch.err').read_text()
    assert ended, f'the launcher did not end within 120 s of the kill:\n{err[-3000:]}'
    print(f'killed: {time.time() - t:.1f} s; {last_line(err)}')
    assert p.returncode == EXIT_CODES['killed'] == 9, err[-3000:]
    assert_one_line(err, "llmft: killed: worker 1 was killed (SIGKILL) after step ")
    line = last_line(err)
    assert "— most often the system's out-of-memory killer" in line, line
    assert f'Last complete checkpoint: {newest_complete(cfg["output_dir"])}: resume with resume_from_checkpoint' in line
    assert 'failed with exit status -9' not in err


@pytest.mark.slow
def test_lost_peer(sft_cfg, tmp_path):
    ("Two nodes (one process each); node 1's worker killed mid-run while node 0's waits in a collective: node 0 ends "
     "with the lost peer (exit 10), node 1 with the killed worker (exit 9), each one line naming the checkpoint.")
    cfg = ckpt_cfg(sft_cfg, tmp_path, max_steps=400, nnodes=2, nproc_per_node=1, master_addr='127.0.0.1',
                   master_port=free_port())
    out = Path(cfg['output_dir'])   # node 0's; node 1 (another machine) has a folder of its own, where nothing is saved
    t = time.time()
    nodes = [{**cfg, 'node_rank': 0}, {**cfg, 'node_rank': 1, 'output_dir': tmp_path / 'node1'}]
    procs = [popen(words(c), tmp_path / f'node{n}.err') for n, c in enumerate(nodes)]
    try:
        kill_rank_after(procs, 1, out, step=3)
        ended = wait_all(procs, 120)
    finally: stop(procs)
    err0, err1 = [(tmp_path / f'node{n}.err').read_text() for n in (0, 1)]
    assert ended, f'a node did not end within 120 s of the kill:\n{err0[-3000:]}\n=====\n{err1[-3000:]}'
    print(f'lost peer: {time.time() - t:.1f} s\n  node 0: {last_line(err0)}\n  node 1: {last_line(err1)}')
    assert [p.returncode for p in procs] == [EXIT_CODES['peer'], EXIT_CODES['killed']] == [10, 9], (err0[-3000:],
                                                                                                   err1[-3000:])
    assert_one_line(err0, 'llmft: lost peer: another process of the run went away during training step ')
    assert_one_line(err1, "llmft: killed: worker 1 was killed (SIGKILL) — most often the system's out-of-memory killer")
    # gloo says it as 'Connection closed by peer [addr]' or 'Read error [addr]: Connection reset by peer'
    assert re.search(r'\([^()]*Connection (closed|reset) by peer', last_line(err0)), err0
    assert f'Last complete checkpoint: {newest_complete(out)}: resume with' in last_line(err0)
    assert 'checkpoint' not in last_line(err1)   # node 1 logged and saved nothing: global rank 0 does


def test_worker_error_file_round_trip(tmp_path, monkeypatch):
    "A worker's resource error, recorded for its launcher, comes back as its own class (`launch`, `RunHandle.wait`)."
    from llmft.core import DiskFullError, LostPeerError, OutOfMemoryError, WorkerKilledError
    from llmft.launch.dist import ERROR_FILE_ENV, save_worker_error, worker_error
    for rank, cls in enumerate((OutOfMemoryError, DiskFullError, WorkerKilledError, LostPeerError)):
        path = tmp_path / f'{cls.kind}.json'
        monkeypatch.setenv(ERROR_FILE_ENV, str(path))
        monkeypatch.setenv('RANK', str(rank))
        save_worker_error(cls(f'{cls.kind} went'))
        back = worker_error(path)
        assert (type(back), str(back), back.exit_code) == (cls, f'{cls.kind} went', EXIT_CODES[cls.kind])
