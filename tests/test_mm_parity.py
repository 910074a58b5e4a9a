"""Media rows against LLaMA-Factory 0.9.5, in CI: llmft tokenizes and collates each case of the media parity harness
(`bench/parity_mm.py`: every family's demo data on its tiny fixture, sft / dpo / kto, pan-and-scan, a clip, small
pictures) and its rows and batch tensors must equal LLaMA-Factory's stored side (tests/assets/lf_mm_reference.json,
written by `python bench/parity_mm.py --lf-python .lf-venv/bin/python --write-reference`)."""
import json, sys
import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / 'bench'))
import parity_mm  # noqa: E402
import parity_mm_side  # noqa: E402

REFERENCE = json.loads(parity_mm.REFERENCE.read_text())


def test_the_reference_covers_every_case():
    assert sorted(REFERENCE) == sorted(parity_mm.CASES)
    assert {c['case']['family'] for c in REFERENCE.values()} == {'llava', 'qwen2_vl', 'gemma3', 'qwen2_audio'}
    assert {c['case']['stage'] for c in REFERENCE.values()} == {'sft', 'dpo', 'kto'}


@pytest.mark.parametrize('case_id', list(parity_mm.CASES))
def test_rows_and_tensors_equal_llamafactory(case_id, tmp_path):
    case = parity_mm.make_cases([case_id])[0]
    rows, tensors = parity_mm_side.run_llmft(case, tmp_path)
    ours = dict(rows=json.loads(json.dumps(rows)), error=None,
                tensors={k: parity_mm.summary(v) for k, v in tensors.items()})
    r = parity_mm.compare_case(REFERENCE[case_id], ours, case_id)
    assert r['status'] in ('same', 'deliberate'), r['first']
    assert r['rows'] > 0 and 'input_ids' in r['tensors']
    media = {'pixel_values', 'image_grid_thw', 'video_grid_thw', 'input_features'} & set(r['tensors'])
    assert media, f'{case_id}: no media tensor was compared'


def test_a_changed_row_is_caught():
    "The comparison is not vacuous: one token off in one row, or a pixel off, is a difference."
    ref = REFERENCE['llava.sft']
    rows = json.loads(json.dumps(ref['rows']))
    rows[3]['input_ids'][5] += 1
    r = parity_mm.compare_case(ref, dict(rows=rows, tensors=ref['tensors'], error=None))
    assert r['first'] == 'row 3 input_ids'
    t = json.loads(json.dumps(ref['tensors']))
    t['pixel_values']['sample'][7] += 0.01
    assert 'pixel_values' in parity_mm.compare_case(ref, dict(rows=ref['rows'], tensors=t, error=None))['first']
