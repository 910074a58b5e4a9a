"""Reward functions loaded by path in tests/test_grpo.py (`tests/assets/rewards.py:digit_share`): plain Python, as a
user writes them."""


def digit_share(completions, **kwargs):
    "The share of a completion's characters that are digits: a task a tiny random model scores low on and can learn."
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


def needs_difficulty(completions, difficulty):
    "Asks for a `difficulty` column the demo data does not have."
    return [0.0 for _ in completions]


def breaks_from_step_3(completions, trainer_state=None, **kwargs):
    "Raises from step 3 on (`global_step` counts the steps finished), as a parser meeting an unexpected answer would."
    if trainer_state is not None and trainer_state.global_step >= 2: raise ValueError('cannot parse the answer')
    return [0.0 for _ in completions]
