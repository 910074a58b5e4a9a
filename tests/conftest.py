import os, sys
from pathlib import Path
import pytest

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')

ROOT = Path(__file__).resolve().parents[1]
LF_DEMO = ROOT.parent / 'shared' / 'reference-data' / 'llamafactory-demo'


def pytest_configure(config):
    config.addinivalue_line('markers', "slow: a long end-to-end test; `make test-fast` leaves it out (-m 'not slow')")


@pytest.fixture(scope='session')
def root(): return ROOT


@pytest.fixture(scope='session')
def tiny_llama():
    from llmft.testing import tiny_model
    return str(tiny_model('llama'))


@pytest.fixture
def sft_cfg(tiny_llama, tmp_path):
    "A small LoRA SFT config on the demo data that a tiny model can memorise."
    return dict(model_name_or_path=tiny_llama, stage='sft', do_train=True, finetuning_type='lora', lora_target='all',
                dataset='alpaca_demo', dataset_dir=str(ROOT / 'data'), template='llama3', cutoff_len=128, max_samples=8,
                output_dir=str(tmp_path / 'run'), overwrite_output_dir=True, per_device_train_batch_size=4,
                learning_rate=1e-2, max_steps=40, logging_steps=5, report_to='none', save_strategy='no',
                disable_gradient_checkpointing=True, seed=0)


def cli(*args, cwd=ROOT, timeout=600):
    "Run the installed `llmft` console script in a subprocess."
    import subprocess
    exe = Path(sys.executable).parent / 'llmft'
    return subprocess.run([str(exe), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    "A TCP port free on 127.0.0.1 now."
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def start_api(words, log_path, env=None, timeout=180):
    "`llmft api WORDS` in its own process on a free port, once it listens: (base url, process, log path)."
    import subprocess
    port = free_port()
    env = {**os.environ, 'API_PORT': str(port), 'PYTHONUNBUFFERED': '1', **(env or {})}
    p = subprocess.Popen([str(Path(sys.executable).parent / 'llmft'), 'api', *map(str, words)], env=env,
                         stdout=open(log_path, 'w'), stderr=subprocess.STDOUT)
    wait_listening(p, port, log_path, timeout)
    return f'http://127.0.0.1:{port}/v1', p, Path(log_path)


def wait_listening(p, port, log_path, timeout=90):
    "Wait until process `p` listens on `port` of 127.0.0.1; fail with the end of its log if it ends or takes too long."
    import socket, time
    deadline = time.time() + timeout
    while True:
        try:
            socket.create_connection(('127.0.0.1', port), timeout=1).close()
            return
        except OSError:
            assert p.poll() is None and time.time() < deadline, Path(log_path).read_text()[-3000:]
            time.sleep(0.5)


def stop_api(p):
    "Stop a server of `start_api` as Ctrl-C would, killing it if it does not end."
    import signal, subprocess
    p.send_signal(signal.SIGINT)
    try: p.wait(20)
    except subprocess.TimeoutExpired: p.kill()
