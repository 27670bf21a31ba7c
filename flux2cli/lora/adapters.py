"""``LoraAdapters``: the engine's LoRAs, as PEFT adapters on the loaded transformer.

Each LoRA is loaded once (``transformer.load_lora_adapter``, diffusers' PEFT integration)
and stays loaded; a generation names the ones it wants with their scales, and
``set_adapters`` switches between sets without touching the base weights, so swapping or
rescaling costs milliseconds and never reloads the model. Fusing (``fuse=True``) merges the
active set into the base weights for speed where they are plain float tensors; the touched
weights are copied first and copied back when the set changes, because unmerging by
subtraction does not give the same bits back.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Any

from flux2cli.errors import InvalidRequest
from flux2cli.lora.files import LoraCatalog
from flux2cli.lora.refs import LoraRef


@dataclass(frozen=True)
class LoadedLora:
    name: str
    adapter: str  # the PEFT adapter name (module-dict keys cannot hold every file name's characters)
    sha256: str
    kind: str  # lora | lokr
    format: str
    notices: tuple[str, ...] = ()


class LoraAdapters:
    def __init__(self, pipe: Any, model_name: str):
        self.pipe = pipe
        self.model_name = model_name
        self.catalog = LoraCatalog()
        self.defaults: tuple[LoraRef, ...] = ()  # what a request that names none gets (--lora)
        self.fuse = False
        self.partial = False
        self.loaded: dict[str, LoadedLora] = {}
        self.notices: list[str] = []  # one-line notes for the front end (partial loads, no fusing)
        self._applied: tuple[tuple[str, float], ...] | None = None
        self._backup: dict[str, Any] | None = None  # weights changed by fusing, as they were
        self._counter = 0
        self.last: tuple[LoraRef, ...] = ()  # what the last apply() made active, with sha256

    @property
    def transformer(self) -> Any:
        return self.pipe.transformer

    def configure(self, catalog: LoraCatalog | None = None, *, defaults: tuple[LoraRef, ...] | list[LoraRef] = (),
                  fuse: bool = False, partial: bool = False) -> None:
        if catalog is not None:
            self.catalog = catalog
        self.defaults, self.fuse, self.partial = tuple(defaults), fuse, partial

    # -- loading --------------------------------------------------------------------------
    def load(self, name: str) -> LoadedLora:
        """Load the catalog's LoRA ``name`` as an adapter (once); a file that does not fit is refused."""
        if name in self.loaded:
            return self.loaded[name]
        from flux2cli.lora import formats

        entry = self.catalog.get(name)
        state_dict, metadata = formats.load_file(entry.path)
        foreign = formats.foreign_family(list(state_dict))
        if foreign:
            raise InvalidRequest(f"{entry.path.name} is a LoRA for {foreign}, not for {self.model_name}")
        converted = formats.convert(state_dict, metadata)
        config = self.transformer.config
        notices = formats.check_fits(converted, entry.path.name, formats.targets(self.transformer),
                                     model_name=self.model_name,
                                     model_hidden=config.num_attention_heads * config.attention_head_dim,
                                     partial=self.partial)
        if converted.kind == "lokr" and not self.can_fuse():
            # PEFT's LoKr layer reshapes its delta to the base weight's shape, which 4-bit and GGUF packing change
            raise InvalidRequest(f"{entry.path.name} is a LoKr adapter, which cannot act on quantized "
                                 f"({self._quant_method() or 'packed'}) weights; use a bf16 model for it")
        self._counter += 1
        adapter = f"lora{self._counter}"
        self._restore_fused()
        tensors = {f"transformer.{key}": value for key, value in converted.tensors.items()}
        with warnings.catch_warnings():  # PEFT's notes on several adapters are not the user's concern
            warnings.simplefilter("ignore", UserWarning)
            self.transformer.load_lora_adapter(tensors, prefix="transformer", adapter_name=adapter)
        self._applied = None  # loading activates the new adapter: the next apply() sets the real set
        loaded = LoadedLora(name, adapter, entry.sha256, converted.kind, converted.format, tuple(notices))
        self.loaded[name] = loaded
        self.notices.extend(notices)
        return loaded

    # -- choosing the active set ----------------------------------------------------------
    def apply(self, refs: tuple[LoraRef, ...] | None) -> tuple[LoraRef, ...]:
        """Make exactly ``refs`` active (None: the defaults); returns them with their sha256."""
        refs = self.defaults if refs is None else tuple(refs)
        loaded = [self.load(ref.name) for ref in refs]
        wanted = tuple((ref.name, float(ref.scale)) for ref in refs)
        if wanted != self._applied:
            self._restore_fused()
            transformer = self.transformer
            if refs:
                transformer.enable_lora()
                transformer.set_adapters([item.adapter for item in loaded], [float(ref.scale) for ref in refs])
                if self.fuse:
                    self._fuse([item.adapter for item in loaded])
            elif self.loaded:
                transformer.disable_lora()
            self._applied = wanted
        self.last = tuple(replace(ref, sha256=item.sha256) for ref, item in zip(refs, loaded))
        return self.last

    def stamp(self, request: Any) -> Any:
        """The request as generated: its LoRAs (the defaults when it named none) with their sha256."""
        return replace(request, loras=self.last)

    def unload(self, name: str) -> None:
        """Remove one LoRA; with the last one gone, the transformer's modules are the original ones."""
        item = self.loaded.pop(name, None)
        if item is None:
            raise InvalidRequest(f"no LoRA named {name!r} is loaded")
        self._restore_fused()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            self.transformer.delete_adapters([item.adapter])
        if not self.loaded:
            self.transformer.unload_lora()
        self._applied = None

    def unload_all(self) -> None:
        for name in list(self.loaded):
            self.unload(name)

    def describe(self) -> list[dict[str, Any]]:
        return [{"name": item.name, "kind": item.kind, "format": item.format, "sha256": item.sha256}
                for item in self.loaded.values()]

    # -- fusing ----------------------------------------------------------------------------
    def _quant_method(self) -> str | None:
        quantizer = getattr(self.transformer, "hf_quantizer", None)
        method = getattr(getattr(quantizer, "quantization_config", None), "quant_method", None)
        return getattr(method, "value", method)

    def can_fuse(self) -> bool:
        """Only plain float weights: 4-bit and GGUF weights would be re-quantized by a merge."""
        return getattr(self.transformer, "hf_quantizer", None) is None and not getattr(
            self.transformer, "is_quantized", False)

    def _fuse(self, adapters: list[str]) -> None:
        from peft.tuners.tuners_utils import BaseTunerLayer

        if not self.can_fuse():
            message = "the LoRAs stay unfused: this model's weights are quantized (fusing would re-quantize them)"
            if message not in self.notices:
                self.notices.append(message)
            return
        backup = {}
        for name, module in self.transformer.named_modules():
            if isinstance(module, BaseTunerLayer) and any(a in getattr(module, "lora_A", {}) or
                                                          a in getattr(module, "lokr_w1", {}) or
                                                          a in getattr(module, "lokr_w1_a", {}) for a in adapters):
                backup[name] = module.get_base_layer().weight.detach().clone()
        self._backup = backup
        self.transformer.fuse_lora(adapter_names=adapters)

    def _restore_fused(self) -> None:
        if self._backup is None:
            return
        import torch

        modules = dict(self.transformer.named_modules())
        self.transformer.unfuse_lora()  # resets PEFT's merged flags; the weights come from the copy
        with torch.no_grad():
            for name, weight in self._backup.items():
                modules[name].get_base_layer().weight.copy_(weight)
        self._backup = None
        self._applied = None
