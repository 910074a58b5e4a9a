"Tutorials run in a real Jupyter kernel through papermill, with tiny parameters."
import json
import papermill as pm
from conftest import ROOT


def test_quickstart_tutorial(tmp_path):
    out_nb = tmp_path / 'out.ipynb'
    pm.execute_notebook(str(ROOT / 'tutorials/01_quickstart_sft.ipynb'), str(out_nb), cwd=str(ROOT), kernel_name='python3',
                        parameters=dict(max_steps=12, output_dir=str(tmp_path / 'run')), progress_bar=False)
    nb = json.loads(out_nb.read_text())
    assert any('parameters' in c['metadata'].get('tags', []) for c in nb['cells'])
    assert any('injected-parameters' in c['metadata'].get('tags', []) for c in nb['cells'])
    assert (tmp_path / 'run' / 'adapter_model.safetensors').exists()
    assert (tmp_path / 'run' / 'training_loss.png').exists()


def test_chat_and_serve_tutorial(tmp_path):
    out_nb = tmp_path / 'out.ipynb'
    pm.execute_notebook(str(ROOT / 'tutorials/03_chat_and_serve.ipynb'), str(out_nb), cwd=str(ROOT), kernel_name='python3',
                        parameters=dict(max_steps=20, output_dir=str(tmp_path / 'run')), progress_bar=False)
    assert (tmp_path / 'run' / 'adapter_model.safetensors').exists()
    text = out_nb.read_text()
    assert 'prompt_tokens' in text          # the openai client's answer with its usage was printed


def test_eval_and_export_tutorial(tmp_path):
    out_nb = tmp_path / 'out.ipynb'
    pm.execute_notebook(str(ROOT / 'tutorials/04_eval_and_export.ipynb'), str(out_nb), cwd=str(ROOT), kernel_name='python3',
                        parameters=dict(output_dir=str(tmp_path / 'run'), export_dir=str(tmp_path / 'export')),
                        progress_bar=False)
    results = json.loads((tmp_path / 'run-eval' / 'results.json').read_text())
    assert results['average'] >= 90, results['categories']
    assert (tmp_path / 'export' / 'Modelfile').exists() and (tmp_path / 'export' / 'README.md').exists()
    assert 'answered right by the exported model' in out_nb.read_text()
