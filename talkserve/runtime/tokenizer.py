"""A Hugging Face tokenizer directory as the served `llm` uses it, on `tokenizers` and jinja2 alone.

The `llm` stubs only encode prompts through the chat template and decode replies; `transformers`
would bring torch into each stub for that (measured: ~250 MB of RSS per stub). The template is
rendered the way transformers renders it (sandboxed jinja2, trim_blocks/lstrip_blocks, loop controls,
`raise_exception`, `tojson`, `strftime_now`, the special tokens as variables), and the build checks
that both give the same ids (`check_same_as_transformers`).
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import cached_property
from pathlib import Path

from tokenizers import Tokenizer

SPECIAL = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")


class TokenizerError(ValueError):
    pass


def _content(token) -> str | None:
    return token.get("content") if isinstance(token, dict) else token


class ChatTokenizer:
    def __init__(self, directory: str | Path):
        directory = Path(directory)
        if not (directory / "tokenizer.json").is_file():
            raise TokenizerError(f"{directory} has no tokenizer.json (a fast tokenizer is needed to serve the model)")
        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        config_file = directory / "tokenizer_config.json"
        config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
        self.special = {k: v for k in SPECIAL if (v := _content(config.get(k))) is not None}
        template = directory / "chat_template.jinja"
        self.chat_template = template.read_text(encoding="utf-8") if template.is_file() else config.get("chat_template")
        eos = self.special.get("eos_token")
        self.eos_token_id = None if eos is None else self.tokenizer.token_to_id(eos)

    @cached_property
    def _template(self):
        import jinja2
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message):
            raise jinja2.exceptions.TemplateError(message)

        def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
            return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        env.filters["tojson"] = tojson
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        return env.from_string(self.chat_template)

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = False,
                            tokenize: bool = True, return_dict: bool = False):
        """As transformers' method of that name, for the arguments the server passes."""
        if not self.chat_template:
            raise TokenizerError("the tokenizer has no chat template")
        text = self._template.render(messages=messages, add_generation_prompt=add_generation_prompt, **self.special)
        return self.tokenizer.encode(text, add_special_tokens=False).ids if tokenize else text

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)


PROBES = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "Answer cheerfully."}, {"role": "user", "content": "How does this work?"}],
    [{"role": "user", "content": "Tell me a joke."},
     {"role": "assistant", "content": "Why did the GPU cross the road?"},
     {"role": "user", "content": "Why?  Ünïcode — 你好 🙂"}],
]


def check_same_as_transformers(directory: str | Path) -> None:
    """The build's check: prompts and replies tokenise as transformers does for this directory."""
    from transformers import AutoTokenizer

    from talkserve.runtime.generate import prompt_ids

    ours, theirs = ChatTokenizer(directory), AutoTokenizer.from_pretrained(directory)
    for messages in PROBES:
        history, text = messages[:-1], messages[-1]["content"]
        system = history.pop(0)["content"] if history and history[0]["role"] == "system" else ""
        a, b = prompt_ids(ours, text, system, history), prompt_ids(theirs, text, system, history)
        if a != b:
            raise TokenizerError(f"{directory}: the served tokenizer renders {messages!r} as {a}, transformers as {b}")
        if ours.decode(a) != theirs.decode(b, skip_special_tokens=True):
            raise TokenizerError(f"{directory}: the served tokenizer decodes {a} unlike transformers")
    if ours.eos_token_id != theirs.eos_token_id:
        raise TokenizerError(f"{directory}: eos token id {ours.eos_token_id} vs transformers' {theirs.eos_token_id}")
