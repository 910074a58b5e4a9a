"""`report_to` end to end: TensorBoard, Weights & Biases (offline), MLflow (a local file store) and SwanLab (offline)
each write their files under the run folder, with the training loss in them and the run's `llmft_args.yaml` as their
config; no secret of the recipe reaches a file."""
import glob, json, struct
from pathlib import Path
import pytest, yaml
from conftest import ROOT
from llmft.train.tuner import run_exp

SECRET = 'hf_llmftSECRETtoken123'


@pytest.fixture
def cfg(tiny_llama, tmp_path):
    return dict(model_name_or_path=tiny_llama, stage='sft', do_train=True, finetuning_type='lora',
                dataset='alpaca_demo',
                dataset_dir=str(ROOT / 'data'), template='llama3', cutoff_len=64, max_samples=8,
                output_dir=str(tmp_path / 'run'), per_device_train_batch_size=4, max_steps=4, logging_steps=2,
                save_strategy='no', hf_hub_token=SECRET, learning_rate=1e-2, seed=0)


def no_secret(out: Path):
    leaked = [p for p in out.rglob('*') if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert leaked == [], leaked


def trained_losses(out: Path):
    return [r['loss'] for r in map(json.loads, open(out / 'trainer_log.jsonl')) if 'loss' in r]


def wandb_records(path):
    "The records of an offline W&B run file (LevelDB-style log of protobuf `Record`s)."
    from wandb.proto import wandb_internal_pb2 as pb
    data, pos, buf, out = Path(path).read_bytes(), 7, b'', []
    assert data[:4] == b':W&B'
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _, n, kind = struct.unpack('<IHB', data[pos:pos + 7])
        buf, pos = buf + data[pos + 7:pos + 7 + n], pos + 7 + n
        if kind in (1, 4):   # a full record, or the last piece of one
            r = pb.Record()
            r.ParseFromString(buf)
            out.append(r)
            buf = b''
    return out


def test_wandb_offline(cfg):
    out = Path(run_exp({**cfg, 'report_to': 'wandb'}).output_dir)
    [run] = glob.glob(str(out / 'wandb' / 'offline-run-*' / '*.wandb'))
    records = wandb_records(run)
    history = [{i.key or '/'.join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
               for r in records if r.WhichOneof('record_type') == 'history']
    logged = [h['train/loss'] for h in history if 'train/loss' in h]
    assert logged == pytest.approx(trained_losses(out), rel=1e-4)
    config = {i.key: i.value_json for r in records if r.WhichOneof('record_type') == 'config' for i in r.config.update}
    assert json.loads(config['llmft'])['dataset'] == ['alpaca_demo']
    no_secret(out)


def test_mlflow_file_store(cfg):
    out = Path(run_exp({**cfg, 'report_to': 'mlflow'}).output_dir)
    [run] = [p for p in (out / 'mlruns').glob('*/*') if (p / 'metrics').is_dir()]
    logged = [float(l.split()[1]) for l in (run / 'metrics' / 'loss').read_text().splitlines()]
    assert logged == pytest.approx(trained_losses(out), rel=1e-4)
    assert yaml.safe_load((run / 'artifacts' / 'llmft_args.yaml').read_text())['report_to'] == ['mlflow']
    assert (run / 'params' / 'llmft.learning_rate').read_text() == '0.01'
    no_secret(out)


def test_swanlab_offline(cfg):
    out = Path(run_exp({**cfg, 'use_swanlab': True, 'swanlab_mode': 'offline', 'swanlab_api_key': SECRET}).output_dir)
    [run] = glob.glob(str(out / 'swanlog' / 'run-*'))
    assert b'train/loss' in next(Path(run).glob('*.swanlab')).read_bytes()
    config = yaml.safe_load((Path(run) / 'files' / 'config.yaml').read_text())
    assert 'llmft' in json.dumps(config) and 'alpaca_demo' in json.dumps(config)
    no_secret(out)


def test_tensorboard(cfg):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    out = Path(run_exp({**cfg, 'report_to': 'tensorboard'}).output_dir)
    [logdir] = (out / 'runs').iterdir()
    ev = EventAccumulator(str(logdir), size_guidance={'tensors': 0})
    ev.Reload()
    assert [s.value for s in ev.Scalars('train/loss')] == pytest.approx(trained_losses(out), rel=1e-4)
    assert 'llmft_args/text_summary' in ev.Tags()['tensors']
    no_secret(out)
