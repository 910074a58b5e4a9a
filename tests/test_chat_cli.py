"""`llmft chat` in a real pseudo-terminal (pexpect): it answers as ChatModel does, `clear` forgets the conversation,
Ctrl-C stops an answer without ending the program, `exit` leaves."""
import sys
from pathlib import Path
import pexpect
import pytest
from conftest import ROOT

LLMFT = str(Path(sys.executable).parent / 'llmft')


@pytest.fixture(scope='module')
def lora_run(tmp_path_factory):
    from llmft.testing import tiny_model
    from llmft.train.tuner import run_exp
    out = tmp_path_factory.mktemp('chat') / 'run'
    run_exp(dict(model_name_or_path=str(tiny_model('llama')), stage='sft', do_train=True, finetuning_type='lora',
                 lora_target='all', dataset='identity', dataset_dir=str(ROOT / 'data'), template='llama3',
                 cutoff_len=128, max_samples=8, output_dir=str(out), overwrite_output_dir=True,
                 per_device_train_batch_size=4, learning_rate=5e-3, max_steps=10, report_to='none',
                 save_strategy='no', disable_gradient_checkpointing=True))
    return out


@pytest.mark.slow
def test_terminal_chat(lora_run):
    from llmft.infer.chat import ChatModel
    cm = ChatModel(str(lora_run), max_new_tokens=16, do_sample=False)
    want = cm.chat([{'role': 'user', 'content': 'Hi'}])[0].text
    child = pexpect.spawn(LLMFT, ['chat', str(lora_run), 'max_new_tokens=16', 'do_sample=false'], encoding='utf-8',
                          timeout=120, dimensions=(40, 200))
    child.expect('Type clear to forget')
    child.expect('User: '); child.sendline('Hi')
    child.expect('Assistant: '); child.expect('\r\n\r\nUser: ')
    assert child.before.strip() == want.strip(), (child.before, want)
    child.sendline('clear'); child.expect('History cleared.')
    child.expect('User: '); child.sendline('exit')
    child.expect(pexpect.EOF); child.close()
    assert child.exitstatus == 0


@pytest.mark.slow
def test_ctrl_c_stops_the_answer_not_the_program(lora_run):
    child = pexpect.spawn(LLMFT, ['chat', str(lora_run), 'min_new_tokens=3000', 'max_new_tokens=3000'],
                          encoding='utf-8', timeout=120, dimensions=(40, 200))
    child.expect('User: '); child.sendline('Tell me a story')
    child.expect('Assistant: ')
    child.expect(r'\S+ \S+ \S+')                         # it is writing
    child.sendintr()                                     # Ctrl-C while the answer is being written
    child.expect(r'\[stopped\]')
    child.expect('User: '); child.sendline('Hi')         # the program goes on, the cut answer in its history
    child.expect('Assistant: '); child.sendintr(); child.expect(r'\[stopped\]')
    child.expect('User: '); child.sendline('exit')
    child.expect(pexpect.EOF); child.close()
    assert child.exitstatus == 0
