"""Interrupting a training run in a live Jupyter kernel: the current step finishes, a whole checkpoint is saved, `run_exp`
returns normally (no KeyboardInterrupt), and the kernel keeps working; the run then resumes from that checkpoint."""
import pytest
import json, time
from jupyter_client.manager import start_new_kernel
from conftest import ROOT

pytestmark = pytest.mark.slow   # a training run interrupted in a real kernel

CODE = '''
import json, os
from transformers import TrainerCallback
from llmft.train.tuner import run_exp

class Started(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        if state.global_step == 3: open({flag!r}, 'w').write('go')
res = run_exp({cfg}, callbacks=[Started()])
print(json.dumps({{'interrupted': res.interrupted, 'step': res.trainer.state.global_step}}))
'''


def run(kc, code, timeout=600):
    "Execute `code`; return (status of the reply, text printed on stdout)."
    msg_id = kc.execute(code)
    out, deadline = [], time.time() + timeout
    while True:
        msg = kc.get_iopub_msg(timeout=max(deadline - time.time(), 1))
        if msg['parent_header'].get('msg_id') != msg_id: continue
        if msg['msg_type'] == 'stream' and msg['content']['name'] == 'stdout': out.append(msg['content']['text'])
        if msg['msg_type'] == 'status' and msg['content']['execution_state'] == 'idle': break
    reply = kc.get_shell_msg(timeout=60)
    return reply['content']['status'], ''.join(out)


def test_interrupt_saves_a_checkpoint_and_keeps_the_kernel(sft_cfg, tmp_path):
    flag = tmp_path / 'started'
    cfg = {**sft_cfg, 'max_steps': 5000, 'logging_steps': 1, 'save_strategy': 'no', 'output_dir': str(tmp_path / 'run')}
    km, kc = start_new_kernel(kernel_name='python3', cwd=str(ROOT))
    try:
        msg_id = kc.execute(CODE.format(flag=str(flag), cfg=repr(cfg)))
        deadline = time.time() + 300
        while not flag.exists():
            assert time.time() < deadline, 'training never reached step 3'
            time.sleep(0.2)
        km.interrupt_kernel()
        out, deadline = [], time.time() + 300
        while True:
            msg = kc.get_iopub_msg(timeout=max(deadline - time.time(), 1))
            if msg['parent_header'].get('msg_id') != msg_id: continue
            if msg['msg_type'] == 'stream' and msg['content']['name'] == 'stdout': out.append(msg['content']['text'])
            if msg['msg_type'] == 'error': raise AssertionError(f"the cell raised {msg['content']['ename']}: {msg['content']['evalue']}")
            if msg['msg_type'] == 'status' and msg['content']['execution_state'] == 'idle': break
        assert kc.get_shell_msg(timeout=60)['content']['status'] == 'ok'
        info = json.loads([l for l in ''.join(out).splitlines() if l.startswith('{"interrupted"')][-1])
        assert info['interrupted'] and 3 <= info['step'] < 5000, info
        ckpt = tmp_path / 'run' / f"checkpoint-{info['step']}"
        assert (ckpt / 'llmft_checkpoint_complete.json').exists() and (ckpt / 'optimizer.pt').exists()
        status, text = run(kc, 'print(6 * 7)')                          # the kernel is still usable
        assert status == 'ok' and text.strip() == '42'
        status, text = run(kc, f"r = run_exp({{**{cfg!r}, 'max_steps': {info['step'] + 2}, 'resume_from_checkpoint': True}}); print(r.trainer.state.global_step)")
        assert status == 'ok' and text.strip().splitlines()[-1] == str(info['step'] + 2), text[-2000:]
    finally:
        kc.stop_channels(); km.shutdown_kernel(now=True)
