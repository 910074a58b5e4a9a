"""Run `run_exp(cfg)` in this process and die hard on purpose: `kill N` sends SIGKILL to itself at the end of step N;
`crash-save N` is killed while checkpoint-N is being written (after part of its optimizer file is on disk)."""
import json, os, signal, sys
import torch
from transformers import TrainerCallback
from llmft.train.tuner import run_exp

cfg, mode, n = json.loads(open(sys.argv[1]).read()), sys.argv[2], int(sys.argv[3])


class KillAtStep(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        if state.global_step == n: os.kill(os.getpid(), signal.SIGKILL)


real_save = torch.save
def save_then_die(obj, f, *a, **kw):
    "Write half of the file, then die, as a power cut in the middle of the write would."
    if mode == 'crash-save' and f'checkpoint-{n}' in str(f) and str(f).endswith('optimizer.pt'):
        real_save(obj, f, *a, **kw)
        size = os.path.getsize(f)
        with open(f, 'r+b') as fh: fh.truncate(size // 2)
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *a, **kw)
torch.save = save_then_die

run_exp(cfg, callbacks=[KillAtStep()] if mode == 'kill' else [])
