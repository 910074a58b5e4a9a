#!/usr/bin/env python3
"""Run one training command in this process and write what it cost: `python counted.py OUT.json CLI ARGS...`.

CLI is `llmft` or `llamafactory-cli`; both run `transformers.Trainer` in-process on a CPU. The trained tokens are counted
the same way for both: labels != -100 of every batch handed to `Trainer.training_step`. Writes OUT.json with the wall time
from process start, the trained tokens, the batches, the peak RSS (MiB) and the exit status. Before the entry point it
imports only transformers' `Trainer` (to count), which both frameworks import anyway, so the wall time holds each
one's own imports. Used by bench/train.py.
"""
import json, resource, sys, time

T0 = time.perf_counter()


def main():
    out, cli, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    seen = {'tokens': 0, 'batches': 0}
    from transformers import Trainer
    step = Trainer.training_step

    def counted(self, model, inputs, *a, **kw):
        labels = inputs.get('labels')
        if labels is not None: seen['tokens'] += int((labels != -100).sum())
        seen['batches'] += 1
        return step(self, model, inputs, *a, **kw)

    Trainer.training_step = counted
    sys.argv = [cli, *args]
    rc = 0
    try:
        if cli == 'llmft':
            from llmft.launch.cli import main as entry
        else:
            from llamafactory.cli import main as entry
        rc = entry() or 0
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    with open(out, 'w') as f:
        json.dump(dict(seen, wall_s=time.perf_counter() - T0, peak_rss_mib=rss / 1024, rc=rc), f)
    sys.exit(rc)


if __name__ == '__main__':
    main()
