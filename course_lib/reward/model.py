"""Reward models: a text encoder with a scalar head on top.

A reward model reads a (prompt, response) pair and returns one number, the reward.
Here it is ``head(pool(encoder(text)))``:

- **Text.** Prompt and response are joined the way the tokenizer joins a sentence
  pair; for BERT-like encoders (the default MiniLM) that is
  ``[CLS] prompt [SEP] response [SEP]``, all in segment 0 as MiniLM was trained.
  Texts longer than ``max_length`` tokens lose the *start of the prompt* first (the
  part farthest from the response); only a response that alone is too long is cut
  at its end. See :func:`~course_lib.reward.backbone.encode_pairs`. A *pair tokenizer*
  (any object with ``pair_ids(prompt, response, max_length)`` and ``pad_token_id``)
  joins them its own way: the course policy's ``prompt <|answer|> response
  <|endoftext|>`` (:class:`course_lib.policy.tokenizer.PairTokenizer`).
- **Pooling.** ``"mean"``: the average of the last hidden states over real tokens,
  as all-MiniLM-L6-v2 was trained (Reimers & Gurevych 2019, Sentence-BERT; we skip
  its final L2 normalization). ``"pooler"``: the backbone's pooler output (the
  ``[CLS]`` state through a dense layer and tanh), which is what
  ``AutoModelForSequenceClassification`` uses for BERT, so a course model can be
  compared with TRL's ``RewardTrainer`` one to one. ``"last"``: the hidden state of the
  last real token, for causal (GPT-like) backbones, where it is the only position that
  has read the whole pair; with the policy's tokenizer that is the ``<|endoftext|>``
  closing the response. InstructGPT's reward model (Ouyang et al. 2022) is the SFT
  model with its unembedding replaced by this scalar head
  (:func:`course_lib.studies.policy_reward.policy_reward_model`).
- **Head.** A linear layer, or a small MLP (``head_hidden_size``) flexible enough to
  memorize noisy labels (Chapter 03), with optional input dropout.

Three training modes (``RewardModelConfig.mode``):

- ``"frozen"``: the encoder is fixed; features are computed once per unique text,
  cached in memory (and optionally on disk) and only the head trains. Thousands of
  pairs train for several epochs in seconds on a CPU.
- ``"lora"``: low-rank adapters (Hu et al. 2021, "LoRA") on the encoder's
  ``lora_target_modules`` (BERT: ``query/key/value/dense``; GPT-2:
  ``c_attn/c_proj/c_fc``) through ``peft``, trained with the head.
- ``"full"``: every parameter trains.

Like TRL's ``RewardTrainer`` (``disable_dropout=True``), the encoder's own dropout is
switched off; only the head's dropout (if any) is active in training.

Defined in Chapter 02.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..engine.progress import tqdm
from ..engine.files import atomic_directory, atomic_torch_save
from .backbone import default_backbone_path, encode_pairs, load_backbone, pad_batch

__all__ = ["MODES", "POOLINGS", "IN_MEMORY_BACKBONE", "RewardHead", "RewardModel", "RewardModelConfig",
           "default_backbone_path", "encode_pairs", "frozen_model_with_new_head", "load_backbone",
           "load_reward_model", "pad_batch", "reward_model_reward", "save_reward_model", "score",
           "trainable_state_dict"]

MODES = ("frozen", "lora", "full")
POOLINGS = ("mean", "pooler", "last")
CONFIG_FILE = "reward_model.json"
WEIGHTS_FILE = "reward_model.safetensors"
# The backbone name of an encoder passed in as an object, not loaded from a folder (the course
# policy's transformer): "in-memory:<source>:<fingerprint>". Nothing can reload it by that name.
IN_MEMORY_BACKBONE = "in-memory:"


@dataclass
class RewardModelConfig:
    """Everything needed to rebuild a reward model (saved with it).

    ``backbone``: model name or folder, ``None`` for the bundled MiniLM, or an
    ``"in-memory:..."`` name for an encoder passed in as an object (its feature-cache
    and checkpoint identity; :data:`IN_MEMORY_BACKBONE`). ``mode``:
    ``"frozen"``, ``"lora"`` or ``"full"``. ``head_hidden_size``: ``None`` for a
    linear head, else the width of a one-hidden-layer ReLU MLP. ``seed`` fixes the
    head's (and LoRA's) initial weights. ``lora_layers``: indices of the encoder
    layers that get adapters (peft's ``layers_to_transform``; ``None``: all). Adapting
    only the top layers stops the backward pass there, which is what makes two
    separately trained encoders affordable on a CPU (the reproduction's LoRA variant).

    Defined in Chapter 02.
    """

    backbone: str | None = None
    mode: str = "frozen"
    pooling: str = "mean"
    head_hidden_size: int | None = None
    head_dropout: float = 0.0
    max_length: int = 256
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_target_modules: list[str] = field(default_factory=lambda: ["query", "key", "value", "dense"])
    lora_layers: list[int] | None = None
    seed: int = 0

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"RewardModelConfig: mode must be one of {MODES}, got {self.mode!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"RewardModelConfig: pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if not 0.0 <= self.head_dropout < 1.0:
            raise ValueError(f"RewardModelConfig: head_dropout must be in [0, 1), got {self.head_dropout}")


class RewardHead(nn.Module):
    """Scalar head: dropout on the features, then a linear layer or a one-hidden-layer MLP.

    Defined in Chapter 02 (the MLP is Chapter 03's flexible reward model).
    """

    def __init__(self, in_features: int, hidden_size: int | None = None, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.hidden = None if hidden_size is None else nn.Linear(in_features, hidden_size)
        self.out = nn.Linear(in_features if hidden_size is None else hidden_size, 1)

    @property
    def is_linear(self) -> bool:
        return self.hidden is None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.dropout(features)
        if self.hidden is not None:
            x = torch.relu(self.hidden(x))
        return self.out(x).squeeze(-1)


class RewardModel(nn.Module):
    """Encoder + pooling + scalar head; ``forward`` returns one reward per sequence.

    ``forward(input_ids=..., attention_mask=...)`` runs the encoder (in ``chunks``
    length-sorted groups, see :meth:`pool`); ``forward(features=...)`` runs only the
    head on pooled features (frozen mode). With ``return_features=True`` it returns
    ``(rewards, features)``.

    Defined in Chapter 02.
    """

    def __init__(self, config: RewardModelConfig | None = None, encoder=None, tokenizer=None):
        super().__init__()
        self.config = config or RewardModelConfig()
        if encoder is None or tokenizer is None:
            if (self.config.backbone or "").startswith(IN_MEMORY_BACKBONE):
                raise ValueError(f"RewardModel: backbone {self.config.backbone!r} was an encoder passed in as an "
                                 "object, with no folder to load it from; pass encoder= and tokenizer= (a saved reward "
                                 "model on the course policy: course_lib.studies.policy_reward.load_policy_reward_model)")
            encoder, tokenizer = load_backbone(self.config.backbone)
        for module in encoder.modules():
            if isinstance(module, nn.Dropout):
                module.p = 0.0
        if self.config.pooling != "pooler" and getattr(encoder, "pooler", None) is not None:
            encoder.pooler = None  # unused: no compute, no untrained parameters
        if self.config.pooling == "pooler" and getattr(encoder, "pooler", None) is None:
            raise ValueError("RewardModel: pooling='pooler' needs an encoder with a pooler layer (BERT-like)")
        self.tokenizer = tokenizer
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            self.head = RewardHead(encoder.config.hidden_size, self.config.head_hidden_size, self.config.head_dropout)
            self.encoder = self._prepare_encoder(encoder)
        self._feature_cache: dict[str, torch.Tensor] = {}
        self._cache_files_read: set[Path] = set()

    def train(self, mode: bool = True):
        """Set training mode; a frozen encoder stays in eval mode (it has no dropout and no gradient).

        Skipping the encoder's hundreds of submodules matters: the training loop
        switches modes on every step, and for a head on cached features that walk
        cost more than the step itself.
        """
        if self.config.mode != "frozen":
            return super().train(mode)
        self.training = mode
        self.head.train(mode)
        return self

    def _prepare_encoder(self, encoder):
        mode = self.config.mode
        if mode == "frozen":
            encoder.requires_grad_(False)
            return encoder
        if mode == "full":  # an encoder passed in may come frozen (a copy of a frozen model's)
            return encoder.requires_grad_(True)
        if mode == "lora":
            from peft import LoraConfig, get_peft_model

            lora = LoraConfig(
                r=self.config.lora_rank,
                lora_alpha=self.config.lora_alpha,
                lora_dropout=self.config.lora_dropout,
                target_modules=list(self.config.lora_target_modules),
                layers_to_transform=None if self.config.lora_layers is None else list(self.config.lora_layers),
            )
            with warnings.catch_warnings():  # peft calls a transformers property deprecated in v5
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
                warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")  # GPT-2's Conv1D: peft sets it
                return get_peft_model(encoder, lora)
        return encoder

    @property
    def device(self) -> torch.device:
        return self.head.out.weight.device

    def pool(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, chunks: int = 1) -> torch.Tensor:
        """Pooled encoder representation of right-padded sequences, shape ``(batch, hidden)``.

        With ``chunks > 1`` the sequences are sorted by length and encoded in that many
        groups, each padded only to its own longest sequence: the same result with
        less padding.
        """
        if chunks > 1:
            lengths = attention_mask.sum(1)
            order = torch.argsort(lengths)
            pooled = []
            for rows in order.chunk(chunks):
                longest = int(lengths[rows].max())
                pooled.append(self.pool(input_ids[rows, :longest], attention_mask[rows, :longest]))
            return torch.cat(pooled)[torch.argsort(order)]
        output = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        if self.config.pooling == "pooler":
            return output.pooler_output
        if self.config.pooling == "last":  # right padding: the last real token is at length - 1
            last = attention_mask.sum(1) - 1
            return output.last_hidden_state[torch.arange(len(last), device=last.device), last]
        mask = attention_mask.unsqueeze(-1).to(output.last_hidden_state.dtype)
        return (output.last_hidden_state * mask).sum(1) / mask.sum(1).clamp_min(1.0)

    def forward(self, input_ids=None, attention_mask=None, features=None, return_features=False, chunks=1):
        if features is None:
            features = self.pool(input_ids, attention_mask, chunks)
        rewards = self.head(features)
        return (rewards, features) if return_features else rewards

    def tokenize(self, prompts: list[str], responses: list[str]) -> list[list[int]]:
        """Token ids of the pairs: the pair tokenizer's ``pair_ids``, else :func:`encode_pairs`."""
        if hasattr(self.tokenizer, "pair_ids"):
            return [self.tokenizer.pair_ids(p, r, self.config.max_length) for p, r in zip(prompts, responses)]
        return encode_pairs(self.tokenizer, prompts, responses, self.config.max_length)

    def feature_key(self, prompt: str, response: str) -> str:
        """Cache key of one pair's features: a hash of the encoder setup and the text."""
        setup = f"{self.config.backbone or default_backbone_path()}|{self.config.pooling}|{self.config.max_length}"
        return hashlib.sha256(f"{setup}\x00{prompt}\x00{response}".encode()).hexdigest()

    @torch.no_grad()
    def embed(self, prompts, responses, batch_size: int = 64, cache_dir=None, progress: bool = True) -> torch.Tensor:
        """Pooled features of each (prompt, response), shape ``(n, hidden)``, on the model's device.

        Each unique text is encoded once, in length-sorted batches. In frozen mode
        features are cached in memory and, with ``cache_dir``, in one file per
        encoder setup there (written atomically), so later runs skip the encoder.

        Defined in Chapter 02.
        """
        keys = [self.feature_key(p, r) for p, r in zip(prompts, responses)]
        cacheable = self.config.mode == "frozen"
        cache = self._feature_cache if cacheable else {}
        cache_file = None
        if cacheable and cache_dir is not None:
            cache_file = Path(cache_dir) / f"features-{self.feature_key('', '')[:16]}.pt"
            if cache_file not in self._cache_files_read and cache_file.exists():  # read once per model
                cache.update(torch.load(cache_file, weights_only=True))
            self._cache_files_read.add(cache_file)
        missing = {key: (p, r) for key, p, r in zip(keys, prompts, responses) if key not in cache}
        if missing:
            missing_keys = list(missing)
            ids = self.tokenize([missing[k][0] for k in missing_keys], [missing[k][1] for k in missing_keys])
            order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
            was_training = self.training
            self.eval()
            for start in tqdm(range(0, len(order), batch_size), desc="embedding", disable=not progress):
                rows = order[start : start + batch_size]
                input_ids, attention_mask = pad_batch([ids[i] for i in rows], self.tokenizer.pad_token_id, self.device)
                features = self.pool(input_ids, attention_mask).float().cpu()
                cache.update({missing_keys[i]: f for i, f in zip(rows, features)})
            self.train(was_training)
            if cache_file is not None:
                atomic_torch_save(dict(cache), cache_file)
        return torch.stack([cache[key] for key in keys]).to(self.device)


def frozen_model_with_new_head(base: RewardModel, head_hidden_size: int | None = None, head_dropout: float = 0.0,
                               seed: int = 0) -> RewardModel:
    """A new frozen reward model that shares ``base``'s encoder, tokenizer and feature cache.

    Only the head is new, so comparing many heads on the same texts (different
    labels, noise rates, seeds, methods) encodes every text once. Used from
    Chapter 02 on.

    Defined in Chapter 02.
    """
    if base.config.mode != "frozen":
        raise ValueError(f"frozen_model_with_new_head: base model must be in frozen mode, got {base.config.mode!r}")
    config = replace(base.config, head_hidden_size=head_hidden_size, head_dropout=head_dropout, seed=seed)
    model = RewardModel(config, encoder=base.encoder, tokenizer=base.tokenizer).to(base.device)
    model._feature_cache = base._feature_cache
    model._cache_files_read = base._cache_files_read
    return model


@torch.no_grad()
def score(model: RewardModel, prompts, responses, batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """Rewards of the (prompt, response) pairs as a float32 array of shape ``(n,)``.

    Runs in eval mode (no dropout). Frozen models reuse cached features.

    Defined in Chapter 02.
    """
    prompts, responses = list(prompts), list(responses)
    if len(prompts) != len(responses):
        raise ValueError(f"score: {len(prompts)} prompts but {len(responses)} responses")
    if not prompts:
        return np.zeros(0, dtype=np.float32)
    was_training = model.training
    model.eval()
    with torch.no_grad():  # scoring builds no autograd graph
        if model.config.mode == "frozen":
            rewards = model(features=model.embed(prompts, responses, batch_size, progress=progress))
        else:
            ids = model.tokenize(prompts, responses)
            order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
            rewards = torch.empty(len(ids), device=model.device)
            for start in tqdm(range(0, len(order), batch_size), desc="scoring", disable=not progress):
                rows = order[start : start + batch_size]
                input_ids, attention_mask = pad_batch([ids[i] for i in rows], model.tokenizer.pad_token_id, model.device)
                rewards[torch.tensor(rows, device=model.device)] = model(input_ids, attention_mask).float()
    model.train(was_training)
    return rewards.float().cpu().numpy()


def trainable_state_dict(model: RewardModel) -> dict[str, torch.Tensor]:
    """The parameters that training changes (head, plus LoRA adapters or the whole encoder)."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def save_reward_model(model: RewardModel, path) -> Path:
    """Write the config and the trainable weights to folder ``path``, atomically.

    The folder holds ``reward_model.json`` and ``reward_model.safetensors`` (head,
    plus LoRA adapters or the full encoder); a frozen backbone is not copied, it is
    reloaded from ``config.backbone``. The folder is built beside ``path`` and
    renamed into place, so a crash never leaves a half-written model.

    Defined in Chapter 02.
    """
    if (model.config.backbone or "").startswith(IN_MEMORY_BACKBONE):
        raise ValueError(f"save_reward_model: backbone {model.config.backbone!r} has no folder to reload it from; "
                         "save a reward model on the course policy with course_lib.studies.policy_reward")
    path = Path(path)
    with atomic_directory(path) as staging:
        (staging / CONFIG_FILE).write_text(json.dumps(asdict(model.config), indent=2))
        save_file({k: v.contiguous().cpu() for k, v in trainable_state_dict(model).items()}, staging / WEIGHTS_FILE)
    return path


def load_reward_model(path, device=None) -> RewardModel:
    """Rebuild a model written by :func:`save_reward_model`.

    Defined in Chapter 02.
    """
    path = Path(path)
    if not (path / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"load_reward_model: {path} has no {CONFIG_FILE}; was it written by save_reward_model?")
    model = RewardModel(RewardModelConfig(**json.loads((path / CONFIG_FILE).read_text())))
    weights = load_file(path / WEIGHTS_FILE)
    expected = set(trainable_state_dict(model))
    if set(weights) != expected:
        raise ValueError(
            f"load_reward_model: {path} does not match its config: "
            f"missing {sorted(expected - set(weights))[:5]}, unexpected {sorted(set(weights) - expected)[:5]}"
        )
    model.load_state_dict(weights, strict=False)
    return model.to(device) if device is not None else model


def reward_model_reward(models, batch_size: int = 64):
    """A reward function from one reward model or several (their mean score).

    ``reward(prompts, responses) -> np.ndarray`` (one float per answer) is the interface
    the policy trainers take (:mod:`course_lib.policy.rewards`). The models are
    :class:`RewardModel`; frozen ones keep the features of every text they score, so
    scoring the same answers again (several models, monitoring) encodes each text once.

    Defined in Chapter 08.
    """
    models = list(models) if isinstance(models, (list, tuple)) else [models]
    if not models:
        raise ValueError("reward_model_reward: give at least one reward model")

    def reward(prompts, responses) -> np.ndarray:
        prompts, responses = list(prompts), list(responses)
        return np.mean([score(model, prompts, responses, batch_size) for model in models], axis=0).astype(np.float64)

    return reward
