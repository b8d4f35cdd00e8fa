"""Reward models made of the course's own policy: the SFT model's transformer with a scalar head.

InstructGPT (Ouyang et al. 2022, "Training language models to follow instructions with
human feedback", section 3.5) starts its reward model from the SFT model: the same
transformer, its unembedding layer replaced by a linear head that reads the final
token, trained on comparisons with the Bradley-Terry loss. Here:

    r(x, y) = head( h_L[ prompt <|answer|> response <|endoftext|> ][last] )

where ``h_L`` is the last hidden state of the policy's transformer (a copy, so the
policy is left as it was) and ``[last]`` the position of the ``<|endoftext|>`` token
that closes the response (pooling ``"last"`` of :class:`~course_lib.reward.model.RewardModel`).
The text is framed exactly as the policy reads it (:class:`~course_lib.policy.tokenizer.PairTokenizer`),
so the model scores world pairs and the policy's own samples alike.

The result is an ordinary :class:`~course_lib.reward.model.RewardModel` (``mode="full"``
by default: every weight trains), so everything that takes one takes it: the
Bradley-Terry trainer, :func:`~course_lib.reward.model.score`, ``reward_model_reward``
and the two-model methods of :func:`course_lib.studies.reproduction.train_method`. Two
reward models built from two SFT policies of different seeds share no weight: two
minds that can make different mistakes, which two heads on one frozen encoder cannot.

Defined in Chapter 04.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, replace
from pathlib import Path

from safetensors.torch import load_file, save_file

from ..engine.files import atomic_directory
from ..engine.runtime import fingerprint, resolve_device
from ..policy.model import PolicyConfig, build_policy
from ..policy.tokenizer import PairTokenizer, PolicyTokenizer
from ..reward.model import CONFIG_FILE, IN_MEMORY_BACKBONE, WEIGHTS_FILE, RewardModel, RewardModelConfig

# GPT-2's linear layers (transformers' Conv1D): the attention's query-key-value and output
# projections, and the MLP's two layers (c_proj names both output projections).
GPT2_LORA_TARGETS = ["c_attn", "c_proj", "c_fc"]
POLICY_POOLINGS = ("last", "mean")
POLICY_FILE = "policy_config.json"


def policy_backbone_name(encoder, tokenizer: PolicyTokenizer) -> str:
    """The backbone name of a policy transformer: ``in-memory:course-policy:<fingerprint>``.

    The fingerprint covers the weights and the vocabulary, so two policies (another
    seed, more SFT) get two names: two feature caches and two checkpoint identities.
    """
    state = encoder.state_dict()
    weights = fingerprint(*(state[name] for name in sorted(state)), tokenizer.tokenizer.to_str())
    return f"{IN_MEMORY_BACKBONE}course-policy:{weights}"


def policy_reward_model(policy, tokenizer: PolicyTokenizer, config: RewardModelConfig | None = None,
                        **fields) -> RewardModel:
    """A reward model whose encoder is a copy of ``policy``'s transformer, read at its last token.

    ``policy``: a ``GPT2LMHeadModel`` from :func:`course_lib.policy.build_policy` (usually
    SFT-trained), or its ``GPT2Model`` transformer. ``config``: the reward model's
    settings; ``None`` gives ``mode="full"``, ``pooling="last"``, a linear head,
    ``max_length`` = the policy's context and GPT-2's LoRA targets. ``fields`` replace
    fields of it (``seed=1``, ``mode="frozen"``, ``head_hidden_size=64``, ...).
    ``backbone`` is always set to the policy's name (:func:`policy_backbone_name`).

    The transformer is deep-copied: the policy keeps its weights, and reward models
    built from one policy train apart. Its key-value cache is switched off (scoring
    never generates) and its dropout, as for every reward model, too.

    Defined in Chapter 04.
    """
    if not isinstance(tokenizer, PolicyTokenizer):
        raise ValueError(f"policy_reward_model: tokenizer must be the policy's PolicyTokenizer, got "
                         f"{type(tokenizer).__name__}")
    encoder = copy.deepcopy(getattr(policy, "transformer", policy))
    context = encoder.config.n_positions
    if config is None:
        config = RewardModelConfig(mode="full", pooling="last", max_length=context,
                                   lora_target_modules=list(GPT2_LORA_TARGETS))
    config = replace(config, **fields, backbone=policy_backbone_name(encoder, tokenizer))
    if config.pooling not in POLICY_POOLINGS:
        raise ValueError(f"policy_reward_model: pooling must be one of {POLICY_POOLINGS} for the policy's "
                         f"transformer, got {config.pooling!r}")
    if not 3 <= config.max_length <= context:
        raise ValueError(f"policy_reward_model: max_length must be in [3, {context}] (the policy's context), "
                         f"got {config.max_length}")
    if config.mode == "lora":
        names = {name.rsplit(".", 1)[-1] for name, _ in encoder.named_modules()}
        unknown = sorted(set(config.lora_target_modules) - names)
        if unknown:
            raise ValueError(f"policy_reward_model: LoRA target module(s) {unknown} are not in the policy's "
                             f"transformer; GPT-2's are {GPT2_LORA_TARGETS}")
    encoder.config.use_cache = False
    device = next(encoder.parameters()).device
    return RewardModel(config, encoder=encoder, tokenizer=PairTokenizer(tokenizer)).to(device)


def _policy_shape(encoder) -> PolicyConfig:
    gpt2 = encoder.config
    return PolicyConfig(n_layer=gpt2.n_layer, n_embd=gpt2.n_embd, n_head=gpt2.n_head, n_positions=gpt2.n_positions,
                        dropout=gpt2.resid_pdrop)


def save_policy_reward_model(model: RewardModel, path) -> Path:
    """Write a reward model built by :func:`policy_reward_model` to folder ``path``, atomically.

    Unlike :func:`~course_lib.reward.model.save_reward_model`, which stores only what
    training changed and reloads the rest from a backbone folder, this stores every
    weight (the policy's transformer has no folder to reload from), the transformer's
    shape and the policy's tokenizer. LoRA models are not supported: merge or retrain
    them as ``mode="full"``.

    Defined in Chapter 04.
    """
    if not (model.config.backbone or "").startswith(f"{IN_MEMORY_BACKBONE}course-policy:"):
        raise ValueError(f"save_policy_reward_model: this reward model's backbone is {model.config.backbone!r}, not "
                         "the course policy; save it with course_lib.reward.model.save_reward_model")
    if model.config.mode == "lora":
        raise ValueError("save_policy_reward_model: LoRA reward models on the policy cannot be saved; "
                         "train them with mode='full' (or 'frozen')")
    path = Path(path)
    with atomic_directory(path) as staging:
        (staging / CONFIG_FILE).write_text(json.dumps(asdict(model.config), indent=2))
        (staging / POLICY_FILE).write_text(json.dumps(asdict(_policy_shape(model.encoder)), indent=2))
        model.tokenizer.tokenizer.save(staging)
        save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, staging / WEIGHTS_FILE)
    return path


def load_policy_reward_model(path, device=None) -> RewardModel:
    """Rebuild a reward model written by :func:`save_policy_reward_model`; the same rewards, bit for bit.

    Defined in Chapter 04.
    """
    path = Path(path)
    if not (path / POLICY_FILE).is_file():
        raise FileNotFoundError(f"load_policy_reward_model: {path} has no {POLICY_FILE}; was it written by "
                                "save_policy_reward_model?")
    tokenizer = PolicyTokenizer.load(path)
    config = RewardModelConfig(**json.loads((path / CONFIG_FILE).read_text()))
    shape = PolicyConfig(**json.loads((path / POLICY_FILE).read_text()))
    encoder = build_policy(shape, tokenizer).transformer
    encoder.config.use_cache = False
    model = RewardModel(config, encoder=encoder, tokenizer=PairTokenizer(tokenizer))
    model.load_state_dict(load_file(path / WEIGHTS_FILE), strict=True)
    return model.to(resolve_device(device)) if device is not None else model
