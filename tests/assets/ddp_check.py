"""Run a recipe (JSON file, argv[1]) under torchrun and record, per rank, accelerate's view of the run and a checksum of
the trained weights (`ddp_check.rank<N>.json` in the run folder): under real DDP every rank ends with the same weights."""
import json, os, sys
from pathlib import Path
from transformers import TrainerCallback
from llmft.train.tuner import run_exp


class Checksum(TrainerCallback):
    def on_train_end(self, args, state, control, model=None, **kw):
        from accelerate.state import PartialState
        total = sum(p.detach().double().sum().item() for p in model.parameters() if p.requires_grad)
        rec = dict(distributed_type=str(PartialState().distributed_type), parallel_mode=str(args.parallel_mode),
                   weights=total)
        Path(args.output_dir, f"ddp_check.rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps(rec))


run_exp(json.loads(Path(sys.argv[1]).read_text()), callbacks=[Checksum()])
