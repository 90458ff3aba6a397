"""Triton kernels with pure-torch twins, installed as ``codedec.kernels`` (see DESIGN §2).

Not importable as ``kernels``: transformers probes for a PyPI package of that name. Kernels arrive
with their issues (RoPE patching for PIE, tree verification for speculation).

- ``rope_patch``: re-rotate cached keys in place by a per-token position change Δ (PIE);
  ``rope_patch_torch`` / ``rope_patch_triton`` are its two backends, ``rope_inv_freq`` the RoPE
  frequencies from θ.
"""

from codedec.kernels.rope_patch import rope_inv_freq, rope_patch, rope_patch_torch, rope_patch_triton

__all__ = ["rope_inv_freq", "rope_patch", "rope_patch_torch", "rope_patch_triton"]
