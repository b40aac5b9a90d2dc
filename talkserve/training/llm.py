"""Train the starter LLM: a tiny Llama (GQA) on the built-in dialogue corpus.

No PyPI package ships a small LLM, so the starter is ours, reproducible with this script:

    talkserve train-llm --out talkserve/assets/starter_llm

Writes a normal Hugging Face directory (config.json, model.safetensors, tokenizer.json, ...)
that `transformers.AutoModelForCausalLM.from_pretrained` loads as is. A few minutes on 2 cores.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from pydantic import BaseModel, Field
from tqdm import tqdm

from talkserve.models.corpus import conversations, pairs

BOS, EOS, PAD, USER, ASSISTANT = "<|bos|>", "<|eos|>", "<|pad|>", "<|user|>", "<|assistant|>"
# Jinja template in the Hugging Face convention, so serving code calls apply_chat_template for
# our starter and for a real Llama/Qwen directory alike.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}<|user|>{{ m['content'] }}"
    "{% elif m['role'] == 'assistant' %}<|assistant|>{{ m['content'] }}{{ eos_token }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


class TrainConfig(BaseModel):
    """Starter LLM shape and training schedule; saved beside the weights."""

    vocab_size: int = Field(768, description="BPE vocabulary size, special tokens included")
    hidden_size: int = Field(192, description="Model width")
    intermediate_size: int = Field(512, description="FFN width (SwiGLU)")
    num_hidden_layers: int = Field(4, description="Decoder layers")
    num_attention_heads: int = Field(6, description="Query heads")
    num_key_value_heads: int = Field(2, description="KV heads (GQA: 3 query heads per KV group)")
    max_position_embeddings: int = Field(512, description="Longest context")
    steps: int = Field(1600, description="Optimizer steps")
    batch_size: int = Field(32, description="Sequences per step")
    lr: float = Field(3e-3, description="Peak AdamW learning rate (cosine decay)")
    seed: int = Field(0, description="Seed for data order and init")


def train_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE on the corpus, wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS, USER, ASSISTANT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
        additional_special_tokens=[USER, ASSISTANT],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def encode_dialogues(tokenizer) -> list[list[int]]:
    """Single-turn pairs, then the two-turn conversations whose follow-up needs the first turn."""
    dialogues = [[{"role": "user", "content": q}, {"role": "assistant", "content": r}] for q, r in pairs()]
    dialogues += conversations()
    return [tokenizer.apply_chat_template(m, tokenize=True, return_dict=False) for m in dialogues]


def batch(seqs: list[list[int]], size: int, pad_id: int, rng: random.Random):
    chosen = rng.sample(seqs, min(size, len(seqs)))
    width = max(len(s) for s in chosen)
    ids = torch.full((len(chosen), width), pad_id, dtype=torch.long)  # (B, T)
    for i, s in enumerate(chosen):
        ids[i, : len(s)] = torch.tensor(s)
    labels = ids.masked_fill(ids == pad_id, -100)
    return ids, (ids != pad_id).long(), labels


def train(out: Path, cfg: TrainConfig | None = None) -> Path:
    """Train the starter LLM and save it as a Hugging Face directory at `out`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = cfg or TrainConfig()
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    texts = [q + " " + r for q, r in pairs()] + [" ".join(t["content"] for t in c) for c in conversations()]
    tokenizer = train_tokenizer(texts, cfg.vocab_size)
    seqs = encode_dialogues(tokenizer)
    model_cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads, num_key_value_heads=cfg.num_key_value_heads,
        max_position_embeddings=cfg.max_position_embeddings, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(model_cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps)
    model.train()
    bar = tqdm(range(cfg.steps), desc="train starter LLM")
    for _ in bar:
        ids, mask, labels = batch(seqs, cfg.batch_size, tokenizer.pad_token_id, rng)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "talkserve_train.json").write_text(json.dumps(cfg.model_dump(), indent=2))
    return out
