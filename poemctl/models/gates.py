"""The one convention every fast step loop shares: c̃'s pre-activation comes doubled.

tanh(z) = 2σ(2z) − 1. So with the c̃ block of the pre-activations doubled, one sigmoid over a whole
(rows, 4H) block computes all four gates: i, f, o = σ(z) and c̃ = 2σ(2z_c̃) − 1 = tanh(z_c̃). The factor is
put into W_x, b and W_h once per batch (`gate_scale`), never per step. Every step loop takes its
pre-activations in this form: eager_steps.py, cpu_steps.c, triton_steps.py (torch-lstm) and
numpy_steps.py (numpy-lstm). The reference models (numpy_reference.py, gradcheck.py) use none of this.
"""

from __future__ import annotations

import numpy as np

CANDIDATE_SCALE = 2.0  # the factor of c̃'s pre-activation


def gate_scale(hidden: int, dtype=np.float64) -> np.ndarray:
    """(4H,): the factor of each gate's pre-activation, gate blocks i, f, c̃, o: 1, 1, 2, 1."""
    scale = np.ones(4 * hidden, dtype=dtype)
    scale[2 * hidden : 3 * hidden] = CANDIDATE_SCALE
    return scale
