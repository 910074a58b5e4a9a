"""The cluster examples say what llmft does with them: the Slurm script (examples/slurm/llmft_multinode.sbatch) runs
under bash with stand-ins for `scontrol`, `srun` and `llmft`, and the `llmft train` each node would run is read by
llmft's own parser — the recipe, the keys, the launch settings, the torchrun command; the Kubeflow PyTorchJob
(examples/kubernetes/pytorchjob.yml) has the shape the training operator takes, and its containers' command, expanded
in each pod's environment as the operator sets it, parses the same way, with the recipe its ConfigMap holds."""
import json, os, re, subprocess, sys
from pathlib import Path
import pytest, yaml
from conftest import ROOT
from llmft.hparams.recipe import prescan, read_config, split_words
from llmft.launch.dist import LAUNCH_KEYS, in_distributed_worker, launch_settings, several_processes, torchrun_command

SBATCH = ROOT / 'examples/slurm/llmft_multinode.sbatch'
MANIFEST = ROOT / 'examples/kubernetes/pytorchjob.yml'
DIST_ENV = ('WORLD_SIZE', 'RANK', 'LOCAL_RANK', 'FORCE_TORCHRUN', *LAUNCH_KEYS.values())


def parse_train(words:list[str], cwd:Path=ROOT):
    "What `llmft train WORDS` does before it starts anything: (launch settings, the recipe with the keys over it)."
    assert words[0] == 'train', words
    pos, keys, _ = split_words(words[1:])
    assert len(pos) == 1, pos
    cfg = {**read_config(cwd / pos[0]), **keys}
    prescan({k: v for k, v in cfg.items() if k not in LAUNCH_KEYS})   # unknown keys are refused here
    return launch_settings(cfg)


@pytest.fixture
def clean_env(monkeypatch):
    "No launcher variables from the machine running the tests."
    for k in DIST_ENV: monkeypatch.delenv(k, raising=False)
    return monkeypatch


# --- Slurm -----------------------------------------------------------------------------------------------------------

STUB = '''#!{python}
"Stand-in for `{name}` (tests/test_cluster_examples.py)."
import json, os, subprocess, sys
out = os.environ['STUB_OUT']
{body}
'''
SCONTROL = '''assert sys.argv[1:3] == ['show', 'hostnames'], sys.argv
print('gpu-node-017\\ngpu-node-018')'''
SRUN = '''opts = [w for w in sys.argv[1:] if w.startswith('-')]
cmd = sys.argv[1 + len(opts):]   # srun OPTIONS COMMAND...: the options come first
assert all(w.startswith('--') and '=' in w for w in opts), opts
json.dump(opts, open(os.path.join(out, 'srun.json'), 'w'))
for node in range(int(os.environ['SLURM_NNODES'])):   # one task per node
    env = {**os.environ, 'SLURM_NODEID': str(node), 'SLURM_PROCID': str(node), 'SLURM_LOCALID': '0'}
    subprocess.run(cmd, env=env, check=True)'''
LLMFT = '''keep = ('LLMFT_CACHE', 'SRUN_CPUS_PER_TASK', 'SLURM_NODEID')
rec = {'argv': sys.argv[1:], 'cwd': os.getcwd(), 'env': {k: os.environ.get(k) for k in keep}}
json.dump(rec, open(os.path.join(out, 'llmft.%s.json' % os.environ['SLURM_NODEID']), 'w'))'''


def run_sbatch(tmp_path, *args, **variables):
    ("Run the sbatch script as Slurm starts it on the first node (with `variables` in the environment of `sbatch`), "
     "with stand-ins; (srun options, llmft calls).")
    stubs, out = tmp_path / 'bin', tmp_path / 'out'
    stubs.mkdir()
    out.mkdir()
    for name, body in (('scontrol', SCONTROL), ('srun', SRUN), ('llmft', LLMFT)):
        (stubs / name).write_text(STUB.format(python=sys.executable, name=name, body=body))
        (stubs / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in DIST_ENV and not k.startswith(('SLURM_', 'LLMFT_'))}
    env.update(PATH=f"{stubs}{os.pathsep}{os.environ['PATH']}", STUB_OUT=str(out), HOME=str(tmp_path / 'home'),
               SLURM_JOB_ID='4242', SLURM_JOB_NAME='llmft-sft', SLURM_NNODES='2',
               SLURM_JOB_NODELIST='gpu-node-[017-018]',
               SLURM_SUBMIT_DIR=str(ROOT), SLURM_CPUS_PER_TASK='32', **variables)
    r = subprocess.run(['bash', str(SBATCH), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    port = variables.get('MASTER_PORT', '29500')
    assert f'rendezvous at gpu-node-017:{port} (job 4242)' in r.stdout, r.stdout
    calls = [json.loads((out / f'llmft.{n}.json').read_text()) for n in (0, 1)]
    assert not list(out.glob('llmft.2.json'))
    return json.loads((out / 'srun.json').read_text()), calls


def test_sbatch_is_valid_bash():
    r = subprocess.run(['bash', '-n', str(SBATCH)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text = SBATCH.read_text()
    assert text.startswith('#!/bin/bash\n') and '#SBATCH --ntasks-per-node=1' in text and '#SBATCH --nodes=2' in text
    assert f'sbatch {SBATCH.relative_to(ROOT).as_posix()}' in text   # it says how to run it


def test_sbatch_runs_one_llmft_train_per_node(tmp_path, clean_env):
    srun, calls = run_sbatch(tmp_path, 'max_steps=50')
    assert '--ntasks-per-node=1' in srun and '--kill-on-bad-exit=1' in srun
    assert calls[0]['argv'] == calls[1]['argv'], 'an elastic launch runs the very same command on every node'
    assert [c['cwd'] for c in calls] == [str(ROOT)] * 2                          # cd "$SLURM_SUBMIT_DIR"
    assert calls[0]['env']['SRUN_CPUS_PER_TASK'] == '32'
    assert calls[0]['env']['LLMFT_CACHE'] == str(tmp_path / 'home/.cache/llmft')
    settings, cfg = parse_train(calls[0]['argv'])
    settings.pop('nproc_per_node', None)   # one per GPU of the node, where it has several
    assert settings == {'nnodes': 2, 'master_addr': 'gpu-node-017', 'master_port': 29500, 'rdzv_id': '4242',
                        'max_restarts': 2}
    assert several_processes(settings)
    # the recipe, with the script's keys and the ones given to sbatch over it
    assert cfg['output_dir'] == 'saves/slurm/llmft-sft' and cfg['overwrite_output_dir'] is False
    assert cfg['data_shared_file_system'] is True and cfg['max_steps'] == 50 and cfg['stage'] == 'sft'
    cmd = torchrun_command('llmft', calls[0]['argv'], settings)
    assert cmd[4:9] == ['--nnodes=2', '--rdzv_id=4242', '--rdzv_backend=c10d',
                        '--rdzv_endpoint=gpu-node-017:29500', '--max_restarts=2'], cmd
    assert not [w for w in cmd if w.startswith('--node_rank')]   # the rendezvous hands the ranks out


def test_sbatch_environment_overrides(tmp_path, clean_env):
    "RECIPE, OUTPUT_DIR, MAX_RESTARTS and MASTER_PORT from the environment of `sbatch` (it passes it on)."
    _, calls = run_sbatch(tmp_path, RECIPE='examples/quickstart_sft.yaml', OUTPUT_DIR='/shared/saves/run1',
                          MAX_RESTARTS='0', MASTER_PORT='29511')
    settings, cfg = parse_train(calls[1]['argv'])
    assert calls[1]['argv'][1] == 'examples/quickstart_sft.yaml' and cfg['output_dir'] == '/shared/saves/run1'
    assert settings['max_restarts'] == 0 and settings['master_port'] == 29511
    # no restarts, but still the rendezvous: rdzv_id keeps the launch elastic
    assert '--rdzv_endpoint=gpu-node-017:29511' in torchrun_command('llmft', [], settings)


# --- Kubernetes ------------------------------------------------------------------------------------------------------

def manifest() -> dict:
    "The manifest's documents by kind."
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    assert all(isinstance(d, dict) and {'apiVersion', 'kind', 'metadata'} <= set(d) for d in docs), docs
    by_kind = {d['kind']: d for d in docs}
    assert len(by_kind) == len(docs) == 2, [d['kind'] for d in docs]
    return by_kind


def pytorch_container(replica:dict) -> dict:
    "The container the operator drives: it must be named `pytorch`."
    found = [c for c in replica['template']['spec']['containers'] if c['name'] == 'pytorch']
    assert len(found) == 1, replica
    return found[0]


def test_pytorchjob_shape():
    assert MANIFEST.read_text().startswith('# ') and f'kubectl apply -f {MANIFEST.relative_to(ROOT).as_posix()}' in \
        MANIFEST.read_text()
    job = manifest()['PyTorchJob']
    assert job['apiVersion'] == 'kubeflow.org/v1'
    specs = job['spec']['pytorchReplicaSpecs']
    assert set(specs) == {'Master', 'Worker'} and specs['Master']['replicas'] == 1 and specs['Worker']['replicas'] >= 1
    for kind, spec in specs.items():
        assert spec['restartPolicy'] in ('Always', 'OnFailure', 'Never', 'ExitCode'), kind
        c = pytorch_container(spec)
        assert {'name': 'pytorchjob-port', 'containerPort': 23456} in c['ports'], kind
        assert c['command'][:5] == ['env', '-u', 'WORLD_SIZE', '-u', 'RANK'] and c['command'][5:7] == ['llmft', 'train']
        volumes = {v['name']: v for v in spec['template']['spec']['volumes']}
        assert {m['name'] for m in c['volumeMounts']} <= set(volumes), kind
        assert volumes['recipe']['configMap']['name'] == manifest()['ConfigMap']['metadata']['name']
    a, b = (pytorch_container(specs[k]) for k in ('Master', 'Worker'))
    assert a == b, 'every pod runs the same container: the operator and llmft tell the ranks apart'


def operator_env(job:dict, kind:str, index:int) -> dict:
    "The variables training-operator v1.9 sets in pod `index` of `kind` (Master, Worker), without an elasticPolicy."
    specs = job['spec']['pytorchReplicaSpecs']
    total = sum(s['replicas'] for s in specs.values())
    rank = index + (kind == 'Worker')
    ports = pytorch_container(specs['Master'])['ports']
    port = next(p['containerPort'] for p in ports if p['name'] == 'pytorchjob-port')
    addr = f"{job['metadata']['name']}-master-0"
    return {'PYTHONUNBUFFERED': '1', 'MASTER_ADDR': addr, 'MASTER_PORT': str(port), 'PET_MASTER_ADDR': addr,
            'PET_MASTER_PORT': str(port), 'WORLD_SIZE': str(total), 'RANK': str(rank), 'PET_NODE_RANK': str(rank),
            'PET_NNODES': str(total)}


def expand(word:str, env:dict) -> str:
    "Kubernetes' $(VAR) expansion of a command word (an unknown variable stays as written; $$ escapes)."
    return re.sub(r'\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)',
                  lambda m: '$' if m[0] == '$$' else env.get(m[1], m[0]), word)


def env_command(words:list[str], env:dict) -> tuple[list[str], dict]:
    "What `env -u NAME ... CMD` runs, and in which environment."
    env, i = dict(env), 1
    assert words[0] == 'env'
    while words[i] == '-u':
        env.pop(words[i + 1], None)
        i += 2
    return words[i:], env


def pods(job:dict):
    specs = job['spec']['pytorchReplicaSpecs']
    return [(kind, i) for kind in ('Master', 'Worker') for i in range(specs[kind]['replicas'])]


def test_pytorchjob_command_parses_in_every_pod(tmp_path, clean_env):
    docs = manifest()
    job, recipe = docs['PyTorchJob'], docs['ConfigMap']['data']
    (tmp_path / 'etc/llmft').mkdir(parents=True)
    for name, text in recipe.items(): (tmp_path / 'etc/llmft' / name).write_text(text)   # the ConfigMap, mounted
    seen = []
    for kind, i in pods(job):
        c = pytorch_container(job['spec']['pytorchReplicaSpecs'][kind])
        mounts = {m['name']: m['mountPath'] for m in c['volumeMounts']}
        env = {**operator_env(job, kind, i), **{e['name']: e['value'] for e in c['env']}}
        words, env = env_command([expand(w, env) for w in c['command']], env)
        assert words[:2] == ['llmft', 'train'] and not [w for w in words if '$(' in w], words
        assert words[2].startswith(mounts['recipe'] + '/'), (words, mounts)
        for k in DIST_ENV: clean_env.delenv(k, raising=False)
        for k, v in env.items(): clean_env.setenv(k, v)
        assert not in_distributed_worker(), f'{kind} {i}: llmft would take the pod for a worker torchrun started'
        settings, cfg = parse_train(['train', words[2].lstrip('/'), *words[3:]], cwd=tmp_path)
        rank = int(env['PET_NODE_RANK'])
        assert {k: settings[k] for k in ('nnodes', 'node_rank', 'master_addr', 'master_port')} == {
            'nnodes': 2, 'node_rank': rank, 'master_addr': 'llmft-sft-master-0', 'master_port': 23456}, settings
        cmd = torchrun_command('llmft', words[1:], settings)
        assert {f'--node_rank={rank}', '--master_addr=llmft-sft-master-0', '--master_port=23456'} <= set(cmd), cmd
        assert cfg['output_dir'].startswith(mounts['shared'] + '/') and cfg['data_shared_file_system'] is True
        assert cfg['overwrite_output_dir'] is False   # a restarted pod resumes from the last complete checkpoint
        assert os.environ['LLMFT_CACHE'].startswith(mounts['shared'] + '/')
        seen.append(rank)
    assert seen == [0, 1]


def test_why_the_pytorchjob_drops_world_size(clean_env):
    ("The operator's WORLD_SIZE and RANK (meant for one process per pod) make llmft take the pod for a worker that "
     "torchrun started: it would not start torchrun. If llmft learns to tell the two apart, drop `env -u` from the "
     "manifest and from its comment.")
    job = manifest()['PyTorchJob']
    for k, v in operator_env(job, 'Worker', 0).items(): clean_env.setenv(k, v)
    assert in_distributed_worker()
