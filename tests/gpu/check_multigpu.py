#!/usr/bin/env python3
"""Multi-GPU checks for a machine with two or more CUDA GPUs (CI has none): nccl DDP through `llmft train`, DeepSpeed ZeRO-3
(needs `pip install deepspeed`), and FSDP with LoRA through accelerate. Prints one line per check and exits non-zero on a failure.

    python tests/gpu/check_multigpu.py
"""
import os, subprocess, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1', 'PYTHONPATH': f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"}


def llmft(*args):
    return subprocess.run([sys.executable, '-c', 'import sys; from llmft.launch.cli import main; sys.exit(main(sys.argv[1:]))', *map(str, args)],
                          cwd=ROOT, env=ENV, capture_output=True, text=True)


def main():
    import torch
    n = torch.cuda.device_count()
    if n < 2: sys.exit(f'needs 2+ GPUs, found {n}')
    sys.path.insert(0, str(ROOT))
    from llmft.testing import tiny_model
    model = tiny_model('llama', hidden=256, layers=4)
    base = ['examples/quickstart_sft.yaml', f'model_name_or_path={model}', 'max_steps=10', 'val_size=0', 'eval_strategy=no', 'plot_loss=false']
    checks = {'ddp_nccl': [f'nproc_per_node={n}'],
              'deepspeed_zero3': [f'nproc_per_node={n}', 'deepspeed=examples/deepspeed/ds_z3_config.json'],
              'fsdp_lora': [f'nproc_per_node={n}', 'fsdp=full_shard auto_wrap', 'fsdp_config={"transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"], "use_orig_params": true}']}
    failed = 0
    for name, extra in checks.items():
        out = tempfile.mkdtemp()
        r = llmft('train', *base, *extra, f'output_dir={out}')
        ok = r.returncode == 0 and (Path(out) / 'trainer_log.jsonl').exists()
        failed += not ok
        print(name, 'ok' if ok else 'FAILED', '' if ok else r.stderr[-1500:], flush=True)
    sys.exit(failed)


if __name__ == '__main__':
    main()
