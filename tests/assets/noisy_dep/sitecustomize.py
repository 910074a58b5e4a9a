"""A dependency that talks, for tests/test_library_logs.py: on PYTHONPATH, Python imports this at start-up.

When `transformers` is first imported, `noisydep` is imported with it (its import-time messages); `yaml.safe_load`,
which llmft calls to read every recipe, says something each time it runs (run-time messages)."""
import importlib.abc, sys


class _ImportTransformersToo(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == 'transformers' and 'noisydep' not in sys.modules:
            sys.meta_path.remove(self)
            import noisydep  # noqa: F401  (its import logs and warns)
        return None


sys.meta_path.insert(0, _ImportTransformersToo())

try:
    import yaml
    _safe_load = yaml.safe_load

    def _noisy_safe_load(stream):
        import logging, warnings
        logging.getLogger('noisydep.runtime').warning('noisydep: run-time warning through a bare logger')
        warnings.warn('noisydep: run-time UserWarning', UserWarning)
        return _safe_load(stream)

    yaml.safe_load = _noisy_safe_load
except ImportError:
    pass
