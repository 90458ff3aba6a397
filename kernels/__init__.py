"""Triton kernels with pure-torch twins, installed as ``codedec.kernels`` (see DESIGN §2).

Not importable as ``kernels``: transformers probes for a PyPI package of that name. Kernels arrive
with their issues (RoPE patching for PIE, tree verification for speculation).
"""
