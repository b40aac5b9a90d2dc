"""The causal LM: top-1 agreement with the teacher and held-out perplexity; width pruning by heads/FFN."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from talkserve.compress import distill as D
from talkserve.compress.data import DataSource
from talkserve.compress.prune import importance_for, prune_llm, schedule
from talkserve.compress.tasks.base import Task, no_grad, session
from talkserve.export import export_llm_decoder
from talkserve.spec import KVLayout


def onnx_layout(path: Path) -> KVLayout:
    """The cache layout of an exported decoder (a pruned student has fewer KV heads than its config says)."""
    s = session(path)
    past = [i for i in s.get_inputs() if i.name.startswith("past_key_values")]
    logits = next(o for o in s.get_outputs() if o.name == "logits")
    return KVLayout(len(past) // 2, int(past[0].shape[1]), int(past[0].shape[3]), int(logits.shape[2]))


# Prompts the teacher answers for distillation, written for this (never the QA set's questions:
# tests/unit/test_qa.py). With the starter corpus's questions they cover both kinds of talk.
WRITTEN_PROMPTS = (
    "Tell me something interesting.", "How are you today?", "What can you help me with?",
    "What should I cook for dinner tonight?", "Give me a tip for sleeping better.", "What is a good hobby to start?",
    "How do I stay focused while working?", "Can you recommend a book?", "What makes a good friend?",
    "How do I make a cup of tea?", "Why do people like music?", "What is your favourite season and why?",
    "How can I learn a new language?", "What is machine learning?", "Explain what a neural network is.",
    "What is the internet?", "How does a computer store information?", "What is a good way to relax after work?",
    "Tell me about the ocean.", "What do you think about rainy days?", "How do airplanes stay in the air?",
    "Why is exercise good for you?", "How do I write a polite email?", "What is a healthy breakfast?",
    "Describe a beautiful place.", "How do I save money?", "What is the weather like in spring?",
    "Tell me a fun fact about animals.", "What is photosynthesis?", "How do vaccines work?",
    "What is a black hole?", "Why do leaves change colour in autumn?", "How do I plant a tree?",
    "Give me advice for a job interview.", "What is the best way to learn to code?", "How do batteries work?",
    "Tell me a short story about a robot.", "What is kindness?", "How do I calm down when I am stressed?",
    "What is a good name for a cat?", "What do you like to talk about?", "Can you tell me a riddle?",
    "Why do we dream?", "How does the heart work?", "What is democracy?", "What is the meaning of friendship?",
    "How do I make my home more comfortable?", "What is a smartphone?", "How are rainbows made?",
    "What should I pack for a beach trip?", "Why do cats purr?", "What is electricity?",
    "How do I take care of a houseplant?", "What is a good way to start the day?", "Who are you?",
    "What is your name?", "Thank you for your help.", "Goodbye!", "Can you speak more slowly?",
    "I feel tired today.", "I just got a new puppy!", "What is a GPU used for in games?",
)


def distill_prompts() -> list[str]:
    """The prompts the teacher's replies are distilled from: the starter corpus's questions and ours."""
    from talkserve.models.corpus import DIALOGUES

    return list(dict.fromkeys([*(qs[0] for qs, _ in DIALOGUES), *WRITTEN_PROMPTS]))


@torch.no_grad()
def teacher_replies(teacher: nn.Module, tokenizer, prompts: list[str], max_new_tokens: int = 48,
                    batch: int = 16) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, the teacher's greedy reply ids ending in eos where it ended) per prompt, batched
    with left padding. The student learns the teacher's own answers (CE) beside its distribution (KL)."""
    from talkserve.runtime.generate import prompt_ids

    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    out = []
    for i in range(0, len(prompts), batch):
        encoded = [prompt_ids(tokenizer, p) for p in prompts[i:i + batch]]
        width = max(map(len, encoded))
        ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded])
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
        gen = teacher.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                               eos_token_id=eos, pad_token_id=pad)[:, width:].tolist()
        for e, g in zip(encoded, gen, strict=True):
            reply = g[: g.index(eos) + 1] if eos in g else g
            out.append((e, reply))
    return out


def corpus_replies(tokenizer) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, reply ids + eos) of the starter corpus's pairs, question variants included."""
    from talkserve.models.corpus import pairs
    from talkserve.runtime.generate import prompt_ids

    return [(prompt_ids(tokenizer, q), [*tokenizer.encode(a, add_special_tokens=False), tokenizer.eos_token_id])
            for q, a in dict.fromkeys(pairs())]


class LLMTask(Task):
    name = "llm"

    def __init__(self, teacher: nn.Module, tokenizer, data: DataSource, seed: int = 0, held_out: int = 12,
                 corpus: bool = False):
        """`corpus`: the teacher is the starter, trained on our corpus: distil on that (its own training
        distribution); a published model's data we do not have, so it is distilled on its replies to ours."""
        super().__init__(data, seed)
        self.teacher, self.tok = teacher.eval(), tokenizer
        pairs = corpus_replies(tokenizer) if corpus else teacher_replies(teacher, tokenizer, distill_prompts())
        seqs = [(np.asarray([prompt + reply], np.int64), len(prompt)) for prompt, reply in pairs if reply]
        random.Random(seed).shuffle(seqs)
        self.train, self._held = seqs[:-held_out], seqs[-held_out:]
        self.base_config = teacher.config

    def held_out(self):
        return self._held

    def example_inputs(self):
        return (torch.from_numpy(self._held[0][0]),)

    def torch_runner(self, model):
        return no_grad(lambda x: model(torch.from_numpy(x[0])).logits.numpy()[0])

    def onnx_runner(self, path):
        s, layout = session(path), onnx_layout(path)
        return lambda x: s.run(["logits"], layout.feeds(x[0]))[0][0]

    def metrics(self, outs, refs):
        agree, nll_s, nll_t = [], [], []
        for logits, ref, (ids, start) in zip(outs, refs, self._held, strict=True):
            targets = ids[0, start:]
            s, t = logits[start - 1:-1], ref[start - 1:-1]
            agree.append(np.argmax(s, -1) == np.argmax(t, -1))
            nll_s.append(nll(s, targets))
            nll_t.append(nll(t, targets))
        ppl_s, ppl_t = float(np.exp(np.concatenate(nll_s).mean())), float(np.exp(np.concatenate(nll_t).mean()))
        return {"top1_agreement": float(np.concatenate(agree).mean()), "perplexity": ppl_s,
                "teacher_perplexity": ppl_t, "perplexity_increase": (ppl_s - ppl_t) / ppl_t,
                "error": 1 - float(np.concatenate(agree).mean())}

    def prune(self, student, cfg):
        if cfg.ignored_layers:
            raise ValueError("llm: ignored_layers is not supported (a Hugging Face config keeps layers uniform)")
        importance = importance_for(cfg)
        for ratio in schedule(cfg.ratio, cfg.step):
            # comes back as a new, smaller model (conv nets shrink in place)
            student = prune_llm(student, ratio, original=self.base_config, final_ratio=cfg.ratio,
                                importance=importance)
            yield ratio, student

    def batch(self, step, size):
        chosen = [self.rng.choice(self.train) for _ in range(size)]
        width = max(ids.shape[1] for ids, _ in chosen)
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        ids = torch.full((size, width), pad, dtype=torch.long)
        labels = torch.full((size, width), -100, dtype=torch.long)
        mask = torch.zeros((size, width), dtype=torch.long)
        for i, (seq, start) in enumerate(chosen):
            n = seq.shape[1]
            ids[i, :n], mask[i, :n] = torch.from_numpy(seq[0]), 1
            labels[i, start:n] = torch.from_numpy(seq[0, start:])
        with torch.no_grad():
            teacher = self.teacher(ids, attention_mask=mask).logits
        return ids, mask, labels, teacher

    def loss(self, student, batch):
        ids, mask, labels, teacher = batch
        logits = student(ids, attention_mask=mask).logits[:, :-1]
        cfg = self.distill_cfg
        return D.kd_logits(logits, teacher[:, :-1], labels[:, 1:], cfg.temperature, cfg.alpha)

    def export(self, model, path):
        export_llm_decoder(model, path)

    def calibration_feeds(self, fp32):
        """Real decoding steps (prefill, then one token at a time with its KV cache) from the FP32 decoder."""
        layout = onnx_layout(fp32)
        s, feeds = session(fp32), []
        for ids, start in self.train[:6]:
            past, new, total = None, ids[:, :start], 0
            for _ in range(6):
                feed = layout.feeds(new, past, total)
                feeds.append(feed)
                out = dict(zip([o.name for o in s.get_outputs()], s.run(None, feed), strict=True))
                total += new.shape[1]
                new = np.asarray([[int(np.argmax(out["logits"][0, -1]))]], np.int64)
                past = {p: out[q] for p, q in zip(layout.past_names(), layout.present_names(), strict=True)}
        return feeds

    def latency_feed(self, path):
        layout, past = onnx_layout(path), 48
        rng = np.random.default_rng(0)
        cache = {n: rng.standard_normal((1, layout.num_kv_heads, past, layout.head_dim)).astype(np.float32)
                 for n in layout.past_names()}
        return layout.feeds(np.asarray([[5]], np.int64), cache, past)


def nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return -logp[np.arange(len(targets)), targets]
