#!/usr/bin/env python3
"""GPU-only check of `infer_backend: sglang` (CI has no GPU): the checks of check_vllm.py on the SGLang engine
(`llmft.infer.backends.SGLangEngine`): greedy answers equal to the HF engine's, adapter on and off, a cancelled request
ended at once, the same answer through `llmft api` and the OpenAI client; a table of tokens/s per engine.

    python tests/gpu/check_sglang.py --out report.json           # needs sglang (pip install sglang) and a CUDA GPU
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from check_vllm import main  # noqa: E402  (the same checks, another engine)

if __name__ == '__main__':
    main('sglang')
