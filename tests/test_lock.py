"""The tested set: requirements/lock-cpu.txt and lock-cuda.txt pin every package within the ranges of settings.ini,
`make install` installs from them (LATEST=1 does not), the venv these tests run in is the set it was installed from,
and tools/lock.py names what moved."""
import configparser, os, shlex, subprocess, sys
from importlib.metadata import distributions
from pathlib import Path
from packaging.requirements import Requirement
from packaging.version import Version
from conftest import ROOT, cli

sys.path.insert(0, str(ROOT / 'tools'))
import lock  # noqa: E402  (tools/lock.py)

CPU, CUDA = lock.read_lock(ROOT / lock.CPU_LOCK), lock.read_lock(ROOT / lock.CUDA_LOCK)


def declared() -> list[Requirement]:
    "Every requirement settings.ini declares: the library's and its extras'."
    cfg = configparser.ConfigParser(delimiters=['='])
    cfg.read(ROOT / 'settings.ini', encoding='utf-8')
    keys = ('requirements', 'optim_requirements', 'tracker_requirements', 'ray_requirements', 'board_requirements', 'mm_requirements', 'dev_requirements')
    return [Requirement(r) for k in keys for r in shlex.split(cfg['DEFAULT'].get(k, ''))]


def test_every_declared_package_is_locked_within_its_range():
    reqs = declared()
    assert len(reqs) > 30 and len(CPU) > len(reqs)
    for r in reqs:
        name = lock.norm(r.name)
        assert name in CPU and name in CUDA, f'{r.name} is declared in settings.ini but not locked'
        assert r.specifier.contains(Version(CPU[name]), prereleases=True), f'{r.name}=={CPU[name]} is outside {r}'


def test_the_cuda_lock_is_the_same_set_plus_cuda_packages():
    assert all(CUDA[n] == v for n, v in CPU.items()), [n for n, v in CPU.items() if CUDA.get(n) != v]
    extra = set(CUDA) - set(CPU)
    cuda_only = ('nvidia-', 'cuda-', 'triton', 'setuptools', 'wheel')
    assert extra and all(n.startswith(cuda_only) for n in extra), extra
    assert '+' not in CPU['torch']   # a public version: the CPU and the CUDA build both satisfy it


def test_make_install_uses_the_lock_unless_latest(tmp_path):
    def dry(*extra):
        env = {k: v for k, v in os.environ.items() if k not in ('MAKEFLAGS', 'MFLAGS', 'MAKELEVEL', 'LATEST')}
        r = subprocess.run(['make', '-n', 'install', f'VENV={tmp_path / "venv"}', 'HAS_CUDA=', *extra], cwd=ROOT,
                           text=True, capture_output=True, env=env)
        assert r.returncode == 0, r.stderr
        return [l for l in r.stdout.splitlines() if 'pip install -q -e' in l][0].rstrip()
    assert dry().endswith('-c requirements/lock-cpu.txt')
    assert '-c ' not in dry('LATEST=1') and '--upgrade' in dry('LATEST=1')   # an installed venv moves too


def test_this_venv_is_the_set_it_was_installed_from():
    "Installed from the lock: `llmft env --check` finds no drift; with LATEST=1: every drifted package is named."
    stamp = Path(sys.prefix) / '.installed'
    source = stamp.read_text().strip() if stamp.exists() else 'unknown'
    r = cli('env', '--all', '--check')
    if source.startswith('requirements/lock-'):
        assert r.returncode == 0 and 'The installed set is the tested set' in r.stdout, r.stdout[-3000:]
        return
    installed = {lock.norm(d.metadata["Name"]): d.version for d in distributions()}
    off = [n for n, v in CPU.items() if lock.public(installed.get(n, '-')) != v]
    assert r.returncode == int(bool(off)), r.stdout[-3000:]
    assert all(n in r.stdout for n in off), (off, r.stdout[-3000:])


def test_report_names_what_moved(tmp_path):
    old, new = tmp_path / 'old.txt', tmp_path / 'new.txt'
    old.write_text('# header\ntransformers==5.24.0\ntorch==2.13.0\ngone==1.0\n')
    new.write_text('transformers==5.25.0\ntorch==2.13.0\nkernels==0.19.1\n')
    out = subprocess.run([sys.executable, 'tools/lock.py', 'diff', old, new], cwd=ROOT, capture_output=True,
                         text=True).stdout
    rows = {l.split()[0]: l.split()[1:] for l in out.splitlines()[2:-1]}
    assert rows == {'gone': ['1.0', '-'], 'kernels': ['-', '0.19.1'], 'transformers': ['5.24.0', '5.25.0']}, out
    assert out.strip().endswith('3 package(s) moved.')
    assert lock.moved({'torch': '2.13.0'}, {'torch': '2.13.0+cpu'}) == []


def test_env_shows_a_runs_versions(tmp_path):
    run = tmp_path / 'run'
    run.mkdir()
    (run / 'llmft_args.yaml').write_text('# versions: {"python": "3.11.7", "transformers": "5.0.0"}\nstage: sft\n')
    r = cli('env', run)
    assert r.returncode == 0, r.stderr
    row = [l for l in r.stdout.splitlines() if l.startswith('transformers ')][0]
    assert row.split()[-1] == '5.0.0' and row.split()[2] == CPU['transformers'], row
    r = cli('env', tmp_path)
    assert r.returncode == 3 and r.stderr.strip() == f'llmft: data error: {tmp_path}: not an llmft run folder (no ' \
                                                     'llmft_args.yaml).', r.stderr
