"""The run folder's files are named in one module (`llmft/rundir.py`, DESIGN §5): no other module of `llmft/` spells a
run file's name or imports one from `llmft.core`. The allow-list names the modules still to convert."""
import ast
from conftest import ROOT

# module -> why it may name a run file itself (keep this list empty where possible: a stale entry fails)
ALLOWED = {'llmft/core.py': "LIBRARY_LOG: core's LibraryLog names the file it attaches to (rundir re-exports it; core "
                            'cannot import rundir)'}
NAMES = ('llmft_args.yaml', 'trainer_log.jsonl', 'rollouts.jsonl', 'template.json', 'llmft_left_out.json', 'all_results.json',
         'generated_predictions.jsonl', 'libraries.log', 'llmft_checkpoint_complete.json', 'training_loss')
PARTS = ('checkpoint-', '_results.json', 'training_')   # pieces of names built with an f-string
MOVED = ('ARGS_FILE', 'TRAINER_LOG', 'TEMPLATE_FILE', 'LEFT_OUT_FILE', 'LIBRARY_LOG', 'CHECKPOINT_DONE', 'LAUNCHER_FILES',
         'last_checkpoint', 'LogTail')


def _docstrings(tree) -> set:
    "The ids of the docstring nodes of `tree` (a docstring may name files: it does not open them)."
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))]
    return {id(n.body[0].value) for n in nodes if n.body and isinstance(n.body[0], ast.Expr)
            and isinstance(n.body[0].value, ast.Constant)}


def _is_name(s:str) -> bool:
    "Whether the string `s` is (or builds) a run file's name, rather than a message that mentions one."
    s = s.strip()
    if ' ' in s: return False
    return any(s.startswith(n) or s.endswith(n) for n in NAMES) or s in PARTS


def run_file_uses(path) -> list[str]:
    "Where module `path` names a run file (a string literal) or imports a run-folder name from `llmft.core`."
    tree, out = ast.parse(path.read_text()), []
    docs = _docstrings(tree)
    for n in ast.walk(tree):
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs and _is_name(n.value):
            out.append(f'line {n.lineno}: {n.value!r}')
        elif isinstance(n, ast.ImportFrom) and (n.module or '').endswith('core'):
            out += [f'line {n.lineno}: imports {a.name} from core' for a in n.names if a.name in MOVED]
    return out


def test_run_files_named_in_rundir_only():
    found = {}
    for py in sorted((ROOT / 'llmft').rglob('*.py')):
        rel = py.relative_to(ROOT).as_posix()
        if rel in ('llmft/rundir.py', 'llmft/_modidx.py') or rel in ALLOWED: continue
        if uses := run_file_uses(py): found[rel] = uses
    assert not found, 'run files named outside llmft/rundir.py (use llmft.rundir.RunDir):\n' + '\n'.join(
        f'  {f}: {"; ".join(u)}' for f, u in found.items())


def test_allow_list_current():
    "An allowed module that no longer names run files leaves the list."
    fixed = [f for f in ALLOWED if (ROOT / f).exists() and not run_file_uses(ROOT / f)]
    assert not fixed, f'remove from ALLOWED at the top of tests/test_rundir.py: {fixed}'


def test_check_finds_names(tmp_path):
    p = tmp_path / 'm.py'
    p.write_text('"Reads `trainer_log.jsonl`."\nfrom ..core import ARGS_FILE\n'
                 "x = out / 'all_results.json'\ny = f'checkpoint-{3}'\nz = 'no trainer_log.jsonl here'\n")
    found = sorted(run_file_uses(p))
    assert found == ['line 2: imports ARGS_FILE from core', "line 3: 'all_results.json'", "line 4: 'checkpoint-'"], found
