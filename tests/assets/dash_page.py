"""Write the notebook that the browser test serves with Voila: the sample inspector on the demo data, the live monitor of a
run trained while the page is built, the chat comparing that run with its base model, and a run builder whose Launch button the test clicks (the monitor then updates live)."""
import json, sys
from pathlib import Path

CELLS = [
"""import tempfile
from llmft.testing import tiny_model
from llmft.dash.inspect import inspect_dataset
from llmft.dash.live import LiveMonitor
from llmft.dash.forms import RunBuilder
from llmft.train.tuner import run_exp
model = str(tiny_model('llama'))
cfg = dict(model_name_or_path=model, stage='sft', do_train=True, dataset='alpaca_demo', dataset_dir=DATA, template='llama3', cutoff_len=64,
           max_samples=16, output_dir=tempfile.mkdtemp(), overwrite_output_dir=True, per_device_train_batch_size=4, learning_rate=1e-2,
           max_steps=8, logging_steps=1, report_to='none', save_strategy='no', disable_gradient_checkpointing=True)""",
"""inspector = inspect_dataset(cfg)
inspector""",
"""monitor = LiveMonitor('run at page build')
monitor""",
"""res = run_exp(cfg, callbacks=[monitor])
print('trained', len(monitor.records), 'log records')""",
"""from llmft.dash.chat import ChatWidget
chat = ChatWidget.compare(res.output_dir, max_new_tokens=12)
chat""",
"""builder = RunBuilder(dataset_dir=DATA, model_name_or_path=model, output_dir=tempfile.mkdtemp() + '/builder', max_steps=6, learning_rate=1e-2,
                     cutoff_len=64, dataset='alpaca_demo')
builder.extra.value = 'logging_steps: 1\\nsave_strategy: "no"\\nmax_samples: 16\\ndisable_gradient_checkpointing: true'
builder""",
]

def write(path, data_dir):
    cells = [{'cell_type': 'code', 'id': f'c{i}', 'metadata': {}, 'execution_count': None, 'outputs': [],
              'source': c.replace('DATA', repr(str(data_dir)))} for i, c in enumerate(CELLS)]
    nb = {'cells': cells, 'metadata': {'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}},
          'nbformat': 4, 'nbformat_minor': 5}
    Path(path).write_text(json.dumps(nb))

if __name__ == '__main__': write(sys.argv[1], sys.argv[2])
