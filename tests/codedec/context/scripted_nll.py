"""A scripted stand-in for a model's token NLLs (LongCodeZip tests)."""

from __future__ import annotations

import torch


def copy_nll(calls: list | None = None):
    """NLL 0.5 for a token seen earlier in the row, 3.0 otherwise: text that contains the
    query's tokens lowers the query's perplexity, as a real model does for the code it needs."""

    def nll(rows):
        if calls is not None:
            calls.append(len(rows))
        out = []
        for row in rows:
            seen, vals = {row[0]}, []
            for tok in row[1:]:
                vals.append(0.5 if tok in seen else 3.0)
                seen.add(tok)
            out.append(torch.tensor(vals))
        return out

    return nll
