"""`USE_RAY=1 llmft train` on a local Ray cluster that this module starts (two CPUs, loopback only) and stops whatever
happens: two Ray Train workers give the two-process torchrun run's losses, checkpoints land in `ray_storage_path`, a
worker killed mid-run is recovered through `FailureConfig` (`max_restarts`) on the same losses, a mistake is one line
with its exit status, and a missing Ray is named in one line."""
import json, os, shutil, signal, socket, subprocess, sys, tempfile, time
from pathlib import Path
import psutil
import pytest
from conftest import ROOT, cli

pytestmark = pytest.mark.slow   # a Ray cluster and several multi-process runs

BIN = Path(sys.executable).parent
# Ray on loopback only (it otherwise binds the machine's address) and with its token authentication, for the cluster
# and for every driver that joins it; on 2 cores, without Ray Train's preemption watcher and metrics (one process less
# each, and nothing a CPU test on one machine needs)
RAY_ENV = {'RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER': '0', 'RAY_AUTH_MODE': 'token',
           'RAY_TRAIN_ENABLE_PREEMPTION_WATCHER': '0', 'RAY_TRAIN_METRICS_ENABLED': '0'}
# the whole 8-example set each step (global batch 8 either way), so data order cannot matter; a checkpoint every 2 steps
RECIPE = ['examples/quickstart_sft.yaml', 'dataset=alpaca_demo', 'max_samples=8', 'max_steps=16', 'save_steps=2',
          'logging_steps=1', 'val_size=0', 'eval_strategy=no', 'plot_loss=false', 'learning_rate=0.5', 'optim=sgd',
          'warmup_ratio=0', 'lr_scheduler_type=constant', 'per_device_train_batch_size=4']
WORKERS = ['ray_num_workers=2', 'resources_per_worker={"CPU": 1}']


def losses(out):
    return [json.loads(l)['loss'] for l in open(Path(out) / 'trainer_log.jsonl') if '"loss"' in l]


def free_ports(n):
    "n distinct free TCP ports on 127.0.0.1 (held together while chosen)."
    socks = [socket.socket() for _ in range(n)]
    for s in socks: s.bind(('127.0.0.1', 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks: s.close()
    return ports


def session(sid):
    "The processes of session `sid`: everything `ray start` (its session leader) began, Ray's workers included."
    found = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid: found.append(p)
        except (ProcessLookupError, PermissionError): pass
    return found


def stop_session(sid):
    "End the processes of session `sid` by their ids: SIGTERM, then SIGKILL for those still alive after 10 s."
    procs = session(sid)
    for p in procs:
        try: p.terminate()
        except psutil.NoSuchProcess: pass
    _, alive = psutil.wait_procs(procs, timeout=10)
    for p in alive:
        try: p.kill()
        except psutil.NoSuchProcess: pass


@pytest.fixture(scope='module')
def ray_cluster():
    "A Ray head with 2 CPUs in a temp dir of its own (short: Ray's socket paths are limited), stopped after the module."
    tmp, sids = Path(tempfile.mkdtemp(prefix='llmft-ray-')), []
    try:
        for _ in range(3):   # on a loaded machine Ray's agents can miss their start-up deadline: start again
            gcs, *agents = free_ports(6)
            cmd = [BIN / 'ray', 'start', '--head', '--num-cpus=2', '--include-dashboard=false', '--disable-usage-stats',
                   f'--temp-dir={tmp}', f'--port={gcs}', f'--dashboard-agent-grpc-port={agents[0]}',
                   f'--dashboard-agent-listen-port={agents[1]}', f'--metrics-export-port={agents[2]}',
                   f'--runtime-env-agent-port={agents[3]}', f'--ray-client-server-port={agents[4]}']
            with open(tmp / 'start.log', 'a') as log:
                p = subprocess.Popen(cmd, env={**os.environ, **RAY_ENV}, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
            sids.append(p.pid)
            if p.wait(timeout=300) == 0: break
            stop_session(p.pid)
        else: pytest.fail('ray start failed three times:\n' + (tmp / 'start.log').read_text()[-3000:])
        yield {'address': f'127.0.0.1:{gcs}', 'sid': sids[-1]}
    finally:
        for sid in sids: stop_session(sid)
        shutil.rmtree(tmp, ignore_errors=True)


def ray_env(cluster, **extra):
    return {**os.environ, **RAY_ENV, 'USE_RAY': '1', 'RAY_ADDRESS': cluster['address'], 'PYTHONUNBUFFERED': '1',
            **extra}


def ray_train(cluster, *words, env=None):
    "`USE_RAY=1 llmft train WORDS` joining `cluster`."
    return subprocess.run([str(BIN / 'llmft'), 'train', *map(str, words)], cwd=ROOT, capture_output=True, text=True,
                          timeout=900, env=env or ray_env(cluster))


@pytest.fixture(scope='module')
def torchrun_losses(tiny_llama, tmp_path_factory):
    "The losses of the same recipe in two processes under torchrun."
    d = tmp_path_factory.mktemp('torchrun')
    two = cli('train', *RECIPE, f'model_name_or_path={tiny_llama}', 'nproc_per_node=2', f'output_dir={d}')
    assert two.returncode == 0, two.stderr[-3000:]
    return losses(d)


def ray_workers(sid):
    "Ray Train's worker processes on the cluster of session `sid`."
    found = []
    for p in session(sid):
        try:
            if 'RayTrainWorker' in ' '.join(p.cmdline()): found.append(p.pid)
        except psutil.NoSuchProcess: pass
    return found


def test_killed_worker_is_recovered_on_the_torchrun_losses(ray_cluster, torchrun_losses, tiny_llama, tmp_path):
    ("Two Ray workers, one SIGKILLed once Ray holds a checkpoint: Ray restarts the group (max_restarts=1), which resumes "
     "from it, and the run ends on the two-process torchrun run's losses with every checkpoint in ray_storage_path.")
    cmd = [str(BIN / 'llmft'), 'train', *RECIPE, f'model_name_or_path={tiny_llama}', *WORKERS, 'max_restarts=1',
           f'ray_storage_path={tmp_path / "ray"}', 'ray_run_name=killed', f'output_dir={tmp_path / "run"}']
    with open(tmp_path / 'out.log', 'w') as out, open(tmp_path / 'err.log', 'w') as err:
        p = subprocess.Popen(cmd, cwd=ROOT, env=ray_env(ray_cluster), stdout=out, stderr=err, text=True)
    snapshot, deadline = tmp_path / 'ray' / 'killed' / 'checkpoint_manager_snapshot.json', time.time() + 600
    while not (snapshot.exists() and 'checkpoint-2' in snapshot.read_text()):   # Ray holds checkpoint-2
        assert p.poll() is None and time.time() < deadline, (tmp_path / 'err.log').read_text()[-4000:]
        time.sleep(0.05)
    workers = ray_workers(ray_cluster['sid'])
    assert len(workers) == 2, workers
    os.kill(max(workers), signal.SIGKILL)
    assert p.wait(timeout=900) == 0, (tmp_path / 'err.log').read_text()[-4000:]
    stdout = (tmp_path / 'out.log').read_text()
    said = stdout + (tmp_path / 'err.log').read_text()
    assert 'Ray restarted the workers: resuming from' in said, said[-4000:]
    a, b = torchrun_losses, losses(tmp_path / 'run')
    print('torchrun:', a, '\nray, recovered:', b)
    assert len(b) == 16 and b == pytest.approx(a, rel=1e-6), (a, b)   # the same DDP (gloo), the same data, the same seed
    assert a[-1] < a[0]
    assert stdout.count('Done. Run folder') == 1 and (tmp_path / 'run' / 'adapter_model.safetensors').exists()
    assert 'Launching: ' not in stdout   # Ray's workers, not torchrun
    run = tmp_path / 'ray' / 'killed'
    steps = sorted(int(p.name.split('-')[1]) for p in run.glob('checkpoint-*'))
    assert steps == list(range(2, 17, 2)), steps
    for step in steps:
        files = {p.name for p in (run / f'checkpoint-{step}').iterdir()}
        assert {'llmft_checkpoint_complete.json', 'adapter_model.safetensors', 'optimizer.pt', 'rng_state_0.pth',
                'rng_state_1.pth', 'trainer_state.json'} <= files, (step, files)
    assert f'Ray run (checkpoints)        {run}' in stdout, stdout[-2000:]


def test_mistakes_are_one_line(ray_cluster, tiny_llama, tmp_path):
    "A Ray key the driver refuses before Ray starts; a value only the workers check, told by the driver as itself."
    common = [*RECIPE, f'model_name_or_path={tiny_llama}', *WORKERS, f'ray_storage_path={tmp_path / "ray"}',
              f'output_dir={tmp_path / "run"}']
    r = ray_train(ray_cluster, *common, 'placement_strategy=ANYWHERE')
    assert r.returncode == 2, r.stderr[-3000:]
    assert r.stderr.strip().splitlines() == ["llmft: configuration error: placement_strategy must be one of ['PACK', "
                                             "'SPREAD', 'STRICT_PACK', 'STRICT_SPREAD'], got 'ANYWHERE'."], r.stderr
    r = ray_train(ray_cluster, *common, 'cutoff_len=0')
    assert r.returncode == 2, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last == 'llmft: configuration error: cutoff_len: 0 is out of range; expected an integer >= 2.', last
    assert 'llmft.core.ConfigError' not in r.stderr + r.stdout, r.stderr[-3000:]   # not also Ray's traceback of it


def test_missing_ray_is_named(tiny_llama, tmp_path):
    "Where `import ray` fails (a stand-in package that raises, first on the path), one line says what to install."
    (tmp_path / 'shim' / 'ray').mkdir(parents=True)
    (tmp_path / 'shim' / 'ray' / '__init__.py').write_text("raise ImportError(\"No module named 'ray'\")\n")
    env = {**os.environ, 'USE_RAY': '1', 'PYTHONPATH': str(tmp_path / 'shim')}
    r = subprocess.run([str(BIN / 'llmft'), 'train', *RECIPE, f'model_name_or_path={tiny_llama}',
                        f'output_dir={tmp_path / "run"}'], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 2, r.stderr[-3000:]
    assert r.stderr.strip().splitlines() == ["llmft: configuration error: USE_RAY=1 trains through Ray Train, which "
                                             "cannot be imported here (No module named 'ray'): pip install "
                                             "'llmft[ray]'."], r.stderr
    assert not (tmp_path / 'run').exists()
