"""What a new release of a dependency may do at import: a logger with its own stderr handler that stops propagation
(transformers' and datasets' way), a warning, a record on the root logger, and a bare logger (printed by Python's
last-resort handler, kernels' way)."""
import logging, sys, warnings

_log = logging.getLogger('noisydep')
_log.addHandler(logging.StreamHandler(sys.stderr))
_log.propagate = False
_log.warning('noisydep: import-time warning from a logger with its own stderr handler')
warnings.warn('noisydep: import-time FutureWarning', FutureWarning)
logging.warning('noisydep: import-time record on the root logger')
logging.getLogger('noisydep.kernels').warning('noisydep: import-time warning through a bare logger')
