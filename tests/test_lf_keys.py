"""LLaMA-Factory's whole configuration surface: each of its keys (tests/assets/lf_keys.json, written by
tools/lf_keys.py from LLaMA-Factory 0.9.5's argument dataclasses) is a key llmft carries, or one it knows it does not
carry (`hparams.unsupported`), accepted at LLaMA-Factory's default and refused by name otherwise."""
import json
import pytest
from conftest import ROOT
from llmft.core import ConfigError
from llmft.hparams.keys import key_reference, LF_ONLY
from llmft.hparams.parser import get_train_args
from llmft.hparams.recipe import prescan
from llmft.hparams.unsupported import UNSUPPORTED

LF = json.loads((ROOT / 'tests/assets/lf_keys.json').read_text())['keys']
OURS = {r.key for r in key_reference() if r.group != LF_ONLY}


def test_every_lf_key_is_known():
    unknown = sorted(k for k in LF if k not in OURS and k not in UNSUPPORTED)
    assert unknown == [], f'LLaMA-Factory keys neither carried nor listed as unsupported: {unknown}'
    assert not set(OURS) & set(UNSUPPORTED), 'a key is both carried and listed as unsupported'
    invented = sorted(k for k, u in UNSUPPORTED.items() if k not in LF and not u.group.startswith('mcore_adapter.'))
    assert invented == [], f'listed as LLaMA-Factory keys, but LLaMA-Factory 0.9.5 has no such key: {invented}'
    print(f'{len(LF)} LLaMA-Factory keys: {len(set(LF) & OURS)} carried, {len(UNSUPPORTED)} known and not carried')


@pytest.mark.parametrize('key', sorted(k for k in UNSUPPORTED if k in LF))
def test_unsupported_default_is_lf_default(key):
    assert UNSUPPORTED[key].default == LF[key]['default'], key
    assert UNSUPPORTED[key].group == LF[key]['group'], key


def test_recipe_with_every_lf_key_at_its_default(tiny_llama, tmp_path):
    "A recipe that writes out every LLaMA-Factory key at its default (as its web UI does) parses and passes the checks."
    cfg = {k: v['default'] for k, v in LF.items() if v['default'] is not None and k in UNSUPPORTED}
    cfg.update(model_name_or_path=tiny_llama, stage='sft', do_train=True, dataset='alpaca_demo',
               dataset_dir=str(ROOT / 'data'), template='llama3', output_dir=str(tmp_path / 'run'), report_to='none')
    prescan(cfg)
    args = get_train_args(cfg)
    assert args.model.model_name_or_path == tiny_llama


@pytest.mark.parametrize('key, value, says', [
    ('use_unsloth', True, "'use_unsloth: True' is a LLaMA-Factory key that llmft does not support"),
    ('enable_liger_kernel', 'true', 'instead: use_chunked_loss: true'),
    ('quantization_method', 'gptq', 'llmft quantizes on the fly with bitsandbytes only'),
    ('use_kt', True, 'KTransformers'),
])
def test_unsupported_value_refused_before_work(key, value, says, tiny_llama, tmp_path):
    cfg = dict(model_name_or_path=tiny_llama, stage='sft', do_train=True, dataset='alpaca_demo', template='llama3',
               dataset_dir=str(ROOT / 'data'), output_dir=str(tmp_path / 'run'), **{key: value})
    for parse in (prescan, get_train_args):
        with pytest.raises(ConfigError, match=says.replace('(', r'\(')):
            parse(cfg)
    assert not (tmp_path / 'run').exists()


def test_misspelt_key_still_named():
    with pytest.raises(ConfigError, match="Unknown config key 'use_unslot'; did you mean 'use_unsloth'"):
        prescan({'use_unslot': True})
