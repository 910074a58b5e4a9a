"""The lock of the tested set of packages: write it, and move it to the newest releases on purpose.

`settings.ini` declares the ranges llmft supports; `requirements/lock-cpu.txt` pins every package of the set that the
whole test suite passed with (CPU build of torch), and `requirements/lock-cuda.txt` the same set resolved for a CUDA
machine (torch from PyPI's default index, with its nvidia-* and triton packages). `make install` installs from them.

  python tools/lock.py upgrade [--venv DIR] [--no-test]   (`make upgrade`)
      a clean resolve of the newest releases within the ranges into a scratch venv (`make install LATEST=1`), the
      whole test suite there (`make test`), and, only if it passed, both locks rewritten; the report names every
      package that moved. --no-test writes the locks from the resolve alone (say why in the commit). It always takes
      the CPU path, even on a CUDA machine: lock-cuda.txt is lock-cpu.txt resolved again with torch's CUDA build.
      torch itself stays at settings.ini's torch_cpu pin (the CPU build this machine has): move that pin to move it.
  python tools/lock.py freeze VENV      write both locks from an installed venv (the one the tests just passed in)
  python tools/lock.py cuda             resolve lock-cuda.txt again from lock-cpu.txt (metadata only, no download
                                        of torch's wheels)
  python tools/lock.py diff OLD NEW     the report of what moved between two lock files
Run from the repo root.
"""
import datetime, json, os, re, shutil, subprocess, sys, tempfile
from pathlib import Path

LOCK_DIR = Path('requirements')
CPU_LOCK, CUDA_LOCK = LOCK_DIR / 'lock-cpu.txt', LOCK_DIR / 'lock-cuda.txt'
EXTRAS = '.[dev,optim,trackers,ray,board,mm]'
HEADER = """# The tested set of llmft's dependencies, {kind}.
# Written by `{how}` on {day} (Python {py}, {machine}); `make install` installs from it,
# `make install LATEST=1` resolves the newest releases within the ranges of settings.ini instead.
# Do not edit by hand: `make upgrade` moves it after the whole test suite passed on the newest releases.
"""


def norm(name: str) -> str:
    "A package name as PEP 503 compares them."
    return re.sub(r'[-_.]+', '-', name).lower()


def read_lock(path) -> dict:
    "Package name (normalised) -> pinned version, from a lock or `pip freeze` text."
    pins = {}
    for line in Path(path).read_text().splitlines() if Path(path).exists() else []:
        line = line.split('#', 1)[0].strip()
        if '==' in line: pins[norm(line.split('==')[0])] = line.split('==', 1)[1].split(';')[0].strip()
    return pins


def public(v: str) -> str:
    "A version without its local label: torch's `2.13.0+cpu` is locked as `2.13.0`, which either build satisfies."
    return v.split('+', 1)[0]


def write_lock(path, pins: dict, kind: str, how: str):
    "Write a lock file: the header, then one `name==version` a line, sorted."
    py = '.'.join(map(str, sys.version_info[:3]))
    head = HEADER.format(kind=kind, how=how, day=datetime.date.today(), py=py, machine=os.uname().machine)
    body = ''.join(f'{n}=={public(v)}\n' for n, v in sorted(pins.items()))
    tmp = Path(str(path) + '.tmp')
    tmp.write_text(head + body)
    tmp.replace(path)


def freeze(venv) -> dict:
    "Every package installed in `venv` but llmft itself (an editable install) and pip."
    out = subprocess.run([f'{venv}/bin/python', '-m', 'pip', 'freeze', '--exclude-editable'], check=True,
                         capture_output=True, text=True).stdout
    odd = [l for l in out.splitlines() if l.strip() and not l.startswith('#') and '==' not in l]
    if odd: sys.exit(f'{venv}: packages installed from a URL or a path cannot be locked by version: {odd}')
    pins = {norm(l.split('==')[0]): l.split('==', 1)[1] for l in out.splitlines() if '==' in l}
    return {n: v for n, v in pins.items() if n not in ('llmft', 'pip')}


def resolve_cuda(cpu_pins: dict, python=sys.executable) -> dict:
    "The CPU lock resolved for a CUDA machine: pip's dry run against PyPI alone, no local wheel, no config file."
    with tempfile.TemporaryDirectory() as d:
        cons = Path(d) / 'constraints.txt'
        cons.write_text(''.join(f'{n}=={public(v)}\n' for n, v in cpu_pins.items()))
        env = {k: v for k, v in os.environ.items() if not k.startswith('PIP_')}
        env['PIP_CONFIG_FILE'] = os.devnull
        torch = f"torch=={public(cpu_pins['torch'])}"
        cmd = [python, '-m', 'pip', 'install', '--dry-run', '--ignore-installed', '--quiet', '--report',
               f'{d}/report.json', '-c', str(cons), torch, EXTRAS]
        subprocess.run(cmd, check=True, env=env)
        report = json.loads((Path(d) / 'report.json').read_text())
    pins = {norm(i['metadata']['name']): i['metadata']['version'] for i in report['install']}
    return {n: v for n, v in pins.items() if n not in ('llmft', 'pip')}


def moved(old: dict, new: dict) -> list:
    "(package, locked before, now) for every package that moved, came or went."
    names = sorted(set(old) | set(new))
    return [(n, old.get(n, '-'), public(new.get(n, '-'))) for n in names if old.get(n) != public(new.get(n, '-'))]


def report(old: dict, new: dict) -> str:
    "A table of the packages that moved."
    rows = moved(old, new)
    if not rows: return 'No package moved: the newest releases within the ranges are the locked ones.'
    w = max(len(r[0]) for r in rows)
    lines = [f'{"package":<{w}}  {"locked":<14}  newest', f'{"-" * w}  {"-" * 14}  {"-" * 14}']
    lines += [f'{n:<{w}}  {a:<14}  {b}' for n, a, b in rows]
    return '\n'.join(lines) + f'\n{len(rows)} package(s) moved.'


CPU_KIND = 'CPU build of torch: every package and version `make test` passed with'
CUDA_KIND = 'CUDA build of torch: the CPU set resolved with torch from PyPI (not run here)'


def write_both(pins: dict, how: str, python=sys.executable):
    "Write the CPU lock from `pins` and the CUDA lock resolved from it: both or, if the resolve fails, neither."
    cuda = resolve_cuda({n: public(v) for n, v in pins.items()}, python)
    LOCK_DIR.mkdir(exist_ok=True)
    write_lock(CPU_LOCK, pins, CPU_KIND, how)
    write_lock(CUDA_LOCK, cuda, CUDA_KIND, how)


def upgrade(venv='.upgrade-venv', test=True) -> int:
    "Newest releases in a scratch venv, the whole suite there, and the locks rewritten only if it passed."
    old = read_lock(CPU_LOCK)
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run(['make', 'install', f'VENV={venv}', 'LATEST=1', 'HAS_CUDA='], check=True)
    new = freeze(venv)
    print(f'== newest releases within the ranges of settings.ini\n{report(old, new)}', flush=True)
    if test:
        r = subprocess.run(['make', 'test', f'VENV={venv}', 'LATEST=1', 'HAS_CUDA='])
        if r.returncode:
            print(f'== the tests failed on the newest releases (exit {r.returncode}): the locks are unchanged.')
            return r.returncode
    write_both(new, 'make upgrade' if test else 'tools/lock.py upgrade --no-test', f'{venv}/bin/python')
    print(f'== {CPU_LOCK} and {CUDA_LOCK} rewritten ({len(new)} packages)')
    return 0


def main(argv):
    if argv[:1] == ['upgrade']:
        venv = argv[argv.index('--venv') + 1] if '--venv' in argv else '.upgrade-venv'
        return upgrade(venv, '--no-test' not in argv)
    if argv[:1] == ['freeze'] and len(argv) == 2:
        old, new = read_lock(CPU_LOCK), freeze(argv[1])
        print(report(old, new))
        write_both(new, f'tools/lock.py freeze {argv[1]}', f'{argv[1]}/bin/python')
        return 0
    if argv[:1] == ['cuda']:
        write_lock(CUDA_LOCK, resolve_cuda(read_lock(CPU_LOCK)), CUDA_KIND, 'tools/lock.py cuda')
        return 0
    if argv[:1] == ['diff'] and len(argv) == 3:
        print(report(read_lock(argv[1]), read_lock(argv[2])))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
