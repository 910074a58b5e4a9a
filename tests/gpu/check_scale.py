#!/usr/bin/env python3
"""Scaling checks for a machine with CUDA GPUs (CI has none): nccl DDP, DeepSpeed ZeRO-2 / ZeRO-3 / ZeRO-3 with CPU
offload (examples/deepspeed/), FSDP2 with LoRA and QLoRA with FSDP2 (examples/accelerate/fsdp2_config.yaml), each
run as a user runs it — `llmft train ... nproc_per_node=N` or `accelerate launch ... llmft train` — on a small random
Llama.

Each check prints its losses (step 1 and the last) and the peak GPU memory of every rank. The ranks report their own:
a `sitecustomize.py` put on the workers' PYTHONPATH records `torch.cuda.max_memory_allocated` of each device when the
process exits, so `llmft train` runs unchanged. A check fails (exit status 1) when its command fails, no loss is
logged, the loss does not fall, a rank reports no memory or allocates on another rank's GPU, or its step-1 loss
differs from DDP's (the same batch through the same weights, before any update). A check that cannot run here (no
deepspeed, no bitsandbytes, one GPU) is listed as NOT RUN with the reason; it does not fail the run (--strict: it does).

    python tests/gpu/check_scale.py                       # every check, one process per GPU (2+ GPUs)
    python tests/gpu/check_scale.py --only zero3,fsdp_lora --out report.json
    python tests/gpu/check_scale.py --single              # one GPU: the sharded checks with one rank (DDP not run)
    python tests/gpu/check_scale.py --dry-run             # the plan and every command; needs no GPU
    python tests/gpu/check_scale.py --cpu                 # DDP and FSDP2 + LoRA on CPU (gloo): checks this script
"""
import argparse, importlib.util, json, math, os, shutil, socket, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MEMORY_ENV = 'LLMFT_CHECK_MEMORY_DIR'   # where each training process writes its memory record
LOSS_TOLERANCE = 0.03                  # step-1 loss of a check against DDP's, relative
MISPLACED_BYTES = 2**20                # a rank allocating more than this on another rank's GPU is a failure

FULL = ['finetuning_type=full', 'learning_rate=1e-4', 'use_chunked_loss=false']   # as tests/test_fsdp.py under DDP
LORA = ['finetuning_type=lora', 'lora_target=all', 'learning_rate=5e-3']
QLORA = [*LORA, 'quantization_bit=4', 'quantization_type=nf4', 'double_quantization=true']
DS = 'examples/deepspeed/{}.json'
FSDP2 = 'examples/accelerate/fsdp2_config.yaml'
FSDP2_CPU = 'examples/accelerate/fsdp2_cpu_config.yaml'   # --cpu: gloo, float32
CPU_CHECKS = ('ddp_nccl', 'fsdp_lora')                     # what --cpu runs: both launchers and the memory hook

# name -> how it launches, its recipe words, the packages it needs, the ranks it needs at least, what it shows
CHECKS = {
    'ddp_nccl': dict(launcher='torchrun', words=FULL, needs=(), min_ranks=2,
                     what='DDP over nccl, full fine-tune: the baseline of losses and memory'),
    'zero2': dict(launcher='torchrun', words=[*FULL, f"deepspeed={DS.format('ds_z2_config')}"], needs=('deepspeed',),
                  min_ranks=1, what='DeepSpeed ZeRO-2: optimizer state and gradients sharded'),
    'zero3': dict(launcher='torchrun', words=[*FULL, f"deepspeed={DS.format('ds_z3_config')}"], needs=('deepspeed',),
                  min_ranks=1, what='DeepSpeed ZeRO-3: parameters sharded too'),
    'zero3_offload': dict(launcher='torchrun', words=[*FULL, f"deepspeed={DS.format('ds_z3_offload_config')}"],
                          needs=('deepspeed',), min_ranks=1, what='DeepSpeed ZeRO-3, parameters and optimizer on CPU'),
    'fsdp_lora': dict(launcher='accelerate', words=LORA, needs=(), min_ranks=1,
                      what='FSDP2 (fsdp2_config.yaml) with a LoRA adapter'),
    'qlora_fsdp': dict(launcher='accelerate', words=QLORA, needs=('bitsandbytes',), min_ranks=1, quantized=True,
                       what='FSDP2 over a 4-bit base model (bitsandbytes) with LoRA'),
}
BASELINE = 'ddp_nccl'

HOOK = '''"Written by tests/gpu/check_scale.py: a training process records its peak GPU memory when it exits."
import atexit, json, os, sys

def _record():
    torch = sys.modules.get('torch')
    cuda = getattr(torch, 'cuda', None)
    on_gpu = bool(cuda is not None and cuda.is_available() and cuda.is_initialized())
    if not on_gpu and 'RANK' not in os.environ: return   # a launcher (llmft, torchrun, accelerate), not a worker
    rec = {'rank': int(os.environ.get('RANK', '0')), 'local_rank': int(os.environ.get('LOCAL_RANK', '0')),
           'pid': os.getpid(), 'device': None, 'peak_allocated': {}, 'peak_reserved': {}}
    if on_gpu:
        rec['device'] = cuda.current_device()
        for i in range(cuda.device_count()):
            rec['peak_allocated'][i] = cuda.max_memory_allocated(i)
            rec['peak_reserved'][i] = cuda.max_memory_reserved(i)
    path = os.path.join(os.environ[%r], 'rank%%d.pid%%d.json' %% (rec['rank'], os.getpid()))
    with open(path, 'w') as f: json.dump(rec, f)

if os.environ.get(%r): atexit.register(_record)
''' % (MEMORY_ENV, MEMORY_ENV)


def free_port() -> int:
    "A TCP port free on 127.0.0.1 now."
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def llmft_exe() -> str:
    "The `llmft` console script beside this Python (torchrun's workers run it), else the one on PATH."
    exe = BIN / 'llmft'
    return str(exe) if exe.exists() else (shutil.which('llmft') or 'llmft')


def accelerate_exe() -> str:
    exe = BIN / 'accelerate'
    return str(exe) if exe.exists() else (shutil.which('accelerate') or 'accelerate')


def missing(needs, find=importlib.util.find_spec) -> list:
    "The packages of `needs` that cannot be imported here."
    return [p for p in needs if find(p) is None]


def plan(n_gpus:int, only=None, single:bool=False, find=importlib.util.find_spec, nproc:int|None=None) -> list:
    "(name, ranks, reason) per check: ranks to run it with, or None and why it cannot run here."
    rows = []
    for name, c in CHECKS.items():
        if only and name not in only: continue
        ranks = min(nproc or n_gpus, n_gpus)
        why = None
        if n_gpus == 0: why = 'no CUDA GPU'
        elif gone := missing(c['needs'], find):
            why = f"{', '.join(gone)} is not installed (pip install {' '.join(gone)})"
        elif ranks < 2 and c['min_ranks'] >= 2: why = f'needs 2 GPUs, found {n_gpus}'
        elif ranks < 2 and not single:
            why = f'needs 2 GPUs to shard over, found {n_gpus} (--single runs it with one rank)'
        rows.append((name, None if why else ranks, why))
    return rows


def recipe_words(model, out, *extra) -> list:
    "One recipe for every check: 10 steps, a batch of 4 per rank, every step logged, no checkpoint but the final save."
    return ['examples/quickstart_sft.yaml', f'model_name_or_path={model}', 'dataset=alpaca_demo,sharegpt_demo',
            'max_samples=256', 'cutoff_len=256', 'per_device_train_batch_size=4', 'gradient_accumulation_steps=1',
            'max_steps=10', 'logging_steps=1', 'save_strategy=no', 'val_size=0', 'eval_strategy=no', 'plot_loss=false',
            'warmup_ratio=0', 'lr_scheduler_type=constant', 'seed=0', 'overwrite_output_dir=true', f'output_dir={out}',
            *extra]


def command(name:str, model, out, ranks:int, cpu:bool=False) -> list:
    "The command a user would type for check `name` with `ranks` processes."
    c = CHECKS[name]
    words = recipe_words(model, out, *c['words'], *(['bf16=false', 'use_cpu=true'] if cpu else []))
    if c['launcher'] == 'torchrun': return [llmft_exe(), 'train', *words, f'nproc_per_node={ranks}']
    return [accelerate_exe(), 'launch', '--config_file', FSDP2_CPU if cpu else FSDP2, f'--num_processes={ranks}',
            f'--main_process_port={free_port()}', llmft_exe(), 'train', *words]


def environment(memory_dir:Path, hook_dir:Path) -> dict:
    "The environment of a check: offline, the memory hook first on PYTHONPATH, its records' folder."
    path = os.pathsep.join(p for p in (str(hook_dir), str(ROOT), os.environ.get('PYTHONPATH', '')) if p)
    return {**os.environ, 'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1',
            'PYTHONPATH': path, 'PYTHONUNBUFFERED': '1', MEMORY_ENV: str(memory_dir)}


def write_hook(folder:Path) -> Path:
    "A folder holding the memory hook as `sitecustomize.py`."
    folder.mkdir(parents=True, exist_ok=True)
    (folder / 'sitecustomize.py').write_text(HOOK)
    return folder


def losses(out) -> dict:
    "Step -> loss from the run's trainer_log.jsonl."
    log = Path(out) / 'trainer_log.jsonl'
    if not log.exists(): return {}
    rows = [json.loads(l) for l in log.read_text().splitlines() if l.strip()]
    return {r['current_steps']: r['loss'] for r in rows if 'loss' in r and 'current_steps' in r}


def memory(memory_dir) -> dict:
    "Rank -> its record (the last one a rank wrote, should it have run twice)."
    files = sorted(Path(memory_dir).glob('rank*.json'), key=lambda p: p.stat().st_mtime)
    recs = [json.loads(p.read_text()) for p in files]
    return {r['rank']: r for r in recs}


def gib(n) -> str:
    return '-' if n is None else f'{n / 2**30:.2f}'


def judge(name:str, rc:int, steps:dict, mem:dict, ranks:int, cpu:bool=False) -> list:
    "What is wrong with a finished check (empty: it passed), baseline comparison aside."
    bad = []
    if rc != 0: bad.append(f'exit status {rc}')
    if not steps: return bad + ['no loss was logged']
    vals = [steps[s] for s in sorted(steps)]
    if not all(math.isfinite(v) for v in vals): bad.append(f'a loss is not finite: {vals}')
    elif len(vals) > 1 and not vals[-1] < vals[0]:
        bad.append(f'the loss did not fall ({vals[0]:.4f} -> {vals[-1]:.4f})')
    if gone := sorted(set(range(ranks)) - set(mem)): bad.append(f'rank(s) {gone} reported no memory (the process '
                                                                 'did not exit normally)')
    for r, rec in sorted(mem.items()):
        if cpu: continue
        own = rec.get('device')
        away = {int(d): b for d, b in rec['peak_allocated'].items() if int(d) != own and b > MISPLACED_BYTES}
        if away: bad.append(f'rank {r} (on cuda:{own}) also allocated ' +
                            ', '.join(f'{b / 2**20:.0f} MiB on cuda:{d}' for d, b in away.items()))
    return bad


def compare(results:dict) -> None:
    "Fail a check whose step-1 loss differs from the baseline's by more than LOSS_TOLERANCE (quantized ones aside)."
    base = results.get(BASELINE, {}).get('losses', {})
    if 1 not in base: return
    for name, r in results.items():
        if name == BASELINE or CHECKS[name].get('quantized') or 1 not in r.get('losses', {}): continue
        diff = abs(r['losses'][1] - base[1]) / abs(base[1])
        r['step1_vs_ddp'] = round(diff, 5)
        if diff > LOSS_TOLERANCE:
            r['problems'].append(f'step-1 loss {r["losses"][1]:.4f} differs from DDP\'s {base[1]:.4f} by {diff:.1%}')
            r['ok'] = False


def run_check(name:str, ranks:int, model, work:Path, timeout:int, cpu:bool=False) -> dict:
    "Run one check; its losses, each rank's peak memory, and what is wrong with it."
    out, mem_dir = work / name / 'run', work / name / 'memory'
    mem_dir.mkdir(parents=True, exist_ok=True)
    cmd = command(name, model, out, ranks, cpu)
    t = time.time()
    try:
        p = subprocess.run(cmd, cwd=ROOT, env=environment(mem_dir, work / 'hook'), capture_output=True, text=True,
                           timeout=timeout)
        rc, text = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        rc, text = 124, f'timed out after {timeout} s\n' + str(e.stdout or '')[-3000:] + str(e.stderr or '')[-3000:]
    steps, mem = losses(out), memory(mem_dir)
    problems = judge(name, rc, steps, mem, ranks, cpu)
    peak = {r: rec['peak_allocated'].get(str(rec['device'])) if rec.get('device') is not None else None
            for r, rec in mem.items()}
    return dict(ok=not problems, problems=problems, ranks=ranks, seconds=round(time.time() - t, 1),
                losses=steps, peak_allocated_bytes=peak, command=' '.join(map(str, cmd)),
                output_tail='' if not problems else text[-4000:])


def report_lines(results:dict, not_run:dict) -> list:
    "The printed table: one line per check run, then what did not run and why."
    lines = [f"{'check':14s} {'result':7s} {'ranks':>5s} {'loss step 1 -> last':>22s}  peak GPU memory per rank (GiB)"]
    for name, r in results.items():
        s = r['losses']
        loss = f'{s[min(s)]:.4f} -> {s[max(s)]:.4f}' if s else '-'
        mem = '  '.join(f'r{k}: {gib(v)}' for k, v in sorted(r['peak_allocated_bytes'].items())) or '-'
        lines.append(f"{name:14s} {'ok' if r['ok'] else 'FAILED':7s} {r['ranks']:5d} {loss:>22s}  {mem}")
        lines += [f'    {p}' for p in r['problems']]
    lines += [f'{name:14s} NOT RUN: {why}' for name, why in not_run.items()]
    return lines


def main(argv=None) -> int:
    a = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawTextHelpFormatter)
    a.add_argument('--only', help='comma-separated checks: ' + ', '.join(CHECKS))
    a.add_argument('--nproc', type=int, help='processes per check (default: one per GPU)')
    a.add_argument('--single', action='store_true', help='with one GPU, run the sharded checks with one rank')
    a.add_argument('--hidden', type=int, default=1024, help='hidden size of the random Llama (default 1024)')
    a.add_argument('--layers', type=int, default=8, help='its decoder layers (default 8)')
    a.add_argument('--timeout', type=int, default=900, help='seconds per check (default 900)')
    a.add_argument('--out', help='write the report as JSON here')
    a.add_argument('--strict', action='store_true', help='a check that cannot run fails the run too')
    a.add_argument('--dry-run', action='store_true', help='print the plan and the commands; run nothing')
    a.add_argument('--cpu', action='store_true',
                   help='run the DDP and FSDP2 + LoRA checks on CPU (gloo, 2 processes): tests this script')
    args = a.parse_args(argv)
    only = set(args.only.split(',')) if args.only else None
    if only and (unknown := only - set(CHECKS)):
        a.error(f"unknown check(s) {sorted(unknown)}; known: {', '.join(CHECKS)}")
    if args.cpu:
        n_gpus, only, cpu = 2, set(CPU_CHECKS), True
    else:
        import torch
        n_gpus, cpu = torch.cuda.device_count(), False
    dry = args.dry_run and n_gpus == 0   # no GPU here: plan as if there were --nproc (2) of them
    if dry: print(f'(no CUDA GPU here: planned for {args.nproc or 2} GPU(s))')
    rows = plan(args.nproc or 2 if dry else n_gpus, only, args.single, nproc=args.nproc)
    not_run = {name: why for name, ranks, why in rows if ranks is None}
    if args.dry_run:
        for name, ranks, why in rows:
            print(f"{name}: {CHECKS[name]['what']}")
            cmd = None if why else ' '.join(command(name, '<model>', f'<work>/{name}', ranks))
            print(f'    NOT RUN: {why}' if why else f'    {cmd}')
        return 0
    sys.path.insert(0, str(ROOT))
    work = Path(tempfile.mkdtemp(prefix='llmft-check-scale-'))
    from llmft.testing import tiny_model
    hidden, layers = (128, 2) if cpu else (args.hidden, args.layers)
    heads, kv_heads = max(4, hidden // 64), max(2, hidden // 256)
    model = tiny_model('llama', hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads)
    write_hook(work / 'hook')
    where = 'CPU (gloo), 2 processes' if cpu else f'GPUs: {n_gpus}'
    print(f'model: random Llama, hidden {hidden}, {layers} layers ({model}); {where}; work folder: {work}', flush=True)
    results = {}
    for name, ranks, why in rows:
        if ranks is None: continue
        results[name] = run_check(name, 2 if cpu else ranks, model, work, args.timeout, cpu)
        r = results[name]
        print(f"{name}: {'ok' if r['ok'] else 'FAILED'} in {r['seconds']} s", flush=True)
        if not r['ok']: print(r['output_tail'][-2500:], flush=True)
    compare(results)
    print('\n'.join(report_lines(results, not_run)))
    if args.out: Path(args.out).write_text(json.dumps(dict(gpus=n_gpus, checks=results, not_run=not_run), indent=2))
    failed = [n for n, r in results.items() if not r['ok']]
    print(f"\n{len(results) - len(failed)} of {len(results)} check(s) passed"
          + (f"; FAILED: {', '.join(failed)}" if failed else '')
          + (f"; NOT RUN: {', '.join(not_run)}" if not_run else ''))
    return 1 if failed or (args.strict and not_run) else 0


if __name__ == '__main__':
    sys.exit(main())
